import pytest

from dicomrt.rt_outputs import OutputMode
from dicomrt.structures import thoracic_template
from model.refine import TemporalSettings
from workers.pipeline import JobOptions


def test_job_options_round_trip_through_json():
    options = JobOptions(template=thoracic_template()[:2], mode=OutputMode.REFERENCE, seg=False, study="abc",
                         temporal=TemporalSettings(min_phases=4))
    again = JobOptions.from_json(options.to_json())
    assert again == options


def test_unknown_job_option_is_refused():
    with pytest.raises(ValueError, match=r"unknown job option\(s\) \['colour'\]"):
        JobOptions.from_json({"colour": "red"})


def test_flags_name_empty_filled_and_removed():
    from workers.pipeline import _flags

    structures = {"GTV": {"phases": ["0%", "50%", "90%"], "volumes_ml": [3.1, 0.0, 2.9],
                          "refinement": {"filled_phases": [2], "removed_temporal": [0, 2, 1],
                                         "removed_extra": [1, 0, 2]}},
                  "Heart": {"phases": ["0%", "50%", "90%"], "volumes_ml": [600.0, 610.0, 605.0],
                            "refinement": {"filled_phases": [], "removed_temporal": [0, 0, 0],
                                           "removed_extra": [3, 0, 0]}}}
    template = (thoracic_template()[0], thoracic_template()[3])
    assert _flags(structures, template) == [
        "GTV: empty in 1 of 3 phase(s) (50%)",
        "GTV: missing in phase(s) 90%, filled by interpolation between neighbouring phases",
        "GTV: 3 component(s) present in too few phases removed",
        "GTV: 3 smaller component(s) in 2 phase(s) removed beyond the template's 1 object(s): check for another "
        "lesion",
    ]


def test_model_text_carries_the_phantom_label_within_a_dicom_lo():
    from workers.pipeline import _model_text

    text = _model_text({"short": "97b36ccc786c", "label": "PHANTOM MODEL: for trying the workflow, NOT for patients"})
    assert text == "itvsam SAM3 97b36ccc786c PHANTOM MODEL"
    assert _model_text({"short": "0123456789ab", "label": None}) == "itvsam SAM3 0123456789ab"
    assert len(_model_text({"short": "0" * 12, "label": "X" * 200})) == 64


def test_thresholds_are_the_jobs_or_the_models_calibrated_ones() -> None:
    options = JobOptions(template=thoracic_template())
    assert options.threshold is None
    assert options.thresholds({"GTV": 0.4, "Heart": 0.6, "Other": 0.3}) == {
        "GTV": 0.4, "Lung_L": 0.5, "Lung_R": 0.5, "Heart": 0.6}
    assert set(JobOptions(threshold=0.55).thresholds({"GTV": 0.4}).values()) == {0.55}
    assert JobOptions.from_json(JobOptions(threshold=0.55).to_json()).threshold == 0.55
    with pytest.raises(ValueError, match="threshold must lie strictly between 0 and 1"):
        JobOptions(threshold=1.0)

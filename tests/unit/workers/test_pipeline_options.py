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

"""The job contract: parsed once, refused by field name, normalised for storage and idempotency."""

from __future__ import annotations

import pytest

from dicomrt.rt_outputs import OutputMode
from dicomrt.structures import TemporalSettings, thoracic_template
from jobs.options import InvalidOptionsError, JobOptions, parse_options


def test_job_options_round_trip_through_json():
    options = JobOptions(template=thoracic_template()[:2], mode=OutputMode.REFERENCE, seg=False, study="abc",
                         temporal=TemporalSettings(min_phases=4), itv_margin_mm=(3.0, 3.0, 5.0))
    again = parse_options(options.to_json())
    assert again == options
    assert again.to_json() == options.to_json()


def test_none_empty_and_spelled_out_defaults_normalise_alike():
    assert parse_options(None).to_json() == parse_options({}).to_json() == JobOptions().to_json()
    assert parse_options({"mode": "all", "seg": True, "temporal": {"max_gap": 1}}).to_json() == JobOptions().to_json()


@pytest.mark.parametrize(("data", "message"), [
    ({"colour": "red"}, r"colour: unknown option; expected some of \['itv_margin_mm', 'mode'"),
    ({"mode": "sideways"}, "mode: Input should be"),
    ({"threshold": 1.0}, "threshold: Input should be less than 1"),
    ({"threshold": 0}, "threshold: Input should be greater than 0"),
    ({"reference_percent": 150}, "reference_percent: Input should be less than or equal to 100"),
    ({"temporal": {"min_phases": 3, "speed": 2}}, r"temporal: unknown field\(s\) \['speed'\]"),
    ({"template": [{"name": "GTV", "prompts": [], "type": "GTV"}]}, "template: structures.0.: GTV: prompts must be"),
    ({"itv_margin_mm": -2}, "itv_margin_mm: must be ≥ 0"),
    ([1, 2], "options must be a JSON object, got list"),
])
def test_bad_options_are_refused_naming_the_field(data, message):
    with pytest.raises(InvalidOptionsError, match=message):
        parse_options(data)


def test_margin_names_follow_the_itv_and_must_fit_sixteen_characters():
    assert JobOptions(itv_margin_mm=5).margin_names() == {"GTV": "ITV+5mm"}
    assert JobOptions(itv_margin_mm=(3, 3, 5)).margin_names() == {"GTV": "ITV+3/3/5mm"}
    assert JobOptions(itv_margin_mm=(2, 2, 2)).margin_names() == {"GTV": "ITV+2mm"}
    assert JobOptions().margin_names() == {} and not JobOptions(itv_margin_mm=(0, 0, 0)).has_margin
    long = [{"name": "GTV_primary1", "prompts": ["tumour"], "type": "GTV", "itv": True}]
    with pytest.raises(InvalidOptionsError, match="'ITV_primary1\\+12.5/12.5/20mm' must be at most 16 characters"):
        parse_options({"template": long, "itv_margin_mm": [12.5, 12.5, 20]})

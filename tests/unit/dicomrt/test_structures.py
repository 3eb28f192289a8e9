"""Structure specs, the default template, fixed colours, and templates loaded from YAML/JSON with clear errors."""

from __future__ import annotations

import json

import pytest

from dicomrt.rt_errors import TemplateError
from dicomrt.structures import (
    COLOURS,
    PALETTE,
    RoiType,
    StructureSpec,
    default_colour,
    load_template,
    template_from_dict,
    thoracic_template,
)


def test_thoracic_template_names_types_and_itv():
    specs = thoracic_template()
    assert [s.name for s in specs] == ["GTV", "Lung_L", "Lung_R", "Heart"]
    assert specs[0].interpreted_type is RoiType.GTV and specs[0].itv
    assert not any(s.itv for s in specs[1:])
    assert specs[0].itv_name == "ITV"
    assert [specs[0].phase_name(p) for p in (0, 50, 12.5)] == ["GTV_T00", "GTV_T50", "GTV_T12.5"]


def test_colours_are_fixed_not_hashed():
    assert default_colour("Heart", 7) == COLOURS["Heart"]
    assert default_colour("Bronchus", 3) == PALETTE[3]
    assert default_colour("Bronchus", 3 + len(PALETTE)) == PALETTE[3]


def test_interpreted_type_accepts_strings_once():
    assert StructureSpec("Heart", ("heart",), (1, 2, 3), "organ").interpreted_type is RoiType.ORGAN


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "Esophagus_Cervical_Upper"}, "at most 16 characters"),
    ({"name": "GTV_Primary_Lung", "itv": True}, "at most 12 characters for a structure with an ITV"),
    ({"name": "1Lung"}, "TG-263 name"),
    ({"name": "Lung L"}, "TG-263 name"),
    ({"prompts": ()}, "prompts must be one or more"),
    ({"colour": (255, 0, 256)}, "colour must be three integers 0-255"),
    ({"colour": (255, 0)}, "colour must be three integers"),
    ({"interpreted_type": "TUMOUR"}, "interpreted_type must be one of"),
    ({"itv": "yes"}, "itv must be true or false"),
])
def test_spec_refuses_bad_fields(kwargs, message):
    fields = {"name": "Heart", "prompts": ("heart",), "colour": (255, 0, 0), "interpreted_type": RoiType.ORGAN}
    with pytest.raises(TemplateError, match=message):
        StructureSpec(**{**fields, **kwargs})


def test_yaml_template_loads_with_default_colours(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("structures:\n"
                    "  - {name: GTV, prompts: [tumour], type: GTV, itv: true}\n"
                    "  - {name: Esophagus, prompts: oesophagus, type: ORGAN, colour: [1, 2, 3]}\n"
                    "  - {name: Bronchus, prompts: [bronchus], type: organ}\n")
    specs = load_template(path)
    assert [s.name for s in specs] == ["GTV", "Esophagus", "Bronchus"]
    assert specs[0].colour == COLOURS["GTV"] and specs[1].colour == (1, 2, 3) and specs[2].colour == PALETTE[2]
    assert specs[1].prompts == ("oesophagus",)


def test_json_template_loads(tmp_path):
    path = tmp_path / "site.json"
    path.write_text(json.dumps([{"name": "Heart", "prompts": ["heart"], "type": "ORGAN"}]))
    assert load_template(path)[0].name == "Heart"


@pytest.mark.parametrize(("data", "message"), [
    ({"structures": [{"name": "Heart", "prompts": ["heart"]}]}, r"structures\[0\]: field 'type'"),
    ({"structures": [{"name": "Heart", "type": "ORGAN"}]}, r"structures\[0\]: field 'prompts' is missing"),
    ({"structures": [{"name": "Heart", "prompts": ["h"], "type": "ORGAN", "colur": [1, 2, 3]}]},
     r"unknown field\(s\) \['colur'\]"),
    ({"structures": [{"name": "Heart", "prompts": ["h"], "type": "ORGAN"},
                     {"name": "heart", "prompts": ["h"], "type": "ORGAN"}]}, "unique"),
    ({"structures": [{"name": "A_Pulmonary_Artery_L", "prompts": ["h"], "type": "ORGAN"}]},
     r"structures\[0\]: name must be at most 16"),
    ({"structures": []}, "at least one structure"),
    ({"structures": "Heart"}, "expected a list of structures"),
])
def test_template_errors_name_the_field(data, message):
    with pytest.raises(TemplateError, match=message):
        template_from_dict(data, "site.yaml")


def test_template_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("structures: [{name: Heart\n")
    with pytest.raises(TemplateError, match="bad.yaml: cannot parse"):
        load_template(bad)
    with pytest.raises(TemplateError, match=r"must end in \.yaml, \.yml or \.json"):
        load_template(tmp_path / "site.txt")


def test_post_processing_fields_load_and_are_checked():
    from dicomrt.structures import template_from_dict

    (spec,) = template_from_dict([{"name": "Heart", "prompts": ["heart"], "type": "ORGAN", "components": 1,
                                   "min_volume_ml": 2.5}])
    assert (spec.components, spec.min_volume_ml) == (1, 2.5)
    with pytest.raises(TemplateError, match=r"structures\[0\]: Heart: components must be a positive integer or null, "
                                            r"got 0"):
        template_from_dict([{"name": "Heart", "prompts": ["heart"], "type": "ORGAN", "components": 0}])

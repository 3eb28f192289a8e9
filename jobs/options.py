"""The job contract: ``JobOptions``, what a job makes. Parsed once at every edge (HTTP upload, STOW-RS, the DICOM
listener's settings, ``itvsam submit-dir``/``submit``, ``itvsam run``), so that a bad option is refused there with
the field named and nothing is stored or queued; the normalised form (``to_json``: every default spelled out) is what
the manifest stores and what the idempotency key hashes, so ``{}`` and the defaults written out are one job.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from dicomrt.itv import has_margin
from dicomrt.rt_errors import RTError
from dicomrt.rt_outputs import OutputMode
from dicomrt.structures import (
    MAX_NAME_LENGTH,
    StructureSpec,
    TemporalSettings,
    template_from_dict,
    template_to_dict,
    thoracic_template,
)


def _template(value: Any) -> tuple[StructureSpec, ...]:
    if isinstance(value, tuple) and all(isinstance(s, StructureSpec) for s in value):
        return value
    try:
        return template_from_dict(value, "template")
    except RTError as exc:  # a TemplateError names the entry and field; pydantic adds the option's name
        raise ValueError(str(exc).removeprefix("template: ")) from None


def _temporal(value: Any) -> TemporalSettings:
    if isinstance(value, TemporalSettings):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"expected an object with some of {sorted(TemporalSettings.__dataclass_fields__)}, got "
                         f"{type(value).__name__}")
    unknown = sorted(set(value) - set(TemporalSettings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; expected some of "
                         f"{sorted(TemporalSettings.__dataclass_fields__)}")
    try:
        return TemporalSettings(**value)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


Template = Annotated[
    tuple[StructureSpec, ...], PlainValidator(_template), PlainSerializer(template_to_dict),
    WithJsonSchema({"type": "array", "items": {"type": "object"},
                    "description": "structures: name, prompts, type, itv, colour, components, min_volume_ml"})]
Temporal = Annotated[
    TemporalSettings, PlainValidator(_temporal), PlainSerializer(lambda t: dict(t.__dict__)),
    WithJsonSchema({"type": "object", "description": "min_phases, motion_tolerance_mm, max_gap, cyclic, fill_gaps"})]
Margin = float | tuple[float, float, float]


class JobOptions(BaseModel):
    """What a job makes.

    ``template``: the structures (default thoracic: GTV with ITV, lungs, heart). ``mode``: which RTSTRUCTs. ``seg``:
    DICOM SEG per phase. ``projections``: write the AIP/MIP the study lacks (the reference RTSTRUCT then goes on the
    new AIP). ``study``: the study to use when the input holds several (UID or hash). ``reference_percent``: the
    reference phase when there is no AIP. ``threshold``: on the predicted probability, one for every structure; None:
    each structure's calibrated threshold (``model.calibration``). ``temporal``: the phase-coherent filter.
    ``itv_margin_mm``: 0, or the margin (mm; one number, or (x, y, z) along the patient LPS axes) of an expanded ITV
    written beside the ITV as its own ROI (``ITV+5mm``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: Template = Field(default_factory=thoracic_template)
    mode: OutputMode = OutputMode.ALL
    seg: bool = True
    projections: bool = True
    study: str | None = None
    reference_percent: float = Field(50.0, ge=0.0, le=100.0)
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    temporal: Temporal = Field(default_factory=TemporalSettings)
    itv_margin_mm: Margin = 0.0

    @field_validator("itv_margin_mm")
    @classmethod
    def _margin_not_negative(cls, value: Margin) -> Margin:
        if min((value,) if isinstance(value, float) else value) < 0:
            raise ValueError(f"must be ≥ 0 (one number, or [x, y, z] mm along the patient axes), got {value}")
        return value

    @model_validator(mode="after")
    def _check_margin_names(self) -> JobOptions:
        names = {s.name.upper() for s in self.template}
        for name in self.margin_names().values():
            if len(name) > MAX_NAME_LENGTH or name.upper() in names:
                raise ValueError(f"itv_margin_mm: the expanded ITV's name {name!r} must be at most {MAX_NAME_LENGTH} "
                                 "characters and differ from the template's names")
        return self

    @property
    def has_margin(self) -> bool:
        return has_margin(self.itv_margin_mm)

    def margin_names(self) -> dict[str, str]:
        """Structure name → the ROI name of its expanded ITV, for every structure with an ITV (none without a
        margin)."""
        if not self.has_margin:
            return {}
        return {s.name: s.itv_margin_name(self.itv_margin_mm) for s in self.template if s.itv}

    def to_json(self) -> dict[str, Any]:
        """The normalised JSON form: every field, defaults included (stored in the manifest, hashed for idempotency)."""
        return self.model_dump(mode="json")


class InvalidOptionsError(ValueError):
    """Job options refused: the message names each offending field (``template.structures[0]``, ``mode``, ...)."""

    code = "invalid_options"


def parse_options(data: Any) -> JobOptions:
    """``JobOptions`` from their JSON form (None or {}: the defaults). Raises ``InvalidOptionsError``."""
    if data is None:
        return JobOptions()
    if not isinstance(data, dict):
        raise InvalidOptionsError(f"options must be a JSON object, got {type(data).__name__}")
    try:
        return JobOptions.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in error['loc']) or 'options'}: {_message(error)}"
                    for error in exc.errors()]
        raise InvalidOptionsError("invalid job options: " + "; ".join(problems)) from None


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown option; expected some of {sorted(JobOptions.model_fields)}"
    return str(error["msg"]).removeprefix("Value error, ")

"""What to contour: ``StructureSpec`` (one structure), site templates (lists of them) and their fixed colours, and
how the masks of a 4DCT are refined over the phases (``TemporalSettings``).

A template is a list of specs; the order of a template is the order of ROIs (and so the ROI numbers) in every object
we write. Colours come from a fixed table (``COLOURS`` by TG-263 name, then ``PALETTE`` by position), never from
``hash()`` or a random generator, so a structure has the same colour in every job and every process.

Templates load from YAML or JSON (``load_template``)::

    structures:
      - name: GTV
        prompts: [lung tumour]
        type: GTV          # RTROIInterpretedType
        itv: true
        colour: [255, 0, 0]  # optional: else from the fixed table
      - name: Heart
        prompts: [heart]
        type: ORGAN
        components: 1        # optional: how many objects the structure is (default: keep all supported ones)
        min_volume_ml: 1.0   # optional: drop smaller specks (default 0.05)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from dicomrt.rt_errors import TemplateError

# Eclipse truncates or refuses ROI names over 16 characters; TG-263 names fit within it.
MAX_NAME_LENGTH = 16
# Per-phase contours of an ITV structure are named ``<name>_T<percent>`` (e.g. GTV_T00): their base name must leave
# room for the suffix of a two-digit phase percent.
MAX_ITV_BASE_LENGTH = MAX_NAME_LENGTH - len("_T00")
# TG-263 names: letters, digits and underscores (plus ~ for partial structures), starting with a letter.
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_~^\-]*$")


class RoiType(StrEnum):
    """RTROIInterpretedType (DICOM PS3.3 C.8.8.8), the defined terms a planning system understands."""

    EXTERNAL = "EXTERNAL"
    PTV = "PTV"
    CTV = "CTV"
    GTV = "GTV"
    TREATED_VOLUME = "TREATED_VOLUME"
    IRRAD_VOLUME = "IRRAD_VOLUME"
    BOLUS = "BOLUS"
    AVOIDANCE = "AVOIDANCE"
    ORGAN = "ORGAN"
    MARKER = "MARKER"
    REGISTRATION = "REGISTRATION"
    ISOCENTER = "ISOCENTER"
    CONTRAST_AGENT = "CONTRAST_AGENT"
    CAVITY = "CAVITY"
    SUPPORT = "SUPPORT"
    FIXATION = "FIXATION"
    DOSE_REGION = "DOSE_REGION"
    CONTROL = "CONTROL"


# Fixed colours (RGB 0-255) of the structures we name; others take PALETTE[position in template % len].
COLOURS: dict[str, tuple[int, int, int]] = {
    "GTV": (255, 0, 0),
    "ITV": (255, 128, 0),
    "ITV_margin": (255, 200, 100),  # the ITV expanded by a job's margin (ITV+5mm)
    "CTV": (255, 255, 0),
    "PTV": (0, 255, 255),
    "Lung_L": (0, 128, 255),
    "Lung_R": (0, 200, 120),
    "Lungs": (0, 160, 200),
    "Heart": (255, 0, 255),
    "Esophagus": (160, 82, 45),
    "SpinalCord": (255, 255, 128),
    "External": (0, 255, 0),
    "Liver": (150, 75, 0),
    "Spleen": (128, 0, 128),
    "Stomach": (255, 160, 122),
    "A_Aorta": (220, 20, 60),
}
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 250, 200), (128, 0, 0), (170, 255, 195),
)
# Colours of the per-phase contours of a target in the reference RTSTRUCT: phase k of n takes PHASE_PALETTE[k % len].
PHASE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 64, 0), (255, 128, 0), (255, 192, 0), (255, 255, 0), (192, 255, 0), (128, 255, 0),
    (0, 255, 128), (0, 192, 255), (128, 64, 255),
)


def default_colour(name: str, position: int) -> tuple[int, int, int]:
    """The fixed colour of ``name``: from ``COLOURS`` when named there, else ``PALETTE[position % len(PALETTE)]``."""
    return COLOURS.get(name, PALETTE[position % len(PALETTE)])


@dataclass(frozen=True)
class StructureSpec:
    """One structure to contour.

    ``name``: TG-263 name, at most 16 characters (at most 12 when ``itv`` is set, leaving room for ``_T00``).
    ``prompts``: the text prompts given to the model (at least one). ``colour``: RGB, each 0-255.
    ``interpreted_type``: RTROIInterpretedType (a ``RoiType`` or its string). ``itv``: whether the union over phases
    (its internal target volume, or an organ's motion envelope) is written to the reference RTSTRUCT.
    Post-processing: ``components``, how many objects the structure is (1 for a lung, the heart or a single tumour;
    None keeps every one the temporal filter supports): on a 4DCT an object is a 3D component followed over the
    phases, and the largest by volume over all phases are kept (``model.refine``); on a 3D CT the largest 3D
    components. ``min_volume_ml``: below it a 3D component is dropped as a speck.
    """

    name: str
    prompts: tuple[str, ...]
    colour: tuple[int, int, int]
    interpreted_type: RoiType
    itv: bool = False
    components: int | None = None
    min_volume_ml: float = 0.05

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise TemplateError(f"name must be a TG-263 name (a letter, then letters, digits or _), got "
                                f"{self.name!r}")
        limit = MAX_ITV_BASE_LENGTH if self.itv else MAX_NAME_LENGTH
        if len(self.name) > limit:
            why = " for a structure with an ITV (room for _T00)" if self.itv else ""
            raise TemplateError(f"name must be at most {limit} characters{why}, got {self.name!r} ({len(self.name)})")
        prompts = (self.prompts,) if isinstance(self.prompts, str) else tuple(self.prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise TemplateError(f"{self.name}: prompts must be one or more non-empty strings, got {self.prompts!r}")
        object.__setattr__(self, "prompts", prompts)
        colour = tuple(self.colour)
        if len(colour) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255
                                       for c in colour):
            raise TemplateError(f"{self.name}: colour must be three integers 0-255 (RGB), got {self.colour!r}")
        object.__setattr__(self, "colour", colour)
        try:
            object.__setattr__(self, "interpreted_type", RoiType(str(self.interpreted_type).upper()))
        except ValueError:
            raise TemplateError(f"{self.name}: interpreted_type must be one of {[t.value for t in RoiType]}, got "
                                f"{self.interpreted_type!r}") from None
        if not isinstance(self.itv, bool):
            raise TemplateError(f"{self.name}: itv must be true or false, got {self.itv!r}")
        if self.components is not None and (not isinstance(self.components, int) or self.components < 1):
            raise TemplateError(f"{self.name}: components must be a positive integer or null, got "
                                f"{self.components!r}")
        if not isinstance(self.min_volume_ml, int | float) or self.min_volume_ml < 0:
            raise TemplateError(f"{self.name}: min_volume_ml must be a number >= 0, got {self.min_volume_ml!r}")

    @property
    def itv_name(self) -> str:
        """The name of this structure's union over phases: ITV for a GTV (ITV_x for GTV_x), else ``<name>_ITV``."""
        if self.name == "GTV" or self.name.startswith("GTV_"):
            return "ITV" + self.name[3:]
        return f"{self.name}_ITV"

    def phase_name(self, percent: float | None) -> str:
        """The name of this structure's contour of one phase in the reference RTSTRUCT: ``GTV_T00`` … ``GTV_T90``."""
        if percent is None:
            return self.name
        return f"{self.name}_T{percent:02.0f}" if float(percent).is_integer() else f"{self.name}_T{percent:g}"


    def itv_margin_name(self, margin_mm: float | Sequence[float]) -> str:
        """The name of this structure's ITV expanded by ``margin_mm`` (one number, or (x, y, z) along the patient LPS
        axes): ``ITV+5mm``, ``ITV+3/3/5mm``."""
        values = [float(margin_mm)] if isinstance(margin_mm, int | float) else [float(v) for v in margin_mm]
        if len(set(values)) == 1:
            values = values[:1]
        return f"{self.itv_name}+{'/'.join(f'{v:g}' for v in values)}mm"


@dataclass(frozen=True)
class TemporalSettings:
    """The phase-coherent temporal filter of a 4DCT's masks (``model.refine``, module docstring steps 3-5).

    ``min_phases``: support needed to keep a component (3 removes anything present in at most 2 neighbouring phases).
    ``motion_tolerance_mm``: how far (mm, surface to surface) a component may move from one phase to the next and still
    count as the same object. ``max_gap``: phases a run may bridge where the object is missing (dropouts).
    ``cyclic``: phases wrap around (respiration); False for a non-periodic series. ``fill_gaps``: refill bridged phases
    (at the periodic motion model's position, or from the model's sub-threshold response).
    """

    min_phases: int = 3
    motion_tolerance_mm: float = 5.0
    max_gap: int = 1
    cyclic: bool = True
    fill_gaps: bool = True

    def __post_init__(self) -> None:
        if self.min_phases < 1 or self.max_gap < 0 or self.motion_tolerance_mm < 0:
            raise ValueError(f"need min_phases ≥ 1, max_gap ≥ 0 and motion_tolerance_mm ≥ 0, got {self}")


def thoracic_template() -> tuple[StructureSpec, ...]:
    """The default thoracic template: the tumour (one lesion, with its ITV) and the lungs and heart. For several
    lesions use a template whose GTV has ``components`` null (or the count): the job's flags name what was removed."""
    return (
        StructureSpec("GTV", ("lung tumor", "tumour"), COLOURS["GTV"], RoiType.GTV, itv=True, components=1),
        StructureSpec("Lung_L", ("left lung",), COLOURS["Lung_L"], RoiType.ORGAN, components=1, min_volume_ml=1.0),
        StructureSpec("Lung_R", ("right lung",), COLOURS["Lung_R"], RoiType.ORGAN, components=1, min_volume_ml=1.0),
        StructureSpec("Heart", ("heart",), COLOURS["Heart"], RoiType.ORGAN, components=1, min_volume_ml=1.0),
    )


def validate_template(specs: Iterable[StructureSpec]) -> tuple[StructureSpec, ...]:
    """``specs`` as a tuple; refuses an empty template and repeated names (ROI names must be unique)."""
    specs = tuple(specs)
    if not specs:
        raise TemplateError("a template needs at least one structure, got none")
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, StructureSpec):
            raise TemplateError(f"template entries must be StructureSpec, got {type(spec).__name__}")
        if spec.name.upper() in seen:
            raise TemplateError(f"structure names must be unique (case-insensitive), got {spec.name!r} twice")
        seen.add(spec.name.upper())
    return specs


_FIELDS = {"name", "prompts", "colour", "color", "type", "interpreted_type", "itv", "components", "min_volume_ml"}


def template_from_dict(data: Any, source: str = "template") -> tuple[StructureSpec, ...]:
    """Specs from parsed YAML/JSON: ``{"structures": [{name, prompts, type, itv?, colour?}, ...]}`` or the list."""
    entries = data.get("structures") if isinstance(data, Mapping) else data
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise TemplateError(f"{source}: expected a list of structures (or a mapping with key 'structures'), got "
                            f"{type(entries).__name__}")
    specs = []
    for position, entry in enumerate(entries):
        where = f"{source}: structures[{position}]"
        if not isinstance(entry, Mapping):
            raise TemplateError(f"{where}: expected a mapping, got {type(entry).__name__}")
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise TemplateError(f"{where}: unknown field(s) {unknown}; expected {sorted(_FIELDS - {'color'})}")
        for required in ("name", "prompts"):
            if required not in entry:
                raise TemplateError(f"{where}: field '{required}' is missing")
        kind = entry.get("interpreted_type", entry.get("type"))
        if kind is None:
            raise TemplateError(f"{where}: field 'type' (RTROIInterpretedType) is missing")
        name = entry["name"]
        colour = entry.get("colour", entry.get("color"))
        try:
            specs.append(StructureSpec(
                name=name,
                prompts=entry["prompts"],
                colour=default_colour(str(name), position) if colour is None else colour,
                interpreted_type=kind,
                itv=entry.get("itv", False),
                components=entry.get("components"),
                min_volume_ml=entry.get("min_volume_ml", 0.05),
            ))
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
    try:
        return validate_template(specs)
    except TemplateError as exc:
        raise TemplateError(f"{source}: {exc}") from None


def template_to_dict(specs: Iterable[StructureSpec]) -> list[dict[str, Any]]:
    """The JSON form of a template, as ``template_from_dict`` reads it back."""
    return [{"name": s.name, "prompts": list(s.prompts), "colour": list(s.colour), "type": s.interpreted_type.value,
             "itv": s.itv, "components": s.components, "min_volume_ml": s.min_volume_ml} for s in specs]


def load_template(path: Path) -> tuple[StructureSpec, ...]:
    """A template from a ``.yaml``/``.yml`` or ``.json`` file (see the module docstring for the layout)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise TemplateError(f"template file must end in .yaml, .yml or .json, got {path.name!r}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path.name}: cannot parse: {exc}") from None
    return template_from_dict(data, path.name)

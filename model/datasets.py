"""Annotated CT volumes for training and evaluation: clinics' exports (CT + RTSTRUCT) and our phantoms.

An ``AnnotatedVolume`` is one CT volume (a 3D CT, or one phase of a 4DCT) with a bool mask per template structure on
its grid. Sources:

- a folder of studies as clinics export them: each study folder holds a CT series (a 3D CT, or the phases of a 4DCT)
  and one RTSTRUCT per annotated series. Each RTSTRUCT is matched to its series (``dicomrt.rtstruct_read``), its
  structures renamed to the template's through a ``NameMapping`` (``"Lt Lung" → Lung_L``) and rasterised. A structure
  of the file that is neither mapped nor ignored, or a template structure the file lacks, is refused
  (``AnnotationError``): training must know where each structure is *absent* to learn negatives.
- a phantom study as ``itvsam phantom`` writes it: ``dicom/`` + ``truth.npz`` (the exact truth, per phase);
- a phantom generated in memory (``phantom_volumes``), the fastest path for the phantom model.

``DomainShift`` changes the look of volumes (contrast, noise, blur, field of view) to build the "other distribution"
base model of the ablation (``bench/bench_training.py``).
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from dicomrt.geometry import Geometry
from dicomrt.structures import StructureSpec

logger = logging.getLogger(__name__)

TRUTH_NPZ = "truth.npz"


class AnnotationError(ValueError):
    """Annotated training data cannot be used as it is (unmapped or missing structure, grid mismatch, no data)."""


@dataclass(frozen=True, eq=False)
class AnnotatedVolume:
    """One CT volume and its truth.

    ``hu``: (z, y, x) int16 or float32 Hounsfield units. ``masks``: template structure name → (z, y, x) bool on the
    same grid (every structure of the template, possibly empty). ``geometry``: the grid (index → LPS mm).
    ``study``: an id of the study it belongs to (phases of one 4DCT share it); ``phase``: its index among the study's
    phases (0 for a 3D CT); ``n_phases``: how many phases the study has.
    """

    hu: np.ndarray = field(repr=False)
    masks: dict[str, np.ndarray] = field(repr=False)
    geometry: Geometry = field(repr=False)
    study: str
    phase: int = 0
    n_phases: int = 1

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise AnnotationError(f"{self.study}: hu must be (z, y, x), got shape {self.hu.shape}")
        bad = {k: v.shape for k, v in self.masks.items() if v.shape != self.hu.shape}
        if bad:
            raise AnnotationError(f"{self.study}: masks must have the CT's shape {self.hu.shape}, got {bad}")

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.geometry.spacing_mm)


@dataclass(frozen=True)
class NameMapping:
    """Clinic structure names → template names. Matching ignores case, spaces, ``_`` and ``-``.

    ``names``: e.g. ``{"Lt Lung": "Lung_L", "LUNG_LT": "Lung_L"}`` (a template name always maps to itself).
    ``ignore``: names of structures to skip (e.g. ``External``, ``SpinalCord`` when they are not trained).
    Loaded from YAML/JSON ``{map: {...}, ignore: [...]}`` (``from_file``).
    """

    names: Mapping[str, str] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()

    @staticmethod
    def key(name: str) -> str:
        return re.sub(r"[\s_\-]+", "", name).lower()

    @classmethod
    def from_file(cls, path: Path) -> NameMapping:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, Mapping) or not set(data) <= {"map", "ignore"}:
            raise AnnotationError(f"{path}: expected a mapping with keys 'map' (clinic name → template name) and "
                                  f"'ignore' (list of names), got {type(data).__name__} {sorted(data)[:5]}")
        names = data.get("map") or {}
        ignore = data.get("ignore") or []
        if not isinstance(names, Mapping) or not isinstance(ignore, list):
            raise AnnotationError(f"{path}: 'map' must be a mapping and 'ignore' a list")
        return cls({str(k): str(v) for k, v in names.items()}, tuple(str(i) for i in ignore))

    def resolve(self, found: Sequence[str], template: Sequence[str], where: str) -> dict[str, str]:
        """Template name → the found name that gives it. Refuses unmapped names, two names for one structure and
        template structures that none of ``found`` gives (the message lists what was found and how to map it)."""
        table = {self.key(t): t for t in template}
        table.update({self.key(k): v for k, v in self.names.items()})
        unknown_targets = sorted({v for v in self.names.values() if v not in template})
        if unknown_targets:
            raise AnnotationError(f"name mapping targets {unknown_targets} are not in the template {list(template)}")
        ignored = {self.key(i) for i in self.ignore}
        chosen: dict[str, str] = {}
        unmapped = []
        for name in found:
            if self.key(name) in ignored:
                continue
            target = table.get(self.key(name))
            if target is None:
                unmapped.append(name)
            elif target in chosen:
                raise AnnotationError(f"{where}: structures {chosen[target]!r} and {name!r} both map to {target}")
            else:
                chosen[target] = name
        if unmapped:
            raise AnnotationError(f"{where}: unmapped structure(s) {unmapped}; map them to the template "
                                  f"{list(template)} (e.g. map: {{{unmapped[0]!r}: {template[0]}}}) or list them under "
                                  f"ignore")
        missing = [t for t in template if t not in chosen]
        if missing:
            raise AnnotationError(f"{where}: template structure(s) {missing} are missing (the file holds "
                                  f"{list(found)}); training needs every structure delineated where present, so "
                                  f"that its absence elsewhere is known")
        return chosen


@dataclass(frozen=True)
class DomainShift:
    """A change of look applied to whole volumes (the ablation's "other distribution").

    HU → ``hu_scale · (HU + 1000) − 1000 + hu_offset`` (contrast around air), then Gaussian blur of ``blur_mm`` sigma
    in-plane, then Gaussian noise of ``noise_hu`` sd (seeded per volume), and a field of view ``zoom`` (> 1 magnifies
    the centre in-plane: a smaller display field of view; masks follow, nearest-neighbour).
    """

    hu_scale: float = 1.0
    hu_offset: float = 0.0
    blur_mm: float = 0.0
    noise_hu: float = 0.0
    zoom: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self == DomainShift()

    def apply(self, volume: AnnotatedVolume, seed: int) -> AnnotatedVolume:
        if self.is_identity:
            return volume
        hu = (volume.hu.astype(np.float32) + 1000.0) * self.hu_scale - 1000.0 + self.hu_offset
        spacing = volume.spacing_mm
        if self.blur_mm > 0:
            hu = ndimage.gaussian_filter(hu, sigma=(0.0, self.blur_mm / spacing[1], self.blur_mm / spacing[2]))
        if self.noise_hu > 0:
            hu += np.random.default_rng(seed).normal(0.0, self.noise_hu, hu.shape).astype(np.float32)
        masks = dict(volume.masks)
        if self.zoom != 1.0:
            hu = _zoom_centre(hu, self.zoom, order=1, fill=-1000.0)
            masks = {k: _zoom_centre(v.astype(np.uint8), self.zoom, order=0, fill=0).astype(bool)
                     for k, v in masks.items()}
        return AnnotatedVolume(hu.astype(np.float32), masks, volume.geometry, volume.study, volume.phase,
                               volume.n_phases)


def _zoom_centre(volume: np.ndarray, zoom: float, order: int, fill: float) -> np.ndarray:
    """(z, y, x) magnified in-plane by ``zoom`` about the slice centre, same shape (outside filled with ``fill``)."""
    _, ny, nx = volume.shape
    matrix = np.diag([1.0, 1.0 / zoom, 1.0 / zoom])
    centre = np.array([0.0, (ny - 1) / 2, (nx - 1) / 2])
    offset = centre - matrix @ centre
    return ndimage.affine_transform(volume, matrix, offset=offset, order=order, mode="constant", cval=fill)


# --- sources ---------------------------------------------------------------------------------------------------------


def phantom_volumes(seed: int, template: Sequence[StructureSpec], *, artifacts: Sequence[str] = (),
                    phases: Sequence[int] | None = None, shift: DomainShift = DomainShift()) -> list[AnnotatedVolume]:
    """The phases of the in-memory phantom of ``seed`` (small size) as annotated volumes (``phases``: which; None all).

    ``artifacts``: 4DCT artefacts injected (``dicomrt.phantom.Artifact`` values); the truth follows them.
    """
    from dicomrt.phantom import PhantomConfig, generate_phantom

    phantom = generate_phantom(PhantomConfig(seed=seed, artifacts=tuple(artifacts)))
    names = [s.name for s in template]
    missing = [n for n in names if n not in phantom.truth]
    if missing:
        raise AnnotationError(f"phantom seed {seed}: the template's {missing} are not phantom structures "
                              f"{sorted(phantom.truth)}")
    chosen = range(len(phantom.percents)) if phases is None else phases
    return [shift.apply(AnnotatedVolume(np.asarray(phantom.hu[k]), {n: np.asarray(phantom.truth[n][k]) for n in names},
                                        phantom.geometry, f"phantom-{seed}", k, len(phantom.percents)),
                        seed * 1000 + k)
            for k in chosen]


def load_phantom_study(study_dir: Path, template: Sequence[StructureSpec]) -> list[AnnotatedVolume]:
    """A phantom written by ``itvsam phantom``: ``dicom/`` read like any 4DCT, the truth from ``truth.npz``.

    Refuses a truth whose affine differs from the CT grid's (more than 1e-3 mm) or whose phase count differs.
    """
    from dicomrt.reader import read_study

    study_dir = Path(study_dir)
    study = read_study(study_dir / "dicom" if (study_dir / "dicom").is_dir() else study_dir)
    with np.load(study_dir / TRUTH_NPZ) as truth:
        arrays = {k: truth[k] for k in truth.files}
    names = [s.name for s in template]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise AnnotationError(f"{study_dir / TRUTH_NPZ}: template structure(s) {missing} are missing (it holds "
                              f"{sorted(arrays)})")
    n = len(study.phases)
    if arrays[names[0]].shape[0] != n:
        raise AnnotationError(f"{study_dir}: the truth has {arrays[names[0]].shape[0]} phases, the CT {n}")
    volumes = []
    for k, phase in enumerate(study.phases):
        if not np.allclose(phase.geometry.affine, arrays["affine"], atol=1e-3):
            raise AnnotationError(f"{study_dir}: phase {phase.label}'s grid differs from truth.npz's affine")
        volumes.append(AnnotatedVolume(phase.volume, {name: arrays[name][k].astype(bool) for name in names},
                                       phase.geometry, study_dir.name, k, n))
    return volumes


def load_rtstruct_study(study_dir: Path, template: Sequence[StructureSpec], mapping: NameMapping
                        ) -> list[AnnotatedVolume]:
    """A clinic's export: the CT (3D or 4D) in ``study_dir`` and each RTSTRUCT there on the series it references."""
    import pydicom
    from pydicom.errors import BytesLengthException, InvalidDicomError

    from dicomrt.reader import find_files, read_study
    from dicomrt.rtstruct_read import RT_STRUCTURE_SET_STORAGE, match_series, rasterise_roi, read_rtstruct

    study_dir = Path(study_dir)
    rtstructs = []
    for path in find_files(study_dir):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        except InvalidDicomError:  # not a DICOM file (a note, a spreadsheet): neither CT nor RTSTRUCT
            continue
        except (BytesLengthException, struct.error, ValueError, EOFError) as exc:  # truncated or corrupt DICOM
            raise AnnotationError(f"{study_dir.name}/{path.relative_to(study_dir)}: unreadable DICOM file "
                                  f"({type(exc).__name__}: {exc}); repair or remove it") from exc
        if str(ds.get("SOPClassUID", "")) == RT_STRUCTURE_SET_STORAGE:
            rtstructs.append(path)
    if not rtstructs:
        raise AnnotationError(f"{study_dir}: no RTSTRUCT found (expected the CT series and its RT Structure Set)")
    study = read_study(study_dir)
    names = [s.name for s in template]
    volumes = []
    for path in rtstructs:
        content = read_rtstruct(path)
        series, _ = match_series(content, [p.series for p in study.phases])
        k = next(i for i, p in enumerate(study.phases) if p.series.geometry is series.geometry)
        chosen = mapping.resolve(content.names, names, f"{study_dir.name}/{path.name}")
        masks = {name: rasterise_roi(content.roi(chosen[name]), series.geometry).mask for name in names}
        volumes.append(AnnotatedVolume(study.phases[k].volume, masks, series.geometry, study_dir.name, k,
                                       len(study.phases)))
    return sorted(volumes, key=lambda v: v.phase)


def study_folders(data_dir: Path) -> list[Path]:
    """The study folders of a data folder: the folder itself when it is one study, else its sub-folders."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise AnnotationError(f"no such data folder: {data_dir}")
    if (data_dir / TRUTH_NPZ).is_file():
        return [data_dir]
    children = sorted(p for p in data_dir.iterdir() if p.is_dir())
    has_dicom = any(p.is_file() for p in data_dir.iterdir())
    return [data_dir] if has_dicom or not children else children


def load_annotated(data_dirs: Iterable[Path], template: Sequence[StructureSpec],
                   mapping: NameMapping = NameMapping()) -> list[AnnotatedVolume]:
    """Every annotated volume under ``data_dirs`` (phantom studies by their ``truth.npz``, others by RTSTRUCT)."""
    volumes: list[AnnotatedVolume] = []
    for data_dir in data_dirs:
        for folder in study_folders(Path(data_dir)):
            if (folder / TRUTH_NPZ).is_file():
                found = load_phantom_study(folder, template)
            else:
                found = load_rtstruct_study(folder, template, mapping)
            logger.info("%s: %d annotated volume(s)", folder.name, len(found))
            volumes.extend(found)
    if not volumes:
        raise AnnotationError(f"no annotated volumes under {[str(d) for d in data_dirs]}")
    return volumes

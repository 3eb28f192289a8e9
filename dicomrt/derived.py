"""AIP and MIP of a 4DCT as derived CT series: ImageType DERIVED\\SECONDARY\\AXIAL\\AVERAGE (or MAXIMUM), their own
series and instance UIDs, the phases' grid and frame of reference, patient/study attributes copied from the study.

Written when the study has none of its own (``write_projections``); the written AIP (returned as a ``SeriesInfo``)
can be the reference series of the reference RTSTRUCT (``dicomrt.rt_outputs.write_rtstructs(reference=...)``).
Pixel data: int16 HU (rescale slope 1, intercept 0); the AIP is the mean over phases rounded to the nearest HU.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from dicomrt import layout
from dicomrt.ct_series import write_ct_image
from dicomrt.geometry import Geometry
from dicomrt.identifiers import new_uid
from dicomrt.instances import InstanceHeader, read_header
from dicomrt.phases import SeriesKind
from dicomrt.provenance import Provenance, add_equipment, add_patient_and_study, now
from dicomrt.rt_errors import RTError
from dicomrt.study import SeriesInfo, Study4D

logger = logging.getLogger(__name__)


class Projection(StrEnum):
    AVERAGE = "AVERAGE"
    MAXIMUM = "MAXIMUM"


_KIND = {Projection.AVERAGE: SeriesKind.AVERAGE, Projection.MAXIMUM: SeriesKind.MIP}
_NAME = {Projection.AVERAGE: layout.AIP, Projection.MAXIMUM: layout.MIP}  # also their folders
_SERIES_NUMBER = {Projection.AVERAGE: 980, Projection.MAXIMUM: 981}
_SLAB = 4  # slices per step of ``projection_volume``


def projection_volume(study: Study4D, projection: Projection) -> np.ndarray:
    """(z, y, x) int16 HU: the mean (rounded) or maximum over the phases' volumes."""
    if len(study.phases) < 2:
        raise RTError(f"a projection over phases needs at least 2 phases, got {len(study.phases)}")
    volumes = [phase.volume for phase in study.phases]
    result = np.empty(volumes[0].shape, dtype=np.int16)
    # a few slices at a time: the float temporaries stay small (a whole full-size volume's in float64 is 250 MB of
    # fresh pages, several times slower to fill); the same arithmetic per voxel
    for start in range(0, len(result), _SLAB):
        slab = slice(start, start + _SLAB)
        if projection is Projection.MAXIMUM:
            out = np.full(result[slab].shape, np.iinfo(np.int16).min, dtype=np.float32)
            for volume in volumes:
                np.maximum(out, volume[slab], out=out)
        else:
            out = np.zeros(result[slab].shape, dtype=np.float64)
            for volume in volumes:
                out += volume[slab]
            out /= len(volumes)
        result[slab] = np.clip(np.rint(out), -32768, 32767)
    return result


def write_projection(study: Study4D, projection: Projection | str, out_dir: Path,
                     provenance: Provenance) -> SeriesInfo:
    """Write the AIP or MIP of ``study`` as a CT series under ``out_dir`` (one file per slice); returns it."""
    projection = Projection(projection)
    base = study.phases[0].series
    geometry = base.geometry
    volume = projection_volume(study, projection)
    series_uid = new_uid()
    uids = tuple(new_uid() for _ in range(geometry.shape[0]))
    name = _NAME[projection]
    patient_position = _patient_position(base)
    date, time = now()
    positions = geometry.slice_positions
    dz, dy, dx = geometry.spacing_mm
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    headers: list[InstanceHeader] = []
    for k, uid in enumerate(uids):
        ds = Dataset()
        add_patient_and_study(ds, study.attributes)
        ds.SOPInstanceUID = uid
        ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL", projection.value]
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = _SERIES_NUMBER[projection]
        ds.SeriesDescription = f"itvsam {name} of {len(study.phases)} phases"
        ds.PatientPosition = patient_position
        ds.Laterality = ""
        ds.SeriesDate, ds.SeriesTime = date, time
        ds.ContentDate, ds.ContentTime = date, time
        add_equipment(ds, provenance)
        ds.FrameOfReferenceUID = geometry.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.PatientOrientation = ""
        ds.DerivationDescription = (f"{'mean' if projection is Projection.AVERAGE else 'maximum'} over "
                                    f"{len(study.phases)} respiratory phases by itvsam")
        ds.ImagePositionPatient = [round(float(v), 6) for v in positions[k]]
        ds.ImageOrientationPatient = [round(v, 8) for v in geometry.orientation]
        ds.PixelSpacing = [round(dy, 8), round(dx, 8)]
        ds.SliceThickness = round(dz, 6)
        ds.SliceLocation = round(float(positions[k] @ _normal(geometry)), 6)
        ds.KVP = ""
        ds.AcquisitionNumber = ""
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = -600, 1600
        path = folder / f"{name}_{k:04d}.dcm"
        write_ct_image(path, ds, volume[k])
        header = read_header(path)
        if not isinstance(header, InstanceHeader):
            raise RTError(f"the {name} slice written at {path.name} does not read back as a CT image ({header})")
        headers.append(header)
    written = Geometry(geometry.affine, geometry.shape, geometry.frame_of_reference_uid, uids)
    logger.info("study %s: wrote %s (%d slices)", study.index.study_hash, name, len(uids))
    return SeriesInfo(series_uid, _SERIES_NUMBER[projection], headers[0].series_description, _KIND[projection], None,
                      "written by itvsam", written, tuple(headers))


def write_projections(study: Study4D, out_dir: Path, provenance: Provenance) -> list[SeriesInfo]:
    """The AIP and MIP the study lacks, written under ``out_dir/AIP`` and ``out_dir/MIP``; [] for a 3D CT."""
    if len(study.phases) < 2:
        return []
    have = {d.kind for d in study.derived}
    return [write_projection(study, p, Path(out_dir) / _NAME[p], provenance) for p in Projection
            if _KIND[p] not in have]


def _normal(geometry: Geometry) -> np.ndarray:
    step = geometry.affine[:3, 0]
    return step / np.linalg.norm(step)


def _patient_position(series: SeriesInfo) -> str:
    """PatientPosition (HFS, FFS, …) of the source series, read from its first image; "" when absent."""
    ds = pydicom.dcmread(series.instances[0].path, stop_before_pixels=True, specific_tags=["PatientPosition"])
    return str(ds.get("PatientPosition", "") or "")

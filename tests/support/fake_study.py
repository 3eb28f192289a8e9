"""A 4DCT ``StudyIndex`` in memory: the grid and headers of a real series repeated as phases (no files written)."""

from __future__ import annotations

from dataclasses import replace

from dicomrt.geometry import Geometry
from dicomrt.identifiers import new_uid
from dicomrt.phases import SeriesKind
from dicomrt.study import SeriesInfo, StudyIndex


def phase_series(base: SeriesInfo, percent: float, kind: SeriesKind = SeriesKind.PHASE) -> SeriesInfo:
    """``base``'s grid and headers as a new series (new series and instance UIDs)."""
    series_uid = new_uid("fake", base.series_instance_uid, percent, kind.value)
    uids = tuple(new_uid(series_uid, k) for k in range(base.geometry.shape[0]))
    geometry = Geometry(base.geometry.affine, base.geometry.shape, base.geometry.frame_of_reference_uid, uids)
    instances = tuple(replace(h, sop_instance_uid=u, series_instance_uid=series_uid)
                      for h, u in zip(base.instances, uids, strict=True))
    return replace(base, series_instance_uid=series_uid, kind=kind, percent=percent, geometry=geometry,
                   instances=instances, description=f"fake {kind.value} {percent}")


def fake_4d_index(base: StudyIndex, percents: tuple[float, ...] = (0, 20, 40, 60, 80),
                  reference_percent: float = 40) -> StudyIndex:
    """``base`` (a 3D CT index) turned into a 4DCT index with one phase per percent, all on ``base``'s grid."""
    phases = tuple(phase_series(base.reference, p) for p in percents)
    reference = next(p for p in phases if p.percent == reference_percent)
    return replace(base, phases=phases, derived=(), reference=reference)

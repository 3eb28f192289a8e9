"""The QA picture of a job (``report.png``): contours of every phase and the ITV on coronal and sagittal views through
the target, and the target's centroid trajectory over the breathing cycle; refilled phases (``model.refine``, step 5)
are dashed in the views and hollow, labelled "refilled", on the trajectory.

Matplotlib's object API (``Figure`` + Agg canvas) is used, so no global backend or pyplot state is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dicomrt.geometry import Geometry
from dicomrt.study import Study4D
from workers.results import StructureResult

_HU_WINDOW = (-1000.0, 400.0)


def qa_picture(study: Study4D, structures: Sequence[StructureResult], path: Path) -> Path:
    """Write the QA picture to ``path`` (PNG) and return it.

    ``structures``: the job's refined structures (masks (phase, z, y, x) bool on the study's grid, ITV, motion). The
    views cut through the ITV centroid of the first structure with a non-empty ITV (else the volume's centre), on the
    phase nearest the reference percent.
    """
    geometry = study.phases[0].geometry
    target = next((r for r in structures if r.itv is not None and r.itv.any()), None)
    centre = _centre(target.itv if target else None, geometry.shape)
    background = study.phases[_reference_phase(study)].volume
    figure = Figure(figsize=(15, 5.5), dpi=100)
    FigureCanvasAgg(figure)
    coronal, sagittal, trajectory = figure.subplots(1, 3)
    for axes, view in ((coronal, "coronal"), (sagittal, "sagittal")):
        _view(axes, view, background, structures, target, centre, geometry, len(study.phases))
    _trajectory(trajectory, study, target)
    study_hash = study.index.study_hash
    refilled = ", ".join(study.phases[k].label for k in target.masks.report.filled_phases) if target else ""
    figure.suptitle(f"itvsam QA — study {study_hash}, {len(study.phases)} phase(s); contours of every phase, ITV "
                    f"bold{f', refilled phase(s) {refilled} dashed' if refilled else ''} — check before clinical use")
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def _reference_phase(study: Study4D) -> int:
    percent = study.reference.percent if study.reference.percent is not None else 50.0
    return min(range(len(study.phases)), key=lambda k: abs((study.phases[k].percent or 0.0) - percent))


def _centre(mask: np.ndarray | None, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if mask is None:
        return tuple(n // 2 for n in shape)
    return tuple(round(v) for v in np.argwhere(mask).mean(axis=0))


def _axis_mm(geometry: Geometry, axis: int) -> tuple[float, float]:
    """Patient coordinate (mm) of the first and last voxel centre along index ``axis`` on its own patient axis."""
    first = geometry.index_to_patient(np.zeros((1, 3)))[0]
    last_index = np.zeros((1, 3))
    last_index[0, axis] = geometry.shape[axis] - 1
    last = geometry.index_to_patient(last_index)[0]
    patient_axis = int(np.argmax(np.abs(last - first)))
    return float(first[patient_axis]), float(last[patient_axis])


def _view(axes, view: str, background: np.ndarray, structures: Sequence[StructureResult],
          target: StructureResult | None, centre: tuple[int, int, int], geometry: Geometry, n_phases: int) -> None:
    """A coronal (z, x at the centre's y) or sagittal (z, y at the centre's x) cut, head up."""
    axis, cut, label = (1, centre[1], "x (mm, patient left →)") if view == "coronal" else \
        (2, centre[2], "y (mm, posterior →)")
    def take(volume):
        return np.take(volume, cut, axis=axis)
    z0, z1 = _axis_mm(geometry, 0)
    h0, h1 = _axis_mm(geometry, 3 - axis)
    extent = (h0, h1, z0, z1)
    axes.imshow(take(background), cmap="gray", vmin=_HU_WINDOW[0], vmax=_HU_WINDOW[1], origin="lower",
                extent=extent, aspect="equal", interpolation="nearest")
    phases = colormaps["viridis"]
    for result in structures:
        stack = result.refined
        if result is target:
            refilled = set(result.masks.report.filled_phases)
            for k in range(n_phases):
                _outline(axes, take(stack[k]), extent, phases(k / max(1, n_phases - 1)), 0.8,
                         "dashed" if k in refilled else "solid")
            _outline(axes, take(result.itv), extent, "red", 2.0)
        else:
            _outline(axes, take(stack[len(stack) // 2]), extent, np.array(result.spec.colour) / 255.0, 1.0)
    axes.set_title(f"{view} (cut at index {cut})")
    axes.set_xlabel(label)
    axes.set_ylabel("z (mm, head ↑)")


def _outline(axes, mask: np.ndarray, extent, colour, width: float, style: str = "solid") -> None:
    if mask.any():
        axes.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=width, linestyles=style,
                     origin="lower", extent=extent)


def _trajectory(axes, study: Study4D, target: StructureResult | None) -> None:
    """The target's centroid per phase: superior-inferior (z) against anterior-posterior (y), labelled by phase."""
    if target is None:
        axes.text(0.5, 0.5, "no target with an ITV found", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    # rounded as in the summary, so that the picture shows the numbers the summary gives
    centroids = np.round(target.motion.centroids_lps_mm, 3)
    present = ~np.isnan(centroids[:, 0])
    ys, zs = centroids[present, 1], centroids[present, 2]
    axes.plot(np.append(ys, ys[:1]), np.append(zs, zs[:1]), "-", color="tab:red")
    refilled = np.isin(np.arange(len(study.phases)), target.masks.report.filled_phases)[present]
    axes.plot(ys[~refilled], zs[~refilled], "o", color="tab:red")
    axes.plot(ys[refilled], zs[refilled], "o", markerfacecolor="white", markeredgecolor="tab:red")
    labels = np.array([p.label for p in study.phases])[present]
    for y, z, phase, filled in zip(ys, zs, labels, refilled, strict=True):
        axes.annotate(f"{phase} (refilled)" if filled else phase, (y, z), textcoords="offset points", xytext=(4, 4),
                      fontsize=8)
    lr, ap, si = np.round(target.motion.amplitude_mm, 3)
    axes.set_title(f"{target.spec.name} centroid: amplitude LR {lr:.1f}, AP {ap:.1f}, SI {si:.1f} mm")
    axes.set_xlabel("y (mm, posterior →)")
    axes.set_ylabel("z (mm, head ↑)")
    axes.set_aspect("equal", adjustable="datalim")

"""The writing stage, in one place for every driver (``workers.pipeline.run_job`` and ``itvsam contour``): the AIP/MIP
the study lacks (``write_derived``: they need no masks, so the job writes them while the model runs), then the
RTSTRUCTs and DICOM SEG per phase (``write_outputs``), into one output folder (``dicomrt.layout``)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from dicomrt.derived import write_projections
from dicomrt.layout import OutputLayout
from dicomrt.phases import SeriesKind
from dicomrt.provenance import Provenance
from dicomrt.rt_outputs import Margin, OutputMode, StudyMasks, write_rtstructs
from dicomrt.seg import write_segs
from dicomrt.study import SeriesInfo, Study4D


@dataclass(frozen=True)
class WrittenOutputs:
    """What ``write_outputs`` wrote: the RTSTRUCT and SEG files, the derived series, and the series the reference
    RTSTRUCT is on."""

    layout: OutputLayout
    rtstructs: tuple[Path, ...]
    segs: tuple[Path, ...]
    derived: tuple[SeriesInfo, ...]
    reference: SeriesInfo

    @property
    def files(self) -> tuple[Path, ...]:
        return self.rtstructs + self.segs


def write_derived(study: Study4D, layout: OutputLayout, provenance: Provenance) -> tuple[SeriesInfo, ...]:
    """The AIP and MIP the loaded ``study`` lacks, written into ``layout`` (none for a 3D CT)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    return tuple(write_projections(study, layout.derived, provenance))


def write_outputs(masks: StudyMasks, layout: OutputLayout, provenance: Provenance, *, mode: OutputMode,
                  seg: bool, derived: Sequence[SeriesInfo] = (), itv_margin_mm: Margin = 0.0,
                  seg_sources: Sequence[Sequence[Dataset]] | None = None) -> WrittenOutputs:
    """Write the outputs of ``masks`` (checked by ``dicomrt.rt_outputs.check_masks``) into ``layout``.

    ``derived``: the AIP/MIP ``write_derived`` wrote (the reference RTSTRUCT then goes on the written AIP), () for
    none. ``mode``: which RTSTRUCTs; ``seg``: a SEG per phase too, written in a second thread meanwhile (highdicom and
    pydicom hold the GIL most of the time, but the numpy parts of each writer overlap: ~20 % less wall time for a
    full-size study on 2 cores); ``seg_sources``: ``dicomrt.seg.phase_sources`` when already made.
    """
    layout.root.mkdir(parents=True, exist_ok=True)
    aip = next((s for s in derived if s.kind is SeriesKind.AVERAGE), None)
    reference = aip or masks.index.reference
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="itvsam-seg") as background:
        segs = background.submit(write_segs, masks, layout.root, provenance, seg_sources) if seg else None
        rtstructs = write_rtstructs(masks.index, masks, masks.specs, layout.root, mode, provenance,
                                    reference=reference, itv_margin_mm=itv_margin_mm)
        segs = segs.result() if segs is not None else []
    return WrittenOutputs(layout, tuple(rtstructs), tuple(segs), tuple(derived), reference)

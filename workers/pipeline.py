"""The job pipeline, in one place: study → SAM 3 per phase → refinement → ITV → DICOM-RT outputs, summary, QA picture.

Two drivers call ``run_job``: ``itvsam run`` (in-process, with a progress bar) and the Celery task (progress into the
job manifest); ``itvsam demo`` drives it on a phantom. Stages hand typed data to the next; only the input folder is
read and only ``out_dir`` is written:

``reading``     ``scan_study`` (the headers), then each phase's pixel data (``load_volume``) in the background
                (refusals raise ``StudyError``: bad input, never retried)
``segmenting``  ``model.segment.predict_phases``: per structure its (phase, z, y, x) uint8 evidence (the probability
                relative to the structure's threshold, the job's, else the model's calibrated one: the mask is
                evidence ≥ ``model.refine.EVIDENCE_THRESHOLD``, the weaker response is kept for refilling)
``refining``    ``model.refine.refine_from_spec`` per structure, in threads (phase-coherent temporal filter on a 4DCT,
                connectivity per spec), the ITV (``dicomrt.itv``, with the job's margin), volumes, centroids and motion
``writing``     ``dicomrt.outputs.write_derived`` (the AIP/MIP the study lacks, in the background) and
                ``write_outputs`` (RTSTRUCTs, DICOM SEG), then ``summary.json`` and ``report.png`` from the typed
                ``JobResult`` (``workers.results``)

What needs no masks runs while the model segments, in one background thread: the phases are read in order and the
model takes each as soon as it is read (``_Reading``), then the AIP/MIP are written and the SEGs' source image
headers made (``dicomrt.seg.phase_sources``); the same thread draws the QA picture while the RTSTRUCTs and SEGs are
written (``write_outputs`` writes those two in parallel too). On a GPU the model's thread mostly waits for the
device, so this work is off the job's critical path; on CPU the model has the cores and it only overlaps. Threads,
not processes: a Celery prefork pool process is daemonic and may not start processes of its own (and a process of
a job killed for its time limit must not outlive it, writing into the folder its retry uses).

``timings`` in ``summary.json``: each stage's own seconds (``reading_s``, ``model_s``, ``refining_s``, ``writing_s``;
background work counted in its stage), their sum ``total_s``, the job's ``wall_s`` and the ``overlap_s`` the
background saved (``total_s - wall_s``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dicomrt.itv import build_itv
from dicomrt.layout import OutputLayout
from dicomrt.outputs import write_derived, write_outputs
from dicomrt.provenance import Provenance
from dicomrt.reader import load_volume, scan_study
from dicomrt.rt_outputs import check_masks
from dicomrt.seg import phase_sources
from dicomrt.structures import StructureSpec
from dicomrt.study import Phase, SeriesInfo, Study4D, StudyIndex
from jobs.options import JobOptions
from model.calibration import thresholds_for
from model.identity import ModelIdentity
from model.motion import motion
from model.refine import EVIDENCE_THRESHOLD, refine_from_spec
from model.segment import Predictor, predict_phases
from workers.results import JobResult, StructureResult

logger = logging.getLogger(__name__)

# Share of the whole job each stage is given in ``Progress.fraction`` (segmenting dominates).
_SPAN = {"reading": (0.0, 0.05), "segmenting": (0.05, 0.85), "refining": (0.85, 0.9), "writing": (0.9, 1.0)}


@dataclass(frozen=True)
class Progress:
    """Where a job is: ``stage`` (reading, segmenting, refining, writing, done), ``fraction`` of the whole job
    (0..1), the phase being segmented (1-based) of ``phases``, and a short message."""

    stage: str
    fraction: float
    phase: int | None = None
    phases: int | None = None
    message: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, eq=False)
class Engine:
    """The model held once per process: a slice predictor over SAM 3 (+ merged LoRA) and its identity.

    ``predictor`` is a ``model.predictor.SlicePredictor`` (or anything with its ``predict``); ``identity`` is recorded
    with every result (its ``thresholds`` are the model's calibrated ones).
    """

    predictor: Predictor
    identity: ModelIdentity


def load_engine(model_dir: Path, adapter_dir: Path | None = None, device: str = "cpu", batch_size: int = 8) -> Engine:
    """SAM 3 from a local snapshot directory (an adapter merged on load) on ``device``: bf16 on CUDA, else float32.

    Raises ``model.sam3.ModelLoadError`` for a missing or mismatched model. Never downloads anything.
    """
    from model.network import Sam3SliceNetwork
    from model.predictor import PredictorSettings, SlicePredictor
    from model.sam3 import inference_dtype, load_sam3

    dtype = inference_dtype(device)
    loaded = load_sam3(model_dir, adapter_dir=adapter_dir, device=device, dtype=dtype)
    predictor = SlicePredictor(Sam3SliceNetwork.from_loaded(loaded),
                               PredictorSettings(batch_size=batch_size, device=str(device), dtype=dtype))
    return Engine(predictor, loaded.identity)


def run_job(study_dir: Path, out_dir: Path, engine: Engine, options: JobOptions | None = None,
            progress: ProgressCallback | None = None) -> JobResult:
    """Contour the study in ``study_dir`` and write every output into ``out_dir`` (which must be new or empty).

    Returns the typed result (its ``summary()`` is also written as ``summary.json``). Raises ``StudyError``/``RTError``
    for bad input; any other exception is a failure of the run.
    """
    options = options or JobOptions()
    layout = OutputLayout(Path(out_dir))
    if layout.root.exists() and any(layout.root.iterdir()):
        raise FileExistsError(f"output folder {layout.root} is not empty: results are never overwritten")
    report = _Reporter(progress)
    provenance = Provenance(model_identity=engine.identity.dicom_text())
    wall = time.perf_counter()

    report("reading", 0.0, "reading the study")
    index = scan_study(study_dir, study=options.study, reference_percent=options.reference_percent)
    scanning_s = time.perf_counter() - wall
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="itvsam-job")
    try:
        reading = _Reading(index, background)
        derived = background.submit(_timed, lambda: write_derived(reading.study(), layout, provenance)
                                    if options.projections else ())
        seg_sources = background.submit(_timed, lambda: phase_sources(index) if options.seg else None)

        start = time.perf_counter()
        thresholds = thresholds_for([spec.name for spec in options.template], engine.identity.thresholds,
                                    options.threshold)
        predicted = _segment(reading.volumes, index, options, engine, thresholds, report)
        model_s = time.perf_counter() - start
        study = reading.study()
        logger.info("study %s: %d phase(s) read and segmented", index.study_hash, len(study.phases))

        report("refining", 0.0, "phase-coherent filtering and connectivity")
        start = time.perf_counter()
        structures = _refine(study, options, predicted, thresholds)
        refining_s = time.perf_counter() - start

        report("writing", 0.0, "writing DICOM-RT outputs")
        start = time.perf_counter()
        checked = check_masks(index, {r.spec.name: r.refined for r in structures}, options.template)
        from workers.report import qa_picture  # matplotlib: only when writing

        picture = background.submit(qa_picture, study, structures, layout.report)  # while the DICOM is written
        (written, derived_s), (sources, sources_s) = derived.result(), seg_sources.result()
        outputs = write_outputs(checked, layout, provenance, mode=options.mode, seg=options.seg, derived=written,
                                itv_margin_mm=options.itv_margin_mm, seg_sources=sources)
        picture.result()
        writing_s = time.perf_counter() - start + derived_s + sources_s
    finally:
        background.shutdown(wait=True, cancel_futures=True)
    timings = {"reading_s": scanning_s + reading.seconds, "model_s": model_s, "refining_s": refining_s,
               "writing_s": writing_s}
    timings["total_s"] = sum(timings.values())
    timings["wall_s"] = time.perf_counter() - wall
    timings["overlap_s"] = timings["total_s"] - timings["wall_s"]
    result = JobResult(study, options, engine.identity, structures, outputs, timings)
    layout.summary.write_text(json.dumps(result.summary(), indent=2) + "\n", encoding="utf-8")
    report("done", 1.0, "finished")
    logger.info("study %s: done in %.1f s (model %.1f s)", index.study_hash, timings["wall_s"], timings["model_s"])
    return result


def _timed(work: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    return work(), time.perf_counter() - start


@dataclass(frozen=True, eq=False)
class _PendingVolume:
    """A phase's (z, y, x) HU volume being read: its shape at once (from the headers), its voxels when sliced (which
    waits for them). What ``SlicePredictor.predict_volumes`` streams."""

    shape: tuple[int, int, int]
    voxels: Future[np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: object) -> np.ndarray:
        return self.voxels.result()[key]


class _Reading:
    """The phases' pixel data read in ``background``, in phase order: ``volumes`` for the model as they come,
    ``study()`` once all are read (re-raising a refusal of any), ``seconds`` spent reading."""

    def __init__(self, index: StudyIndex, background: ThreadPoolExecutor) -> None:
        self.index, self.seconds = index, 0.0
        self.volumes = tuple(_PendingVolume(series.geometry.shape, background.submit(self._load, series))
                             for series in index.phases)

    def _load(self, series: SeriesInfo) -> np.ndarray:
        start = time.perf_counter()
        try:
            return load_volume(series)
        finally:
            self.seconds += time.perf_counter() - start

    def study(self) -> Study4D:
        return Study4D(self.index, tuple(Phase(series, volume.voxels.result())
                                         for series, volume in zip(self.index.phases, self.volumes, strict=True)))


class _Reporter:
    """Turns (stage, fraction within the stage) into ``Progress`` for the caller's callback."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback

    def __call__(self, stage: str, within: float, message: str, phase: int | None = None,
                 phases: int | None = None) -> None:
        if self.callback is None:
            return
        low, high = _SPAN.get(stage, (1.0, 1.0))
        self.callback(Progress(stage, round(low + (high - low) * within, 4), phase, phases, message))


def _segment(volumes: tuple[_PendingVolume, ...], index: StudyIndex, options: JobOptions, engine: Engine,
             thresholds: dict[str, float], report: _Reporter) -> dict[str, np.ndarray]:
    n = len(volumes)

    def on_batch(k: int, done: int, total: int) -> None:
        report("segmenting", (k + done / total) / n, f"phase {index.phases[k].label}: {done}/{total} slices", k + 1, n)

    report("segmenting", 0.0, f"phase {index.phases[0].label}", 1, n)
    return predict_phases(engine.predictor, volumes, options.template, thresholds, progress=on_batch)


def _refine(study: Study4D, options: JobOptions, predicted: dict[str, np.ndarray], thresholds: dict[str, float]
            ) -> tuple[StructureResult, ...]:
    """Per structure of the template: refined masks, motion, and for a structure with an ITV its ITV (and expanded
    ITV with the job's margin)."""
    geometry = study.phases[0].geometry

    def one(spec: StructureSpec) -> StructureResult:
        masks = refine_from_spec(spec, predicted[spec.name], geometry, options.temporal)
        itv = build_itv(masks.refined, geometry) if spec.itv else None
        expanded = build_itv(masks.refined, geometry, options.itv_margin_mm) \
            if spec.itv and options.has_margin else None
        return StructureResult(spec, thresholds[spec.name], masks, motion(masks.refined, geometry), itv, expanded)

    # one thread per core: scipy's labelling and numpy release the GIL for most of the work (the full-size
    # phantom's four structures: 4.1-5.2 s in turn, 2.4-2.9 s on 2 cores); the largest first (by a sample of the
    # first phase's mask), as the largest takes longest
    def size(spec: StructureSpec) -> int:
        return -int(np.count_nonzero(predicted[spec.name][0, ::8] >= EVIDENCE_THRESHOLD))

    with ThreadPoolExecutor(max_workers=min(len(options.template), os.cpu_count() or 1),
                            thread_name_prefix="itvsam-refine") as pool:
        done = {spec.name: pool.submit(one, spec) for spec in sorted(options.template, key=size)}
        return tuple(done[spec.name].result() for spec in options.template)

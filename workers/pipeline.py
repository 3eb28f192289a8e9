"""The job pipeline, in one place: study → SAM 3 per phase → refinement → ITV → DICOM-RT outputs, summary, QA picture.

Two drivers call ``run_job``: ``itvsam run`` (in-process, with a progress bar) and the Celery task (progress into the
job manifest). Stages hand typed data to the next; only the input folder is read and only ``out_dir`` is written:

``reading``     ``scan_study`` + ``load_study`` (refusals raise ``StudyError``: bad input, never retried)
``segmenting``  the slice predictor on every phase: per structure a (phase, z, y, x) mask (probability ≥ the
                structure's threshold, thresholded phase by phase so that a full-size study holds bool, not float,
                volumes)
``refining``    ``refine_structure`` per structure (phase-coherent temporal filter on a 4DCT, connectivity per spec),
                then volumes, centroids and motion per phase
``writing``     AIP/MIP series the study lacks, RTSTRUCTs (per phase, reference with ITV, combined), DICOM SEG per
                phase, ``summary.json`` and ``report.png``
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicomrt.derived import write_projections
from dicomrt.phases import SeriesKind
from dicomrt.provenance import Provenance, software_version
from dicomrt.reader import load_study, scan_study
from dicomrt.rt_outputs import OutputMode, check_masks, write_rtstructs
from dicomrt.seg import write_segs
from dicomrt.structures import StructureSpec, template_from_dict, thoracic_template
from dicomrt.study import Study4D, index_summary
from model.calibration import thresholds_for
from model.itv import motion
from model.refine import ConnectivitySettings, RefineSettings, TemporalSettings, refine_structure

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


@dataclass(frozen=True)
class JobOptions:
    """What a job makes. ``template``: the structures (default thoracic: GTV with ITV, lungs, heart). ``mode``: which
    RTSTRUCTs. ``seg``: DICOM SEG per phase. ``projections``: write the AIP/MIP the study lacks (the reference
    RTSTRUCT then goes on the new AIP). ``study``: the study to use when the input holds several (UID or hash).
    ``reference_percent``: the reference phase when there is no AIP. ``threshold``: on the predicted probability,
    one for every structure; None: each structure's calibrated threshold (``model.calibration``), 0.5 for a structure
    the model has none for. ``temporal``: the phase-coherent filter."""

    template: tuple[StructureSpec, ...] = field(default_factory=thoracic_template)
    mode: OutputMode = OutputMode.ALL
    seg: bool = True
    projections: bool = True
    study: str | None = None
    reference_percent: float = 50.0
    threshold: float | None = None
    temporal: TemporalSettings = field(default_factory=TemporalSettings)

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1 (or be None), got {self.threshold}")

    def thresholds(self, calibrated: dict[str, float] | None) -> dict[str, float]:
        """The threshold of every structure of the template: ``threshold`` if set, else the model's ``calibrated``
        one, else 0.5 (``model.calibration.thresholds_for``)."""
        return thresholds_for([spec.name for spec in self.template], calibrated, self.threshold)

    def to_json(self) -> dict[str, Any]:
        return {
            "template": [{"name": s.name, "prompts": list(s.prompts), "colour": list(s.colour),
                          "type": s.interpreted_type.value, "itv": s.itv, "components": s.components,
                          "min_volume_ml": s.min_volume_ml} for s in self.template],
            "mode": self.mode.value,
            "seg": self.seg,
            "projections": self.projections,
            "study": self.study,
            "reference_percent": self.reference_percent,
            "threshold": self.threshold,
            "temporal": {k: getattr(self.temporal, k) for k in self.temporal.__dataclass_fields__},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobOptions:
        """Options from ``to_json``'s form; missing keys take their defaults, unknown keys are refused."""
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown job option(s) {unknown}; expected some of {sorted(cls.__dataclass_fields__)}")
        values: dict[str, Any] = dict(data)
        if "template" in values:
            values["template"] = template_from_dict(values["template"], "options.template")
        if "mode" in values:
            values["mode"] = OutputMode(values["mode"])
        if "temporal" in values:
            values["temporal"] = TemporalSettings(**values["temporal"])
        return cls(**values)


class Engine:
    """The model held once per process: a slice predictor over SAM 3 (+ merged LoRA) and its identity.

    ``predictor`` is a ``model.predictor.SlicePredictor`` (or anything with its ``predict``); ``identity`` a
    JSON-ready dict recorded with every result (``short``: 12 hex digits).
    """

    def __init__(self, predictor: Any, identity: dict[str, Any]) -> None:
        self.predictor = predictor
        self.identity = identity


def load_engine(model_dir: Path, adapter_dir: Path | None = None, device: str = "cpu", batch_size: int = 8) -> Engine:
    """SAM 3 from a local snapshot directory (an adapter merged on load) on ``device``: bf16 on CUDA, else float32.

    Raises ``model.sam3.ModelLoadError`` for a missing or mismatched model. Never downloads anything.
    """
    import torch

    from model.network import Sam3SliceNetwork
    from model.predictor import PredictorSettings, SlicePredictor
    from model.sam3 import load_sam3

    dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    loaded = load_sam3(model_dir, adapter_dir=adapter_dir, device=device, dtype=dtype)
    predictor = SlicePredictor(Sam3SliceNetwork.from_loaded(loaded),
                               PredictorSettings(batch_size=batch_size, device=str(device), dtype=dtype))
    return Engine(predictor, loaded.identity.to_dict())


def run_job(study_dir: Path, out_dir: Path, engine: Engine, options: JobOptions = JobOptions(),
            progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Contour the study in ``study_dir`` and write every output into ``out_dir`` (which must be new or empty).

    Returns the JSON summary (also written as ``out_dir/summary.json``). Raises ``StudyError``/``RTError`` for bad
    input; any other exception is a failure of the run.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"output folder {out_dir} is not empty: results are never overwritten")
    report = _Reporter(progress)
    timings: dict[str, float] = {}

    report("reading", 0.0, "reading the study")
    start = time.perf_counter()
    index = scan_study(study_dir, study=options.study, reference_percent=options.reference_percent)
    study = load_study(index)
    timings["reading_s"] = time.perf_counter() - start
    logger.info("study %s: %d phase(s) read", index.study_hash, len(study.phases))

    start = time.perf_counter()
    predicted = _segment(study, options, engine, report)
    timings["model_s"] = time.perf_counter() - start

    report("refining", 0.0, "phase-coherent filtering and connectivity")
    start = time.perf_counter()
    refined, structures = _refine(study, options, predicted)
    for name, threshold in options.thresholds(engine.identity.get("thresholds")).items():
        structures[name]["threshold"] = threshold
    timings["refining_s"] = time.perf_counter() - start

    report("writing", 0.0, "writing DICOM-RT outputs")
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = Provenance(model_identity=_model_text(engine.identity))
    reference = None
    if options.projections:
        written = write_projections(study, out_dir / "derived", provenance)
        reference = next((s for s in written if s.kind is SeriesKind.AVERAGE), None)
    checked = check_masks(index, refined, options.template)
    rtstructs = write_rtstructs(index, checked, options.template, out_dir, options.mode, provenance,
                                reference=reference)
    segs = write_segs(checked, out_dir / "seg", provenance) if options.seg else []
    from workers.report import qa_picture

    qa_picture(study, refined, options.template, structures, out_dir / "report.png")
    timings["writing_s"] = time.perf_counter() - start
    timings["total_s"] = sum(timings.values())

    summary = {
        "software_version": software_version(),
        "model": engine.identity,
        "study": index_summary(index),
        "reference_rtstruct_series": (reference or index.reference).label,
        "structures": structures,
        "flags": _flags(structures, options.template),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "outputs": {
            "rtstruct": [p.name for p in rtstructs],
            "seg": [p.relative_to(out_dir).as_posix() for p in segs],
            "derived": sorted(p.relative_to(out_dir).as_posix() for p in out_dir.glob("derived/*") if p.is_dir()),
            "report": "report.png",
        },
        "options": options.to_json(),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    report("done", 1.0, "finished")
    logger.info("study %s: done in %.1f s (model %.1f s)", index.study_hash, timings["total_s"], timings["model_s"])
    return summary


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


def _segment(study: Study4D, options: JobOptions, engine: Engine, report: _Reporter) -> dict[str, np.ndarray]:
    """Per structure a (phase, z, y, x) bool mask: the slice predictor's probability ≥ the structure's threshold."""
    prompts = {spec.name: spec.prompts for spec in options.template}
    thresholds = options.thresholds(engine.identity.get("thresholds"))
    n = len(study.phases)
    shape = (n, *study.phases[0].geometry.shape)
    masks = {name: np.zeros(shape, dtype=bool) for name in prompts}
    for k, phase in enumerate(study.phases):
        def on_batch(done: int, total: int, k: int = k, label: str = phase.label) -> None:
            report("segmenting", (k + done / total) / n, f"phase {label}: {done}/{total} slices", k + 1, n)

        report("segmenting", k / n, f"phase {phase.label}", k + 1, n)
        for name, prediction in engine.predictor.predict(phase.volume, prompts, progress=on_batch).items():
            masks[name][k] = prediction.probability >= thresholds[name]
    return masks


def _refine(study: Study4D, options: JobOptions, predicted: dict[str, np.ndarray]
            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Refined (phase, z, y, x) masks per structure, and per structure its volumes, centroids, motion and report."""
    geometry = study.phases[0].geometry
    temporal = options.temporal if study.index.is_4d else None
    refined: dict[str, np.ndarray] = {}
    structures: dict[str, Any] = {}
    for spec in options.template:
        settings = RefineSettings(temporal=temporal, connectivity=ConnectivitySettings(
            min_volume_ml=spec.min_volume_ml, max_components=spec.components))
        masks = refine_structure(spec.name, predicted[spec.name], geometry, settings)
        refined[spec.name] = masks.refined
        moved = motion(masks.refined, geometry)
        structures[spec.name] = {
            "phases": [p.label for p in study.phases],
            **moved.to_dict(),
            "refinement": masks.report.to_dict(),
        }
        if spec.itv:
            itv = masks.refined.any(axis=0)
            structures[spec.name]["itv"] = {"name": spec.itv_name,
                                            "volume_ml": round(float(itv.sum()) * _voxel_ml(geometry), 4)}
    return refined, structures


def _model_text(identity: dict[str, Any]) -> str:
    """The model as written into every DICOM object (a LO value, ≤ 64 characters): its hash, and the head of its
    label (e.g. "PHANTOM MODEL") so that a phantom model's contours say so inside the planning system too."""
    label = str(identity.get("label") or "").split(":")[0].strip()
    return (f"itvsam SAM3 {identity['short']}" + (f" {label}" if label else ""))[:64]


def _flags(structures: dict[str, Any], template: tuple[StructureSpec, ...]) -> list[str]:
    """What a physicist should look at before using the contours: empty phases, refilled phases, removed artefacts,
    and, for a target, components removed beyond its template's object count (a second lesion?)."""
    flags = []
    specs = {spec.name: spec for spec in template}
    for name, summary in structures.items():
        phases, report = summary["phases"], summary["refinement"]
        empty = [phases[k] for k, v in enumerate(summary["volumes_ml"]) if v == 0]
        if empty:
            flags.append(f"{name}: empty in {len(empty)} of {len(phases)} phase(s) ({', '.join(empty)})")
        if report["filled_phases"]:
            flags.append(f"{name}: missing in phase(s) {', '.join(phases[k] for k in report['filled_phases'])}, "
                         f"filled by interpolation between neighbouring phases")
        if sum(report["removed_temporal"]):
            flags.append(f"{name}: {sum(report['removed_temporal'])} component(s) present in too few phases removed")
        extra = [phases[k] for k, n in enumerate(report["removed_extra"]) if n]
        if specs[name].itv and extra:
            flags.append(f"{name}: {sum(report['removed_extra'])} smaller component(s) in {len(extra)} phase(s) "
                         f"removed beyond the template's {specs[name].components} object(s): check for another lesion")
    return flags


def _voxel_ml(geometry) -> float:
    return abs(float(np.linalg.det(geometry.affine[:3, :3]))) / 1000.0

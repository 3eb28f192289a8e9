"""``itvsam demo``: the whole job on a phantom 4DCT with the shipped phantom model, scored against the exact truth.

1. A phantom 4DCT (``dicomrt.phantom``, small size, 10 phases, a sorting and a duplicate artefact, an AIP) is written
   as DICOM files, with a seed that the phantom model never saw in training (checked against its training record).
2. ``workers.pipeline.run_job`` contours it with the phantom model (``model/phantom_model``) exactly as ``itvsam run``
   would: SAM 3 per phase, phase-coherent refinement, ITV, RTSTRUCTs, SEG, report.
3. The delivered RTSTRUCTs are read back and rasterised (``dicomrt.rtstruct_read``): each phase's structures from its
   per-phase RTSTRUCT, the ITV from the reference RTSTRUCT (on the AIP). Dice and HD95 against the phantom's truth
   (per phase, then the mean over phases) and the ITV's Dice/HD95 against the union of the true GTV over phases.

The phantom model is for trying and commissioning the workflow on phantoms, NOT for patients.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicomrt.layout import OutputLayout
from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from dicomrt.reader import scan_study
from dicomrt.rtstruct_read import match_series, rasterise_roi, read_rtstruct
from model.metrics import dice, hd95
from workers.results import JobResult

PHANTOM_MODEL_DIR = Path(__file__).resolve().parents[1] / "model" / "phantom_model"
DEMO_SEED = 7
DEMO_ARTIFACTS = ("sorting", "duplicate")


@dataclass(frozen=True)
class DemoResult:
    """``structures``: name → {dice, hd95_mm} (means over phases; ``ITV`` for the union of the GTV over phases);
    ``per_phase``: name → per-phase Dice; ``job``: the job's result; ``seconds``: wall time of the whole demo."""

    seed: int
    out_dir: Path
    structures: dict[str, dict[str, float]]
    per_phase: dict[str, list[float]] = field(repr=False)
    job: JobResult = field(repr=False)
    seconds: float = 0.0


def _finite_mean(values: list[float]) -> float:
    """Mean of the defined values (HD95 is NaN in a phase where one mask is empty); NaN when none is."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def training_seeds(model_dir: Path) -> set[int]:
    """The phantom seeds a model was trained or validated on (from its ``training_record.json``; empty if none)."""
    path = Path(model_dir) / "training_record.json"
    if not path.is_file():
        return set()
    data = json.loads(path.read_text(encoding="utf-8")).get("data", {})
    return {int(s) for key in ("train_seeds", "validation_seeds") for s in data.get(key, [])}


def run_demo(out_dir: Path, *, seed: int = DEMO_SEED, model_dir: Path = PHANTOM_MODEL_DIR,
             progress: Callable[[Any], None] | None = None) -> DemoResult:
    """Run the demo into ``out_dir`` (new or empty): ``study/`` (the phantom's DICOM and truth), ``result/`` (the job's
    outputs) and ``demo_metrics.json``. Refuses a seed the model was trained or validated on."""
    from workers.pipeline import Progress, load_engine, run_job  # torch

    start = time.perf_counter()
    used = training_seeds(model_dir)
    if seed in used:
        raise ValueError(f"seed {seed} was used to train or validate the model in {model_dir}; choose another "
                         f"(used: {sorted(used)})")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"demo output folder {out_dir} is not empty")
    phantom = generate_phantom(PhantomConfig(seed=seed, artifacts=DEMO_ARTIFACTS))
    files = write_phantom(phantom, out_dir / "study", vendor="desc-t", aip=True)
    if progress is not None:
        progress(Progress("reading", 0.0, message="loading the model"))
    engine = load_engine(Path(model_dir))
    job = run_job(files.dicom_dir, out_dir / "result", engine, progress=progress)
    result = OutputLayout(out_dir / "result")

    index = scan_study(files.dicom_dir)
    spacing = tuple(float(s) for s in phantom.geometry.spacing_mm)
    per_phase: dict[str, list[float]] = {name: [] for name in phantom.truth}
    distances: dict[str, list[float]] = {name: [] for name in phantom.truth}
    for path in result.phase_rtstructs():
        content = read_rtstruct(path)
        series, _ = match_series(content, index.phases)
        k = next(i for i, p in enumerate(index.phases) if p.series_instance_uid == series.series_instance_uid)
        for name in per_phase:
            predicted = rasterise_roi(content.roi(name), series.geometry).mask
            per_phase[name].append(dice(predicted, phantom.truth[name][k]))
            distances[name].append(hd95(predicted, phantom.truth[name][k], spacing))
    reference = read_rtstruct(result.reference_rtstruct)
    itv = rasterise_roi(reference.roi("ITV"), index.phases[0].geometry).mask
    structures = {name: {"dice": float(np.mean(values)), "hd95_mm": _finite_mean(distances[name])}
                  for name, values in per_phase.items()}
    structures["ITV"] = {"dice": dice(itv, phantom.itv), "hd95_mm": hd95(itv, phantom.itv, spacing)}
    seconds = time.perf_counter() - start
    record = {"seed": seed, "artifacts": list(DEMO_ARTIFACTS), "model": job.identity.to_dict(),
              "structures": structures, "per_phase_dice": per_phase, "seconds": round(seconds, 1),
              "timings": {k: round(v, 3) for k, v in job.timings.items()},
              "statement": "phantom model on a synthetic phantom: for trying and commissioning the workflow, "
                           "not for patients"}
    (out_dir / "demo_metrics.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return DemoResult(seed, out_dir, structures, per_phase, job, seconds)

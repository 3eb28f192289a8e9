"""Benchmark: one whole job (``workers.pipeline.run_job``) on a full-size phantom 4DCT, stage by stage.

Two runs, each in a fresh process (so its peak RSS is its own), on the phantom of ``--seed`` (10 phases of 120 × 512²
at ``--size full``) written once into ``--work`` (a study already there is reused, as is the recording with
``--skip-cpu``):

``cpu``     the phantom model (``--model``) on this machine's CPU, as ``itvsam run`` would run it; its per-phase
            output is recorded (the uint8 evidence the pipeline makes of it) into ``--work``.
``gpu-like`` the same job with the model replaced by that recording, handed out at the pace of a GPU (``--gpu-s``
            seconds for the whole study: ~20 s on one H200, SAM 3's ~30 ms per image bettered by batching in bf16;
            spread over the slices and slept, so the CPU is free as it is while a GPU computes): every stage but
            the model is the real one, on the same masks, and the job's wall time against the model's shows what
            the CPU adds to it.

Prints per run the stage table (``summary.json``'s timings: each stage's own seconds, work done in the background
while the model runs counted in its stage), the wall time of ``run_job``, the overlap (the sum of the stages minus
the wall time), the non-model work (reading + refining + writing), what the job adds to the model's time (wall -
model) and the peak RSS.
Asserts nothing.

    python bench/bench_job.py [--size full|medium|small] [--seed 9] [--gpu-s 20] [--work DIR] [--skip-cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.refine import EVIDENCE_THRESHOLD, to_evidence  # noqa: E402


@dataclass(frozen=True)
class _Replayed:
    probability: np.ndarray


class RecordingPredictor:
    """The real predictor; each phase's output is also saved as the pipeline's evidence of it."""

    def __init__(self, predictor, thresholds: Mapping[str, float], folder: Path) -> None:
        self.predictor, self.thresholds, self.folder = predictor, thresholds, folder

    def predict_volumes(self, volumes: Sequence[np.ndarray], structures: Mapping[str, Sequence[str]],
                        progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, Mapping]]:
        for k, prediction in self.predictor.predict_volumes(volumes, structures, progress):
            for name, p in prediction.items():
                np.save(self.folder / f"phase{k}_{name}.npy", to_evidence(p.probability, self.thresholds[name]))
            yield k, prediction


class ReplayPredictor:
    """A recording handed back at ``seconds_per_slice``: probabilities that give the recorded evidence exactly
    (``(evidence + 0.5) × threshold / EVIDENCE_THRESHOLD``), ~0.06 s per phase and structure, about what copying a
    GPU's result to the host costs, so that the replay itself takes little of the CPU the rest of the job runs on."""

    def __init__(self, thresholds: Mapping[str, float], folder: Path, seconds_per_slice: float) -> None:
        self.thresholds, self.folder, self.seconds_per_slice = thresholds, folder, seconds_per_slice

    def _probability(self, k: int, name: str) -> np.ndarray:
        scale = np.float32(self.thresholds[name] / EVIDENCE_THRESHOLD)
        probability = np.multiply(np.load(self.folder / f"phase{k}_{name}.npy"), scale, dtype=np.float32)
        probability += np.float32(0.5) * scale
        return np.minimum(probability, np.float32(1.0), out=probability)

    def predict_volumes(self, volumes: Sequence[np.ndarray], structures: Mapping[str, Sequence[str]],
                        progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, Mapping]]:
        start, done, total = time.perf_counter(), 0, sum(len(v) for v in volumes)
        for k, volume in enumerate(volumes):
            volume[-1]  # the pipeline may still be reading it: a real model waits for its slices too
            prediction = {name: _Replayed(self._probability(k, name)) for name in structures}
            done += len(volume)
            time.sleep(max(0.0, start + done * self.seconds_per_slice - time.perf_counter()))
            if progress is not None:
                progress(done, total)
            yield k, prediction


def child(mode: str, study: Path, out: Path, model: Path, recorded: Path, gpu_s: float) -> None:
    """One job in this process; prints its timings and peak RSS as one JSON line."""
    from dicomrt.structures import thoracic_template
    from model.calibration import thresholds_for
    from workers.pipeline import Engine, load_engine, run_job

    engine = load_engine(model)
    thresholds = thresholds_for([s.name for s in thoracic_template()], engine.identity.thresholds, None)
    if mode == "cpu":
        recorded.mkdir(parents=True, exist_ok=True)
        predictor = RecordingPredictor(engine.predictor, thresholds, recorded)
    else:
        slices = sum(1 for _ in (study / "dicom").rglob("*.dcm"))
        predictor = ReplayPredictor(thresholds, recorded, gpu_s / slices)
    start = time.perf_counter()
    result = run_job(study / "dicom", out, Engine(predictor, engine.identity))
    wall = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"timings": result.timings, "wall_s": wall, "rss_gb": rss}))


def table(mode: str, figures: dict) -> None:
    timings = figures["timings"]
    stages = [k for k in ("reading_s", "model_s", "refining_s", "writing_s") if k in timings]
    print(f"{mode}:")
    for stage in stages:
        print(f"  {stage[:-2]:>10} {timings[stage]:7.2f} s")
    summed = sum(timings[s] for s in stages)
    wall = figures["wall_s"]
    print(f"  {'sum':>10} {summed:7.2f} s   wall {wall:.2f} s   overlap {summed - wall:.2f} s")
    print(f"  non-model work (reading + refining + writing) {summed - timings['model_s']:.2f} s   "
          f"wall - model {wall - timings['model_s']:.2f} s   peak RSS {figures['rss_gb']:.2f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=["full", "medium", "small"])
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--model", type=Path, default=ROOT / "model" / "phantom_model")
    parser.add_argument("--gpu-s", type=float, default=20.0, help="model seconds for the whole study, gpu-like run")
    parser.add_argument("--work", type=Path, help="keeps the study and the recording between runs")
    parser.add_argument("--skip-cpu", action="store_true", help="reuse the recording in --work")
    parser.add_argument("--child", choices=["cpu", "gpu-like"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work / "study", args.out, args.model, args.work / "recorded", args.gpu_s)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        study = work / "study"
        if not (study / "dicom").is_dir():
            from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom

            write_phantom(generate_phantom(PhantomConfig(seed=args.seed, size=args.size)), study, vendor="desc-t")
        print(f"phantom {args.size} seed {args.seed}, model {args.model.name}, gpu-like model time {args.gpu_s} s")
        modes = ["gpu-like"] if args.skip_cpu else ["cpu", "gpu-like"]
        for mode in modes:
            out = Path(tempfile.mkdtemp(dir=work, prefix=f"out-{mode}-"))
            run = subprocess.run([sys.executable, __file__, "--child", mode, "--work", str(work), "--out", str(out),
                                  "--model", str(args.model), "--gpu-s", str(args.gpu_s)],
                                 capture_output=True, text=True, check=False)
            if run.returncode:
                sys.exit(f"{mode} run failed:\n{run.stderr[-4000:]}")
            table(mode, json.loads(run.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()

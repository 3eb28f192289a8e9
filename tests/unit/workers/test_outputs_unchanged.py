"""A whole job's outputs stay the same, file by file, when the code is only made faster.

The job (every output: per-phase, reference and combined RTSTRUCTs with an expanded ITV, SEG per phase, AIP/MIP,
summary, QA picture) runs on a small phantom with a predictor that makes noisy, imperfect probabilities from the
phantom's truth (blurred edges, specks, a dropout, a transient, a weak response): each file's canonical digest
(``tests.support.canonical``: equal after parsing, our UIDs and dates renamed) must be the one recorded in
``tests/data/job_outputs.json``, which was written by the code before the performance work (issue 16).

Regenerate deliberately, only for an intended change of the outputs:
``python -m tests.unit.workers.test_outputs_unchanged`` (prints the digests of the current code).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy import ndimage

from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from jobs.options import JobOptions
from model.identity import ModelIdentity
from tests.support.canonical import output_digests
from workers.pipeline import Engine, run_job

RECORDED = Path(__file__).resolve().parents[2] / "data" / "job_outputs.json"
THRESHOLDS = {"GTV": 0.5, "Lung_L": 0.5, "Lung_R": 0.45, "Heart": 0.55}


class NoisyTruthPredictor:
    """Seeded, deterministic probabilities: each structure's truth blurred (σ 1 voxel), scaled, plus noise; the
    GTV drops to a weak response in phase 4 and has a transient blob in phase 7; the lungs get specks."""

    def __init__(self, truth: dict[str, np.ndarray]) -> None:
        self.truth = truth

    def predict_volumes(self, volumes_hu, prompts, progress=None):
        total, done = sum(len(v) for v in volumes_hu), 0
        for k, volume in enumerate(volumes_hu):
            rng = np.random.default_rng(100 + k)
            prediction = {}
            for name in prompts:
                p = ndimage.gaussian_filter(self.truth[name][k].astype(np.float32), 1.0) * 0.95
                p += rng.normal(0.0, 0.08, p.shape).astype(np.float32)
                if name == "GTV" and k == 4:
                    p *= 0.8  # a dropout with a sub-threshold response left
                if name == "GTV" and k == 7:
                    p[30:33, 100:104, 20:24] = 0.9
                if name.startswith("Lung"):
                    p[rng.random(p.shape) < 2e-5] = 0.99
                prediction[name] = SimpleNamespace(probability=np.clip(p, 0.0, 1.0))
            done += len(volume)
            if progress is not None:
                progress(done, total)
            yield k, prediction


def job_digests(root: Path) -> dict[str, str]:
    phantom = generate_phantom(PhantomConfig(seed=5))
    files = write_phantom(phantom, root / "study", vendor="desc-t")
    identity = ModelIdentity("0" * 64, "1" * 64, label="PHANTOM MODEL: outputs-unchanged test",
                             thresholds=THRESHOLDS)
    options = JobOptions(mode="all", seg=True, projections=True, itv_margin_mm=5.0)
    run_job(files.dicom_dir, root / "out", Engine(NoisyTruthPredictor(phantom.truth), identity), options)
    return output_digests(root / "out", files.dicom_dir)


def test_every_output_is_the_one_recorded_before(tmp_path):
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))
    digests = job_digests(tmp_path)
    assert sorted(digests) == sorted(recorded)
    changed = sorted(name for name in recorded if digests[name] != recorded[name])
    assert not changed, f"outputs differ from the recorded ones: {changed}"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        sys.stdout.write(json.dumps(job_digests(Path(tmp)), indent=1, sort_keys=True) + "\n")

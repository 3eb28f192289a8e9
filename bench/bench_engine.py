"""The segmentation engine on CPU with the tiny SAM 3: slice-predictor throughput, and instance vs semantic masks.

Throughput (default): the tiny model (``model.tiny``, random weights) runs the production slice predictor over one
phase of a phantom 4DCT (``--size small``: 44 slices of 128², ``full``: 120 of 512²) with the default thoracic
prompts (5 prompts, 4 structures) at each batch size; prints slices/s and ms per slice. Model time only.

``--pipeline``: the whole job (``workers.pipeline.run_job``) on a phantom 4DCT of ``--size`` with the tiny model;
prints the seconds of each stage, the model's time separate from everything else. (Random weights give noisy,
large masks: the writing stage is slower than with a trained model.)

``--mask-source``: which SAM 3 output should make a structure's mask. The tiny model is trained from scratch for
``--steps`` steps on the phantom of seed 0 (all phases; Heart, Lung_L, Lung_R, GTV; the semantic head, the
score-weighted union of the instance masks and the presence head are all supervised with equal weight), then the
predictor runs on the phantom of seed 1 (phases 0 % and 50 %) once per ``MaskSource``; prints Dice per structure.

    python bench/bench_engine.py [--size small|full] [--batches 1 8 32] [--threads 1]
    python bench/bench_engine.py --mask-source [--steps 300]
    python bench/bench_engine.py --pipeline [--size full]

``model.predictor``'s docstring records the measured numbers and the decision they led to.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from model.metrics import dice
from model.network import MaskSource, Sam3SliceNetwork
from model.predictor import PredictorSettings, SlicePredictor
from model.preprocess import ct_to_images, masks_to_model_grid
from model.sam3 import load_sam3
from model.tiny import write_tiny_checkpoint

STRUCTURES = {"GTV": ["gross tumor volume", "lung tumor"], "Lung_L": ["left lung"], "Lung_R": ["right lung"],
              "Heart": ["heart"]}


def phantom(seed: int, size: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(phase, z, y, x) HU and truth masks of a phantom."""
    try:
        from dicomrt.phantom import PhantomConfig, generate_phantom
    except ImportError:
        from dicomrt.phantom.config import PhantomConfig
        from dicomrt.phantom.generate import generate_phantom
    p = generate_phantom(PhantomConfig(seed=seed, size=size))
    return np.asarray(p.hu), {k: np.asarray(v) for k, v in p.truth.items()}


def throughput(model_dir: Path, size: str, batches: list[int]) -> None:
    hu, _ = phantom(0, size)
    volume = hu[0]
    network = Sam3SliceNetwork.from_loaded(load_sam3(model_dir))
    SlicePredictor(network, PredictorSettings(batch_size=2)).predict(volume[:2], STRUCTURES)  # warm-up
    n_prompts = sum(len(p) for p in STRUCTURES.values())
    print(f"tiny SAM 3 slice predictor on CPU ({torch.get_num_threads()} threads): phantom {size}, "
          f"{volume.shape[0]} slices of {volume.shape[1]}x{volume.shape[2]}, {len(STRUCTURES)} structures, "
          f"{n_prompts} prompts")
    print(f"{'batch':>5} {'seconds':>8} {'slices/s':>9} {'ms/slice':>9}")
    for batch in batches:
        predictor = SlicePredictor(network, PredictorSettings(batch_size=batch))
        start = time.perf_counter()
        predictor.predict(volume, STRUCTURES)
        seconds = time.perf_counter() - start
        print(f"{batch:>5} {seconds:>8.2f} {volume.shape[0] / seconds:>9.1f} {1000 * seconds / volume.shape[0]:>9.2f}")


def train(model_dir: Path, steps: int, batch: int, seed: int = 0) -> Sam3SliceNetwork:
    """Train the tiny model from its random weights on the seed-0 phantom (all heads supervised)."""
    hu, truth = phantom(0, "small")
    loaded = load_sam3(model_dir)
    model, tokenizer, spec = loaded.model.train(), loaded.tokenizer, loaded.image_spec
    slices = hu.reshape(-1, *hu.shape[2:])
    targets = {name: truth[name].reshape(-1, *hu.shape[2:]) for name in STRUCTURES}
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    names = list(STRUCTURES)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    start = time.perf_counter()
    for step in range(steps):
        name = names[step % len(names)]
        # half the batch where the structure is present, half anywhere (so that absence is learned too)
        present = np.flatnonzero(targets[name].any(axis=(1, 2)))
        index = np.concatenate([rng.choice(present, batch // 2), rng.integers(0, len(slices), batch - batch // 2)])
        images = ct_to_images(slices[index], spec)
        prompt = STRUCTURES[name][step // len(names) % len(STRUCTURES[name])]
        tokens = tokenizer([prompt] * batch, padding="max_length", max_length=32, return_tensors="pt")
        out = model(pixel_values=images, input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        target = masks_to_model_grid(targets[name][index], out.semantic_seg.shape[-1])
        is_present = torch.from_numpy(targets[name][index].any(axis=(1, 2))).float()
        union = (out.pred_logits.sigmoid()[:, :, None, None] * out.pred_masks.sigmoid()).amax(dim=1)
        loss = (bce(out.semantic_seg[:, 0], target)
                + torch.nn.functional.binary_cross_entropy(union.clamp(1e-6, 1 - 1e-6), target)
                + bce(out.presence_logits[:, 0], is_present))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if (step + 1) % 50 == 0:
            print(f"  step {step + 1}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    return Sam3SliceNetwork(model.eval(), tokenizer, spec)


def compare_mask_sources(model_dir: Path, steps: int) -> None:
    network = train(model_dir, steps, batch=8)
    hu, truth = phantom(1, "small")
    print(f"Dice on the phantom of seed 1 (phases 0% and 50%) after {steps} steps; threshold 0.5")
    print(f"{'source':>10} {'gated':>5} " + " ".join(f"{name:>7}" for name in STRUCTURES) + f" {'mean':>7}")
    for gating in (False, True):
        for source in MaskSource:
            network.mask_source, network.presence_gating = source, gating
            predictor = SlicePredictor(network, PredictorSettings(batch_size=8))
            scores = {name: [] for name in STRUCTURES}
            for phase in (0, 5):
                result = predictor.predict(hu[phase], STRUCTURES)
                for name in STRUCTURES:
                    scores[name].append(dice(result[name].probability >= 0.5, truth[name][phase]))
            means = [float(np.mean(scores[name])) for name in STRUCTURES]
            print(f"{source.value:>10} {'yes' if gating else 'no':>5} " + " ".join(f"{m:>7.3f}" for m in means)
                  + f" {np.mean(means):>7.3f}")


def pipeline(model_dir: Path, size: str, work: Path) -> None:
    from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
    from workers.pipeline import load_engine, run_job

    files = write_phantom(generate_phantom(PhantomConfig(seed=21, size=size)), work / "study", vendor="desc-t")
    engine = load_engine(model_dir)
    result = run_job(files.dicom_dir, work / "out", engine)
    timings = result.timings
    shape = result.study.phases[0].geometry.shape
    print(f"pipeline on a {size} phantom, 10 phases of {shape[0]} x {shape[1]} x {shape[2]} voxels, tiny model:")
    for stage in ("reading_s", "model_s", "refining_s", "writing_s", "total_s"):
        print(f"  {stage[:-2]:>9}: {timings[stage]:7.2f} s")
    other = timings["total_s"] - timings["model_s"]
    print(f"  model {timings['model_s']:.2f} s, everything else {other:.2f} s ({other / timings['total_s']:.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "full"], default="small")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: tiny tensors gain nothing)")
    parser.add_argument("--mask-source", action="store_true", help="train briefly, compare instance vs semantic")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pipeline", action="store_true", help="time every stage of run_job")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny_checkpoint(Path(tmp) / "tiny", seed=0)
        if args.mask_source:
            compare_mask_sources(model_dir, args.steps)
        elif args.pipeline:
            pipeline(model_dir, args.size, Path(tmp))
        else:
            throughput(model_dir, args.size, args.batches)


if __name__ == "__main__":
    main()

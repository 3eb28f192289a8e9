"""Full-size SAM 3 (random weights, official config) on CUDA: per-slice latency and slices/s, one table.

Builds ``Sam3Model(Sam3Config())`` — the official architecture (840 M parameters) with random weights, nothing
downloaded — in bf16, and runs the production slice predictor (``model.predictor.SlicePredictor``: HU windows →
images, the image encoder once per slice, every prompt decoded on the same features, maps resized back to 512 × 512)
on a synthetic CT volume, at each image size (1008 px, the official one, and 504 px: same weights, config
``image_size`` and ``backbone_feature_sizes`` changed) and batch size (1, 8, 32). Reported per row: the image
encoder alone (ms per slice), the whole predictor (ms per slice, slices/s) and the peak GPU memory. The predictor
halves a batch that runs out of memory; the batch actually used is printed.

    python bench/gpu_bench.py                       # CUDA: 1008 and 504 px, batches 1/8/32, bf16, 4 prompts
    python bench/gpu_bench.py --sizes 1008 --batches 8 --prompts 6 --slices 64
    python bench/gpu_bench.py --cpu-smoke           # CI: tiny config on CPU, batches 1 and 2, a few seconds

``--job``: the whole job instead (``workers.pipeline.run_job``, what the worker runs), on the full-size phantom 4DCT
(``itvsam phantom --size full``: 10 phases of 120 × 512²) with the official architecture at 1008 px written in the
``facebook/sam3`` layout (``model.fullsize``; or ``--model-dir``), loaded by the worker's ``load_engine``: the stage
timings of ``summary.json``, the model's slices/s over the whole 4DCT (one stream of full batches across phases), and
the mission's goal of ≤ 30 s per 4DCT.

    python bench/gpu_bench.py --job                 # CUDA: the full job, batch 32
    python bench/gpu_bench.py --job --cpu-smoke     # CI: the tiny model on a 4-slice slab, the same code path
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers import Sam3Config, Sam3Model

from model.fullsize import full_config
from model.network import Sam3SliceNetwork
from model.predictor import PredictorSettings, SlicePredictor
from model.preprocess import ImageSpec, ct_to_images
from model.tiny import tiny_config, write_tiny_tokenizer

PROMPTS = ("gross tumor volume", "left lung", "right lung", "heart", "esophagus", "spinal cord")
GOAL_S = 30.0


def synthetic_volume(slices: int, size: int, seed: int = 0) -> np.ndarray:
    """(slices, size, size) int16 HU: air, a body ellipse of soft tissue, two lungs, a bright spine."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    plane = np.full((size, size), -1000.0)
    plane[(x / 0.42) ** 2 + (y / 0.3) ** 2 <= 1] = 40.0
    plane[((np.abs(x) - 0.18) / 0.14) ** 2 + (y / 0.2) ** 2 <= 1] = -850.0
    plane[(x / 0.04) ** 2 + ((y - 0.2) / 0.04) ** 2 <= 1] = 700.0
    return (plane[None] + rng.normal(0, 20, (slices, size, size))).astype(np.int16)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs (CUDA-synchronised)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_size(config: Sam3Config, tokenizer_dir: Path, batches: list[int], args: argparse.Namespace,
               device: torch.device, dtype: torch.dtype) -> list[dict[str, object]]:
    """All batch sizes at one image size; the model is built once."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    build_start = time.perf_counter()
    with torch.device(device):
        model = Sam3Model(config)
    model = model.to(dtype=dtype).eval()
    build_s = time.perf_counter() - build_start
    image_size = int(config.vision_config.image_size)
    network = Sam3SliceNetwork(model, AutoTokenizer.from_pretrained(tokenizer_dir), ImageSpec(image_size=image_size))
    structures = {f"s{k}": [p] for k, p in enumerate(PROMPTS[:args.prompts])}
    rows = []
    for batch in batches:
        slices = max(args.slices, batch) if not args.cpu_smoke else batch
        volume = synthetic_volume(slices, args.slice_px)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        predictor = SlicePredictor(network, PredictorSettings(batch_size=batch, device=str(device), dtype=dtype))
        with torch.inference_mode():
            images = ct_to_images(volume[:batch], network.image_spec, device=device, dtype=dtype)
            encode = _timed(lambda images=images: network.encode_images(images), device, args.repeats)
        predictor.predict(volume[:batch], structures)  # warm-up (kernels, allocator)
        total = _timed(lambda volume=volume, predictor=predictor: predictor.predict(volume, structures), device,
                       args.repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        rows.append({"px": image_size, "batch": batch, "used": predictor.batch_size, "slices": slices,
                     "encoder_ms": 1000 * encode / batch, "total_ms": 1000 * total / slices,
                     "slices_s": slices / total, "peak_gib": peak, "build_s": build_s})
    return rows


def bench_job(args: argparse.Namespace, device: str, tmp: Path) -> None:
    """``--job``: one whole job on a phantom 4DCT (module docstring)."""
    import json

    from dicomrt.phantom import PhantomConfig, generate_phantom, slab, write_phantom
    from model.fullsize import write_full_checkpoint
    from model.tiny import write_tiny_checkpoint
    from workers.pipeline import load_engine, run_job

    if args.cpu_smoke:
        phantom = slab(generate_phantom(PhantomConfig(seed=4)), slices=4, step=2)  # 10 phases of 4 x 64 x 64
        study = write_phantom(phantom, tmp / "study", vendor="desc-t").dicom_dir
        model_dir = write_tiny_checkpoint(tmp / "model")
    else:
        phantom = generate_phantom(PhantomConfig(seed=9, size="full"))
        study = write_phantom(phantom, tmp / "study", vendor="desc-t").dicom_dir
        model_dir = args.model_dir or write_full_checkpoint(tmp / "sam3", image_size=args.sizes[0])
    started = time.perf_counter()
    engine = load_engine(model_dir, device=device, batch_size=args.batches[-1])
    load_s = time.perf_counter() - started
    result = run_job(study, tmp / "out", engine)
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    timings = summary["timings"]
    n_slices = sum(1 for _ in study.iterdir())
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU (tiny model, smoke test)"
    size = engine.predictor.network.image_spec.image_size
    print(f"whole job (run_job), {name}, model {model_dir.name} at {size} px, batch {args.batches[-1]}, "
          f"{n_slices} slices, load {load_s:.1f} s")
    for key in ("reading_s", "model_s", "refining_s", "writing_s", "total_s"):
        print(f"  {key[:-2]:<9} {timings[key]:8.1f} s")
    print(f"  model stream {n_slices / timings['model_s']:.1f} slices/s; {len(result.outputs.rtstructs)} RTSTRUCTs; "
          f"goal ≤ {GOAL_S:.0f} s per 4DCT: {'met' if timings['total_s'] <= GOAL_S else 'not met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1008, 504], help="image sizes in px (÷28)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--prompts", type=int, default=4, help=f"prompts per slice (≤ {len(PROMPTS)})")
    parser.add_argument("--slices", type=int, default=64, help="slices per timed volume (at least the batch)")
    parser.add_argument("--slice-px", type=int, default=512, help="CT slice size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny config on CPU, batches 1 and 2 (CI)")
    parser.add_argument("--job", action="store_true", help="the whole job on a phantom 4DCT (module docstring)")
    parser.add_argument("--model-dir", type=Path, help="--job: a model directory instead of the random checkpoint")
    args = parser.parse_args()
    if args.job:
        if not args.cpu_smoke and not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or pass --cpu-smoke")
        if args.cpu_smoke:
            torch.set_num_threads(1)
            args.batches = [8]
        with tempfile.TemporaryDirectory() as tmp:
            bench_job(args, "cpu" if args.cpu_smoke else "cuda", Path(tmp))
        return
    if args.cpu_smoke:
        device, dtype = torch.device("cpu"), torch.float32
        args.batches, args.repeats, args.slice_px, args.prompts = [1, 2], 1, 64, 2
        configs = [tiny_config()]
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or pass --cpu-smoke")
        device = torch.device("cuda")
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        configs = [full_config(size).detector_config for size in args.sizes]
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_tokenizer(tmp)
        rows = []
        for config in configs:
            rows += bench_size(config, Path(tmp), args.batches, args, device, dtype)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (tiny config, smoke test)"
    print(f"SAM 3 slice predictor, random weights, {name}, {str(dtype).removeprefix('torch.')}, "
          f"{args.prompts} prompts per slice, {args.slice_px} px slices, torch {torch.__version__}")
    header = f"{'px':>5} {'batch':>5} {'used':>4} {'slices':>6} {'encoder ms/slice':>16} {'total ms/slice':>14} " \
             f"{'slices/s':>9} {'peak GiB':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['px']:>5} {r['batch']:>5} {r['used']:>4} {r['slices']:>6} {r['encoder_ms']:>16.2f} "
              f"{r['total_ms']:>14.2f} {r['slices_s']:>9.2f} {r['peak_gib']:>8.2f}")


if __name__ == "__main__":
    main()

"""Memory and time of one LoRA training step (and one inference batch) of the official SAM 3 architecture.

The official architecture with random weights (``model.fullsize``, bf16 on disk, nothing downloaded) at each input
size, trained as ``itvsam train --mode lora`` trains it (``model.training.Trainer``: rank 8 on the ViT attention,
every structure of the thoracic template decoded on each slice) on synthetic 512² chest slices. Each configuration
runs in a process of its own, so that its peak is its own:

- ``baseline``: what the recipe was: no activation checkpointing, a CLIP forward per step;
- ``checkpointing``: ViT layers checkpointed; ``text-cache``: prompts encoded once; ``default``: both (the recipe);
- ``inference``: one batch of the production predictor (``SlicePredictor``) in the dtype the worker uses.

Per row: the slices in one forward (the micro-batch: a step of ``slices`` slices in micro-batches of m peaks like one
micro-batch of m, and takes slices/m times as long), seconds, and the peak memory above what the process held before
(the fp32 weights, the LoRA parameters and AdamW state, the cached text). On CPU that is the peak resident set size
(``VmHWM``, reset through ``/proc/self/clear_refs`` before the step) minus the resident size before it; with
``--device cuda``, ``torch.cuda.max_memory_allocated`` minus the allocation before it, and the total.

The CUDA estimate printed for CPU rows (the method the README states): weights in fp32 (4 bytes per parameter, as
training keeps them) + the LoRA state + the measured step peak × 1.15 (allocator blocks and fragmentation). bf16
autocast on CPU (``--bf16``, the default here) runs the same ops in the same dtypes as on CUDA; attention on both uses
fused kernels that never hold the full score matrix.

    python bench/bench_training_memory.py                          # CPU, bf16 autocast: 504 and 1008 px
    python bench/bench_training_memory.py --sizes 504 --configs default,baseline --slices 2
    python bench/bench_training_memory.py --device cuda --slices 4 # on a GPU: the default step of 4 slices
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CONFIGS = {"baseline": (False, False), "checkpointing": (True, False), "text-cache": (False, True),
           "default": (True, True)}
INFERENCE = "inference"
CUDA_SLACK = 1.15
GIB = 1 << 30


@dataclass(frozen=True)
class Row:
    size: int
    config: str
    slices: int
    items: int
    seconds: float
    peak_bytes: int
    held_bytes: int
    parameters: int
    trainable: int
    measure: str


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class Meter:
    """Peak memory above a baseline: torch's CUDA accounting, or the process's resident set on Linux."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.measure = "torch.cuda.max_memory_allocated" if self.cuda else "peak RSS (VmHWM) minus RSS before"

    def start(self) -> int:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.memory_allocated()
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return _status_kib("VmRSS") * 1024

    def peak(self) -> int:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return _status_kib("VmHWM") * 1024


def child(model_dir: Path, size: int, config: str, slices: int, device: str, bf16: bool) -> Row:
    """One configuration in this process: a training step, or an inference batch."""
    import numpy as np
    import torch

    from dicomrt.geometry import Geometry
    from dicomrt.structures import thoracic_template
    from model.check import chest_slice
    from model.datasets import AnnotatedVolume
    from model.network import Sam3SliceNetwork
    from model.predictor import PredictorSettings, SlicePredictor
    from model.sam3 import inference_dtype, load_sam3
    from model.samples import AugmentSettings, make_batch
    from model.training import Trainer, TrainSettings

    template = thoracic_template()
    hu = np.stack([chest_slice()] * slices)
    x = np.arange(512)[None, None, :]
    body = hu > -900
    masks = {"GTV": np.zeros_like(body), "Lung_L": (hu < -500) & (x >= 256), "Lung_R": (hu < -500) & (x < 256),
             "Heart": np.zeros_like(body)}
    masks["GTV"][:, 200:230, 150:180] = True
    masks["Heart"][:, 260:340, 230:300] = True
    geometry = Geometry(np.diag([3.0, 1.0, 1.0, 1.0]), hu.shape, "1.2.3", tuple(f"1.2.3.{z}" for z in range(slices)))
    volume = AnnotatedVolume(hu, masks, geometry, "bench")
    meter = Meter(device)
    if config == INFERENCE:
        dtype = inference_dtype(device)
        loaded = load_sam3(model_dir, device=device, dtype=dtype)
        predictor = SlicePredictor(Sam3SliceNetwork.from_loaded(loaded),
                                   PredictorSettings(batch_size=slices, device=device, dtype=dtype))
        prompts = {s.name: s.prompts for s in template}
        predictor.predict(hu[:1], prompts)  # warm-up
        held = meter.start()
        started = time.perf_counter()
        predictor.predict(hu, prompts)
        parameters = sum(p.numel() for p in loaded.model.parameters())
        return Row(size, config, slices, slices * len(template), time.perf_counter() - started, meter.peak() - held,
                   held, parameters, 0, meter.measure)
    checkpointing, cache_text = CONFIGS[config]
    with tempfile.TemporaryDirectory() as out:
        settings = TrainSettings(steps=1, epoch_steps=1, slices=slices, checkpointing=checkpointing,
                                 cache_text=cache_text, bf16=bf16, val_phases=None)
        trainer = Trainer(model_dir, [volume], [], template, Path(out), settings, device=device)
        index = trainer.index
        batch = make_batch([volume], [s.name for s in template], index,
                           np.array([index.item(0, z, 0) for z in range(slices)]), True,
                           AugmentSettings(enabled=False), torch.Generator())
        held = meter.start()
        started = time.perf_counter()
        trainer.step(batch)
        return Row(size, config, slices, len(batch.items), time.perf_counter() - started, meter.peak() - held, held,
                   sum(p.numel() for p in trainer.model.parameters()), sum(p.numel() for p in trainer.trainable),
                   meter.measure)


def cuda_estimate(row: Row) -> float:
    """GiB a CUDA run would peak at, from a CPU row (module docstring); inference holds bf16 weights."""
    if row.config == INFERENCE:
        return (row.parameters * 2 + row.peak_bytes * CUDA_SLACK) / GIB
    lora_state = row.trainable * 4 * 4  # weights, gradients, two AdamW moments in fp32
    return (row.parameters * 4 + lora_state + row.peak_bytes * CUDA_SLACK) / GIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="504,1008")
    parser.add_argument("--configs", default="default,checkpointing,text-cache,baseline,inference")
    parser.add_argument("--slices", type=int, default=1, help="slices in the measured forward (one micro-batch)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--model-dir", type=Path, help="a full-size checkpoint at the (single) size (else written)")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        row = child(args.model_dir, int(args.child[0]), args.child[1], args.slices, args.device, args.bf16)
        print("ROW " + json.dumps(row.__dict__), flush=True)
        return
    from model.fullsize import write_full_checkpoint

    rows: list[Row] = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = args.model_dir or write_full_checkpoint(Path(tmp) / f"sam3-{size}", image_size=size)
            for config in args.configs.split(","):
                command = [sys.executable, __file__, "--child", str(size), config, "--model-dir", str(model_dir),
                           "--slices", str(args.slices), "--device", args.device,
                           "--bf16" if args.bf16 else "--no-bf16"]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                lines = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
                if done.returncode or not lines:
                    print(f"{size} px {config}: failed (exit {done.returncode}): {done.stderr.strip()[-400:]}",
                          flush=True)
                    continue
                rows.append(Row(**json.loads(lines[0][4:])))
                print_row(rows[-1], args.device, header=len(rows) == 1)


def print_row(row: Row, device: str, header: bool) -> None:
    if header:
        print(f"memory: {row.measure}; {row.parameters / 1e6:.0f} M parameters, {row.trainable / 1e6:.2f} M trainable")
        extra = "CUDA est. GiB" if not device.startswith("cuda") else "CUDA total GiB"
        print(f"{'size':>5} {'run':<14} {'slices':>6} {'items':>5} {'seconds':>8} {'peak GiB':>9} {extra:>14}")
    total = cuda_estimate(row) if not device.startswith("cuda") else (row.held_bytes + row.peak_bytes) / GIB
    print(f"{row.size:>5} {row.config:<14} {row.slices:>6} {row.items:>5} {row.seconds:>8.1f} "
          f"{row.peak_bytes / GIB:>9.2f} {total:>14.1f}", flush=True)


if __name__ == "__main__":
    main()

"""The ablation, in miniature, on phantoms: few-shot LoRA, hard negatives, refinement, and the full-data reference.

Design. SAM 3's claim is that a model pretrained elsewhere, adapted with LoRA on a handful of annotated CTs and with
hard negative mining, keeps most of the accuracy of adapting on all data and loses the false positives. Here nothing
is pretrained, so the "pretrained" base is made by us on a *different phantom distribution*:

- source distribution (the base model, row 1): phantom seeds ``SOURCE_SEEDS``, no 4DCT artefacts, and a
  ``DomainShift``: contrast around air scaled by ``SOURCE_SHIFT.hu_scale`` (0.8) and offset (+100 HU), in-plane blur
  (3 mm: a much softer kernel), extra noise (40 HU) and a 25 % smaller anatomy in the field of view (``zoom`` < 1: a
  larger display FOV). The base is trained from scratch, all weights (``TrainMode.FULL``), with hard negatives.
- target distribution (rows 2-5 and every evaluation): phantoms as ``dicomrt.phantom`` makes them (sharp, standard
  contrast, FOV), with a sorting and a duplicate artefact per 4DCT, as ``itvsam demo`` uses.

Rows, all evaluated on the held-out target 4DCTs ``TEST_SEEDS`` (all 10 phases; per structure Dice, HD95, false-
positive slices; GTV per phase and ITV = union over phases):

1. base model, no adaptation;
2. + LoRA (rank 8, ViT attention q/k/v/o) on 7 annotated target volumes (7 seeds, one phase each), positives only:
   no negatives, no companions, no online mining;
3. as 2 with hard negative mining (absent and other-structure negatives, companions, online re-ranking);
4. as 3 with the pipeline's refinement (phase-coherent temporal filter + connectivity, ``model.evaluate``);
5. LoRA with hard negatives on the full target training set (``FULL_SEEDS``, all phases), without and with refinement:
   the "full data" reference for the share of accuracy kept by rows 3/4.

Each model is scored as the pipeline would use it: at its thresholds calibrated on its validation volumes
(``model.calibration``; the base on the source distribution's). Every run is seeded; the table is printed and written
as JSON and Markdown (``--out``). The shipped phantom model
(``model/phantom_model``) is not used here. Reduced sizes are selected with ``--steps-base`` / ``--steps-lora``.

    python bench/bench_training.py --out out/ablation [--threads 1] [--steps-base 2000] [--steps-lora 1000]
    python bench/bench_training.py --render out/ablation/ablation.json   # the table again, from the record
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dicomrt.structures import thoracic_template
from model.datasets import DomainShift, phantom_volumes
from model.evaluate import EvalRow, evaluate
from model.lora import LoraSettings
from model.mining import MiningSettings
from model.predictor import PredictorSettings, SlicePredictor
from model.recipes import PHANTOM_ARTIFACTS
from model.scratch import init_model_dir
from model.training import Trainer, TrainMode, TrainSettings

SOURCE_SEEDS = tuple(range(300, 308))
SOURCE_VAL_SEEDS = (390,)
SOURCE_SHIFT = DomainShift(hu_scale=0.8, hu_offset=100.0, blur_mm=3.0, noise_hu=40.0, zoom=0.75)
FEW_SEEDS = tuple(range(400, 407))  # 7 annotated volumes: one phase of each
FULL_SEEDS = tuple(range(400, 408))  # all phases of 8 4DCTs (80 volumes), the 7 few-shot seeds among them
TARGET_VAL_SEEDS = (490,)
TEST_SEEDS = (500, 501)
NO_NEGATIVES = MiningSettings(negatives=False, companions=False, online=False)


def target(seed: int, phases: tuple[int, ...] | None = None) -> list:
    return phantom_volumes(seed, thoracic_template(), artifacts=PHANTOM_ARTIFACTS, phases=phases)


def train(model_dir: Path, train_volumes: list, val_volumes: list, out: Path, settings: TrainSettings) -> Path:
    start = time.perf_counter()
    result = Trainer(model_dir, train_volumes, val_volumes, thoracic_template(), out, settings).run()
    print(f"  trained {out.name}: {settings.steps} steps in {time.perf_counter() - start:.0f} s, best epoch "
          f"{result.best_epoch}, validation mean Dice {result.best_metrics.get('mean', {}).get('dice', math.nan):.3f}",
          flush=True)
    return result.best_dir


def score(model_dir: Path, adapter: Path | None, test_volumes: list, refine: bool) -> list[EvalRow]:
    from model.network import Sam3SliceNetwork
    from model.sam3 import load_sam3

    loaded = load_sam3(model_dir, adapter_dir=adapter)
    predictor = SlicePredictor(Sam3SliceNetwork.from_loaded(loaded), PredictorSettings(batch_size=16))
    return evaluate(predictor, test_volumes, thoracic_template(), refine=refine, thresholds=loaded.identity.thresholds)


def table_row(rows: list[EvalRow]) -> dict[str, dict[str, float]]:
    """Per structure (and ITV): mean Dice, mean HD95 (defined values), false-positive slices summed over phases."""
    out: dict[str, dict[str, float]] = {}
    for name in ("GTV", "ITV", "Lung_L", "Lung_R", "Heart"):
        chosen = [r for r in rows if (r.phase == "ITV" if name == "ITV" else r.structure == name and r.phase != "ITV")]
        distances = [r.hd95_mm for r in chosen if not math.isnan(r.hd95_mm)]
        out[name] = {"dice": float(np.mean([r.dice for r in chosen])),
                     "hd95_mm": float(np.mean(distances)) if distances else math.nan,
                     "fp_slices": int(sum(r.fp_slices for r in chosen))}
    return out


def markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    names = ("GTV", "ITV", "Lung_L", "Lung_R", "Heart")
    lines = ["| model | " + " | ".join(f"{n} Dice" for n in names)
             + " | GTV HD95 mm | GTV FP slices | Heart FP slices |", "|---|" + "---|" * (len(names) + 3)]
    for label, row in table.items():
        lines.append(f"| {label} | " + " | ".join(f"{row[n]['dice']:.3f}" for n in names)
                     + f" | {row['GTV']['hd95_mm']:.1f} | {row['GTV']['fp_slices']} | {row['Heart']['fp_slices']} |")
    return "\n".join(lines)


def share_line(table: dict[str, dict[str, dict[str, float]]]) -> tuple[str, dict[str, float]]:
    few, full = table["4 + temporal filter and connectivity"], table["5 + temporal filter and connectivity"]
    share = {n: few[n]["dice"] / full[n]["dice"] if full[n]["dice"] > 0 else math.nan for n in few}
    return "share of full-data accuracy (Dice of row 4 / row 5 + refinement): " + ", ".join(
        f"{n} {v:.0%}" for n, v in share.items()), share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/ablation"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps-base", type=int, default=2000)
    parser.add_argument("--steps-lora", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--base", type=Path, default=None, help="reuse a base model trained by an earlier run")
    parser.add_argument("--render", type=Path, default=None, help="only print the table of an ablation.json")
    args = parser.parse_args()
    if args.render is not None:
        table = json.loads(args.render.read_text(encoding="utf-8"))["table"]
        print(markdown(table) + "\n\n" + share_line(table)[0])
        return
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    template = thoracic_template()
    start = time.perf_counter()

    base = args.base
    if base is None:
        print("base model: from scratch on the source distribution", flush=True)
        source = [v for s in SOURCE_SEEDS for v in phantom_volumes(s, template, shift=SOURCE_SHIFT)]
        source_val = [v for s in SOURCE_VAL_SEEDS for v in phantom_volumes(s, template, shift=SOURCE_SHIFT)]
        init = init_model_dir(args.out / "base" / "init", image_size=args.image_size, seed=0)
        base = train(init, source, source_val, args.out / "base",
                     TrainSettings(mode=TrainMode.FULL, steps=args.steps_base, epoch_steps=250, lr=2e-3, seed=0))
    few = [v for s in FEW_SEEDS for v in target(s, phases=(s % 10,))]
    full = [v for s in FULL_SEEDS for v in target(s)]
    val = [v for s in TARGET_VAL_SEEDS for v in target(s)]
    test = [v for s in TEST_SEEDS for v in target(s)]
    lora = TrainSettings(mode=TrainMode.LORA, lora=LoraSettings(rank=8, alpha=16.0), steps=args.steps_lora,
                         epoch_steps=max(1, args.steps_lora // 4), lr=2e-3, seed=0)
    print("LoRA runs on the target distribution", flush=True)
    adapters = {
        "few_plain": train(base, few, val, args.out / "lora_7_plain", replace(lora, mining=NO_NEGATIVES)),
        "few_hard": train(base, few, val, args.out / "lora_7_hard", lora),
        "full_hard": train(base, full, val, args.out / "lora_full_hard", lora),
    }
    print("evaluating on held-out target 4DCTs", TEST_SEEDS, flush=True)
    table = {
        "1 base (other distribution), no adaptation": table_row(score(base, None, test, refine=False)),
        "2 + LoRA, 7 volumes, no hard negatives": table_row(score(base, adapters["few_plain"], test, refine=False)),
        "3 + hard negative mining": table_row(score(base, adapters["few_hard"], test, refine=False)),
        "4 + temporal filter and connectivity": table_row(score(base, adapters["few_hard"], test, refine=True)),
        "5 LoRA, full training set (80 volumes)": table_row(score(base, adapters["full_hard"], test, refine=False)),
        "5 + temporal filter and connectivity": table_row(score(base, adapters["full_hard"], test, refine=True)),
    }
    line, share = share_line(table)
    text = markdown(table) + "\n\n" + line
    print(text)
    record = {"table": table, "share_of_full_data": share, "args": {k: str(v) for k, v in vars(args).items()},
              "seconds": time.perf_counter() - start,
              "design": {"source_seeds": SOURCE_SEEDS, "source_shift": SOURCE_SHIFT.__dict__, "few_seeds": FEW_SEEDS,
                         "full_seeds": FULL_SEEDS, "test_seeds": TEST_SEEDS, "artifacts": PHANTOM_ARTIFACTS}}
    (args.out / "ablation.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (args.out / "ablation.md").write_text(text + "\n", encoding="utf-8")
    print(f"done in {time.perf_counter() - start:.0f} s; wrote {args.out / 'ablation.md'}")


if __name__ == "__main__":
    main()

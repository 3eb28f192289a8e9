"""Refinement at the breathing extremes, on irregular phantoms: refilled phases and transients next to the tumour.

For each phantom (``--seeds``; irregular breathing, a ``--diameter`` mm tumour moving 22 mm superior-inferior and
7 mm left-right, on the ``--size`` grid) every phase is dropped in turn from the truth and refined as the pipeline
refines the GTV (``model.refine.refine_from_spec``); the baseline in the same run is the neighbours' shape placed at
their midpoint (how refills were made before the motion model). Then ``--transients`` seeded balls (radius 3-8 mm, their
surface 3-15 mm from the tumour's, one phase) are added to the truth, refined with the target rule (step 4 of
``model.refine``) and without it (the baseline: linking and support alone). Printed: refilled-phase Dice, ITV coverage
of the true ITV and ITV volume excess (min / mean / max over all dropped phases), and the share of transients removed
(nothing larger than the structure's minimum volume left more than one voxel from the tumour) with the worst ITV
excess.

    python bench/bench_refine.py [--seeds 4-15] [--diameter 20] [--size medium] [--transients 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from dicomrt.phantom import Breathing, PhantomConfig, PhantomSize, generate_phantom
from dicomrt.structures import TemporalSettings, thoracic_template
from model.metrics import dice
from model.refine import (
    CONNECTIVITY_26,
    ConnectivitySettings,
    RefineSettings,
    place_shape,
    refine_from_spec,
    refine_structure,
)

GTV = thoracic_template()[0]
TEMPORAL = TemporalSettings()


def seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def dropped_phases(truth: np.ndarray, geometry) -> dict[str, list[tuple[float, float, float]]]:
    """Per method, per dropped phase: (refilled-phase Dice, ITV coverage, ITV volume excess)."""
    itv = truth.any(axis=0)
    n = len(truth)
    rows: dict[str, list[tuple[float, float, float]]] = {"midpoint (before)": [], "motion model": []}
    for phase in range(n):
        predicted = truth.copy()
        predicted[phase] = False
        before, after = truth[(phase - 1) % n], truth[(phase + 1) % n]
        midpoint = place_shape([before, after], (0.5, 0.5), (_centroid(before) + _centroid(after)) / 2,
                               geometry.spacing_mm)
        baseline = predicted.copy()
        baseline[phase] = midpoint
        refined = refine_from_spec(GTV, predicted, geometry, TEMPORAL).refined
        for method, masks in (("midpoint (before)", baseline), ("motion model", refined)):
            union = masks.any(axis=0)
            rows[method].append((dice(masks[phase], truth[phase]), np.sum(union & itv) / itv.sum(),
                                 union.sum() / itv.sum() - 1))
    return rows


def transients(truth: np.ndarray, geometry, cases: int, seed: int) -> dict[str, list[tuple[bool, float]]]:
    """Per rule, per seeded transient: (removed, ITV volume excess)."""
    spacing = np.asarray(geometry.spacing_mm)
    distance = [ndimage.distance_transform_edt(~m, sampling=spacing) for m in truth]
    near = [ndimage.binary_dilation(m, CONNECTIVITY_26) for m in truth]
    min_voxels = GTV.min_volume_ml / geometry.voxel_volume_ml
    itv_voxels = truth.any(axis=0).sum()
    settings = {rule: RefineSettings(temporal=TEMPORAL, target=target, connectivity=ConnectivitySettings(
        min_volume_ml=GTV.min_volume_ml, max_components=GTV.components))
        for rule, target in (("support only (before)", False), ("target rule", True))}
    rows: dict[str, list[tuple[bool, float]]] = {rule: [] for rule in settings}
    grid = np.indices(truth.shape[1:]).transpose(1, 2, 3, 0)
    rng = np.random.default_rng(seed)
    for _ in range(cases):
        phase, gap, radius = int(rng.integers(len(truth))), rng.uniform(3, 15), rng.uniform(3, 8)
        candidates = np.argwhere(np.abs(distance[phase] - (gap + radius)) < 0.5)
        centre = candidates[rng.integers(len(candidates))]
        blob = np.sqrt((((grid - centre) * spacing) ** 2).sum(axis=-1)) <= radius
        predicted = truth.copy()
        predicted[phase] |= blob
        for rule, refine in settings.items():
            refined = refine_structure(GTV.name, predicted, geometry, refine).refined
            left = refined[phase] & blob & ~near[phase]
            rows[rule].append((bool(left.sum() < min_voxels), refined.any(axis=0).sum() / itv_voxels - 1))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seeds, default=seeds("4-15"))
    parser.add_argument("--diameter", type=float, default=20.0)
    parser.add_argument("--size", type=PhantomSize, default=PhantomSize.MEDIUM)
    parser.add_argument("--transients", type=int, default=20, help="seeded transients per phantom")
    args = parser.parse_args()
    started = time.perf_counter()
    refills: dict[str, list] = {}
    removal: dict[str, list] = {}
    for seed in args.seeds:
        phantom = generate_phantom(PhantomConfig(seed=seed, size=args.size, amplitude_si_mm=22.0, amplitude_lr_mm=7.0,
                                                 tumour_diameter_mm=args.diameter, breathing=Breathing.IRREGULAR))
        truth = phantom.truth["GTV"]
        for method, rows in dropped_phases(truth, phantom.geometry).items():
            refills.setdefault(method, []).extend(rows)
        for rule, rows in transients(truth, phantom.geometry, args.transients, seed).items():
            removal.setdefault(rule, []).extend(rows)
    print(f"irregular phantoms, seeds {args.seeds[0]}-{args.seeds[-1]}, {args.diameter:g} mm tumour, 22/7 mm SI/LR, "
          f"{args.size.value} grid")
    print(f"{'each phase dropped in turn':28s} {'refill Dice min/mean':>22s} {'ITV coverage min/mean':>22s} "
          f"{'ITV excess max':>15s}")
    for method, rows in refills.items():
        scores = np.array(rows)
        print(f"{method:28s} {scores[:, 0].min():>11.3f} / {scores[:, 0].mean():.3f} "
              f"{scores[:, 1].min():>11.4f} / {scores[:, 1].mean():.4f} {scores[:, 2].max():>+15.3f}")
    print(f"{'transients (one phase)':28s} {'removed':>22s} {'ITV excess max':>22s}")
    for rule, rows in removal.items():
        removed, excess = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
        print(f"{rule:28s} {f'{removed.mean():.1%} of {len(rows)}':>22s} {excess.max():>+22.3f}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

"""Dice and HD95, HD95 cross-checked against MedPy (an independent implementation)."""

from __future__ import annotations

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary

from model.metrics import dice, hd95
from tests.unit.model.conftest import ellipsoid, make_geometry


def test_dice_of_simple_masks() -> None:
    a = np.zeros((4, 4, 4), dtype=bool)
    b = np.zeros((4, 4, 4), dtype=bool)
    assert dice(a, b) == 1.0
    a[:2] = True
    assert dice(a, b) == 0.0
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        dice(a, b[:2])


def test_hd95_of_shifted_box_with_anisotropic_spacing() -> None:
    a = np.zeros((10, 30, 30), dtype=bool)
    a[2:8, 5:20, 5:20] = True
    b = np.roll(a, 2, axis=0)  # two slices of 2.5 mm
    assert hd95(a, b, (2.5, 1.0, 1.0)) == pytest.approx(5.0)
    assert hd95(a, a, (2.5, 1.0, 1.0)) == 0.0
    assert np.isnan(hd95(a, np.zeros_like(a), (1, 1, 1)))
    assert hd95(np.zeros_like(a), np.zeros_like(a), (1, 1, 1)) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_hd95_matches_medpy(seed: int, measured) -> None:
    rng = np.random.default_rng(seed)
    spacing = tuple(float(v) for v in rng.choice([0.8, 1.0, 1.5, 2.5, 3.0], size=3))
    geometry = make_geometry((30, 36, 36), spacing)
    extent = np.array([36 * spacing[2], 36 * spacing[1], 30 * spacing[0]])
    centre = extent * rng.uniform(0.4, 0.6, 3)
    a = ellipsoid(geometry, tuple(centre), tuple(extent * rng.uniform(0.1, 0.25, 3)))
    b = ellipsoid(geometry, tuple(centre + extent * rng.uniform(-0.08, 0.08, 3)),
                  tuple(extent * rng.uniform(0.1, 0.25, 3)))
    b[rng.integers(0, 30), :, :] = False  # a missing slice: an irregular surface
    ours = hd95(a, b, spacing)
    reference = float(medpy_binary.hd95(a, b, voxelspacing=spacing))
    assert ours == pytest.approx(reference, rel=1e-9, abs=1e-9)
    assert dice(a, b) == pytest.approx(float(medpy_binary.dc(a, b)))
    measured(f"HD95 seed {seed}, spacing {spacing} mm: ours {ours:.4f} mm, MedPy {reference:.4f} mm")

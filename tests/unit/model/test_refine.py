"""Refinement: temporal support rule, dropout filling, spatial clean-up; on moving synthetic targets and the phantom."""

from __future__ import annotations

import numpy as np
import pytest

from dicomrt.structures import TemporalSettings
from model.metrics import dice
from model.refine import (
    ConnectivitySettings,
    RefineSettings,
    fill_holes,
    keep_largest,
    longest_run,
    place_shape,
    refine_structure,
    remove_small,
    temporal_filter,
)
from tests.unit.model.conftest import ellipsoid, make_geometry, moving_tumour

GEOMETRY = make_geometry((40, 40, 40), (2.5, 2.0, 2.0))  # 100 x 80 x 80 mm


def _mean_dice(masks: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([dice(m, t) for m, t in zip(masks, truth, strict=True)]))


@pytest.mark.parametrize(("phases", "max_gap", "cyclic", "expected"), [
    ([], 1, True, 0),
    ([4], 1, True, 1),
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 0, True, 10),
    ([0, 9], 0, True, 2),  # wraps around
    ([0, 9], 0, False, 1),
    ([0, 1, 2, 4, 5], 0, True, 3),
    ([0, 1, 2, 4, 5], 1, True, 5),  # the gap at 3 is bridged; bridged phases are not counted
    ([0, 1, 2, 4, 5], 1, False, 5),
    ([1, 4, 7], 1, True, 1),
    ([0, 2, 4, 6, 8], 1, True, 5),
    ([8, 9, 0, 1, 5], 0, True, 4),
])
def test_longest_run_counts_cyclically_contiguous_phases(phases: list[int], max_gap: int, cyclic: bool,
                                                         expected: int) -> None:
    assert longest_run(phases, 10, max_gap, cyclic) == expected


def test_spatial_helpers_remove_specks_keep_largest_and_fill_holes() -> None:
    mask = np.zeros((10, 20, 20), dtype=bool)
    mask[1:8, 2:12, 2:12] = True
    mask[4, 6, 6] = False  # an enclosed hole
    mask[1:3, 15:17, 15:17] = True  # 8 voxels
    mask[8, 18, 18] = True  # 1 voxel
    cleaned, removed = remove_small(mask, 5)
    assert removed == 1 and not cleaned[8, 18, 18] and cleaned[1, 15, 15]
    largest, removed = keep_largest(mask, 1)
    assert removed == 2 and largest.sum() == 7 * 10 * 10 - 1
    assert fill_holes(largest)[4, 6, 6]
    ring = np.zeros((3, 9, 9), dtype=bool)
    ring[:, 2:7, 2:7] = True
    ring[1, 4, 4] = False
    ring[:, 4, 4] = False  # a tunnel through all slices: not a 3D hole (only a hole in each slice)
    assert not fill_holes(ring)[1, 4, 4]


def test_place_shape_recovers_a_translating_sphere_at_any_position() -> None:
    from model.refine import _centroid
    before = ellipsoid(GEOMETRY, (40, 40, 40), (9, 9, 9))
    after = ellipsoid(GEOMETRY, (40, 46, 56), (9, 9, 9))
    for target in ((40, 43, 48), (40, 50, 62)):  # between the two, and beyond both (a turning point)
        expected = ellipsoid(GEOMETRY, target, (9, 9, 9))
        placed = place_shape([before, after], (0.5, 0.5), _centroid(expected), GEOMETRY.spacing_mm)
        assert dice(placed, expected) > 0.9


def _corrupted_tumour() -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray]], np.ndarray]:
    """Truth, the corrupted prediction, the injected false positives (phase, mask), and the probability map."""
    truth, _ = moving_tumour(GEOMETRY)
    predicted = truth.copy()
    false_positives = []
    for phases, centre in (((2,), (12, 12, 20)), ((5, 6), (66, 20, 80)), ((8,), (15, 66, 30)),
                           ((9, 0), (66, 66, 15)), ((4,), (40, 40, 78))):
        blob = ellipsoid(GEOMETRY, centre, (4.5, 4.5, 5.0))
        for p in phases:
            predicted[p] |= blob
            false_positives.append((p, blob))
    predicted[3] = False  # a whole-phase dropout
    hole = ellipsoid(GEOMETRY, (40, 40, 40 + 12 * (np.cos(np.pi * 0.7) ** 2 - 0.5)), (4, 4, 4))
    predicted[7] &= ~hole  # an interior dropout
    rng = np.random.default_rng(0)
    probability = np.where(predicted, rng.uniform(0.6, 1.0, predicted.shape),
                           rng.uniform(0.0, 0.4, predicted.shape)).astype(np.float32)
    return truth, predicted, false_positives, probability


def test_temporal_filter_removes_transients_and_keeps_the_tumour_in_every_phase(measured) -> None:
    truth, predicted, false_positives, probability = _corrupted_tumour()
    refined = refine_structure("GTV", probability, GEOMETRY, RefineSettings())
    np.testing.assert_array_equal(refined.raw, predicted)
    for p, blob in false_positives:
        assert not (refined.refined[p] & blob).any(), f"false positive left in phase {p}"
    per_phase = [dice(m, t) for m, t in zip(refined.refined, truth, strict=True)]
    assert min(per_phase) > 0.85, per_phase
    assert refined.report.filled_phases == (3,)
    assert sum(refined.report.removed_temporal) == len(false_positives)
    before, after = _mean_dice(predicted, truth), _mean_dice(refined.refined, truth)
    assert after > before + 0.1
    measured(f"synthetic moving sphere, 7 transient false positives, 2 dropouts: GTV Dice (mean over 10 phases) "
             f"{before:.3f} before → {after:.3f} after refinement (min per phase {min(per_phase):.3f})")


def test_temporal_filter_links_a_fast_target_within_the_motion_tolerance() -> None:
    # a small target that jumps 12 mm per phase never overlaps itself: only the distance link keeps it
    truth = np.stack([ellipsoid(GEOMETRY, (40, 40, 20 + 12 * (p % 5) if p < 5 else 20 + 12 * (10 - p)), (3, 3, 3))
                      for p in range(10)])
    kept = temporal_filter(truth, GEOMETRY.spacing_mm, TemporalSettings(motion_tolerance_mm=10.0))
    np.testing.assert_array_equal(kept.masks, truth)
    assert kept.removed == [0] * 10
    dropped = temporal_filter(truth, GEOMETRY.spacing_mm, TemporalSettings(motion_tolerance_mm=2.0))
    assert not dropped.masks.any() and sum(dropped.removed) == 10


def test_support_threshold_and_non_cyclic_series() -> None:
    blob = ellipsoid(GEOMETRY, (40, 40, 50), (6, 6, 6))
    masks = np.zeros((10, *GEOMETRY.shape), dtype=bool)
    masks[[9, 0, 1]] = blob  # three phases across the wrap-around
    kept = temporal_filter(masks, GEOMETRY.spacing_mm, TemporalSettings(min_phases=3)).masks
    assert kept[9].any() and kept[0].any() and kept[1].any()
    kept = temporal_filter(masks, GEOMETRY.spacing_mm, TemporalSettings(min_phases=3, cyclic=False)).masks
    assert not kept.any()  # without wrap-around: runs of 1 and 2 phases
    kept = temporal_filter(masks, GEOMETRY.spacing_mm, TemporalSettings(min_phases=4)).masks
    assert not kept.any()


def test_on_a_4dct_the_component_count_keeps_whole_objects_over_the_phases() -> None:
    from scipy import ndimage

    # the target (moving) is cut in two by an artefact in phase 0; a persistent false positive elsewhere is smaller
    # than the target, but larger than either part in phase 0
    truth, _ = moving_tumour(GEOMETRY, n_phases=10)
    masks = truth.copy()
    z = np.nonzero(truth[0].any(axis=(1, 2)))[0]
    masks[0, z[len(z) // 2 - 1:len(z) // 2 + 1]] = False
    false_positive = ellipsoid(GEOMETRY, (12, 12, 15), (7, 7, 7))
    parts = np.bincount(ndimage.label(masks[0])[0].ravel())[1:]
    assert len(parts) == 2 and parts.max() < false_positive.sum() < truth[1:].sum(axis=(1, 2, 3)).min()
    masks |= false_positive
    result = refine_structure("GTV", masks, GEOMETRY, RefineSettings(
        connectivity=ConnectivitySettings(max_components=1, fill_holes=False)))
    np.testing.assert_array_equal(result.refined[1:], truth[1:])
    np.testing.assert_array_equal(result.refined[0], masks[0] & ~false_positive)  # both parts of the target
    assert result.report.removed_extra == (1,) * 10 and result.report.removed_temporal == (0,) * 10


def test_refinement_without_temporal_filter_and_component_limits() -> None:
    truth, _ = moving_tumour(GEOMETRY, n_phases=1)
    mask = truth.copy()
    mask[0] |= ellipsoid(GEOMETRY, (12, 12, 20), (3, 3, 3))  # a second, smaller component
    mask[0, 30, 35, 35] = True  # a speck of 10 µl
    probability = mask.astype(np.float32)
    result = refine_structure("Heart", probability, GEOMETRY, RefineSettings(
        temporal=None, connectivity=ConnectivitySettings(min_volume_ml=0.05, max_components=1)))
    np.testing.assert_array_equal(result.refined, truth)
    assert result.report.removed_small == (1,) and result.report.removed_extra == (1,)
    assert result.report.components == (3,)


def test_refine_refuses_a_probability_off_the_grid() -> None:
    with pytest.raises(ValueError, match=r"probability must be \(phase, z, y, x\) on the grid"):
        refine_structure("GTV", np.zeros((10, 4, 4, 4), dtype=np.float32), GEOMETRY)
    with pytest.raises(ValueError, match="min_phases"):
        TemporalSettings(min_phases=0)


def test_refinement_on_the_phantom_removes_injected_artifacts(measured) -> None:
    try:
        from dicomrt.phantom import PhantomConfig, generate_phantom
    except ImportError:
        try:
            from dicomrt.phantom.config import PhantomConfig
            from dicomrt.phantom.generate import generate_phantom
        except ImportError:
            pytest.skip("the synthetic phantom (dicomrt.phantom) is not available")
    phantom = generate_phantom(PhantomConfig(seed=3, size="small"))
    geometry = phantom.geometry
    truth = phantom.truth["GTV"]
    lungs = phantom.truth["Lung_L"] | phantom.truth["Lung_R"]
    rng = np.random.default_rng(7)
    predicted = truth.copy()
    itv_region = np.zeros(geometry.shape, dtype=bool)
    itv_region[phantom.itv] = True
    false_positives = []
    candidates = np.argwhere(lungs[0] & ~itv_region)
    for k in range(6):  # blobs in the lungs, far from the tumour, in 1–2 adjacent phases
        for _ in range(100):
            centre_index = candidates[rng.integers(len(candidates))]
            centre = geometry.index_to_patient(centre_index[None])[0]
            blob = ellipsoid(geometry, tuple(centre), (6.0, 6.0, 7.0))
            if not (blob & np.any(truth, axis=0)).any():
                break
        first = int(rng.integers(10))
        for p in sorted({first, (first + 1) % 10} if k % 2 else {first}):
            predicted[p] |= blob
            false_positives.append((p, blob))
    dropout_phase = 6
    predicted[dropout_phase] = False
    probability = predicted.astype(np.float32) * 0.9
    refined = refine_structure("GTV", probability, geometry, RefineSettings())
    for p, blob in false_positives:
        assert not (refined.refined[p] & blob & ~truth[p]).any(), f"false positive left in phase {p}"
    per_phase = [dice(m, t) for m, t in zip(refined.refined, truth, strict=True)]
    assert all(m.any() for m in refined.refined)
    assert min(per_phase) > 0.7, per_phase
    before, after = _mean_dice(predicted, truth), _mean_dice(refined.refined, truth)
    assert after > before
    measured(f"phantom seed 3 (small), {len(false_positives)} transient false positives + dropout of phase "
             f"{dropout_phase}: GTV Dice {before:.3f} before → {after:.3f} after (filled phase: "
             f"{dice(refined.refined[dropout_phase], truth[dropout_phase]):.3f})")
    organs = {"Lung_L": 1, "Lung_R": 1, "Heart": 1}
    for name, count in organs.items():
        organ = refine_structure(name, phantom.truth[name], geometry, RefineSettings(
            connectivity=ConnectivitySettings(max_components=count, fill_holes=False)))
        assert _mean_dice(organ.refined, phantom.truth[name]) > 0.999, name


@pytest.mark.parametrize("seed", range(3))
def test_fill_holes_matches_scipy(seed: int) -> None:
    from scipy import ndimage

    mask = np.random.default_rng(seed).random((12, 25, 25)) > 0.3
    np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))

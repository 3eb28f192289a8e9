"""Refinement at the breathing extremes, on the irregular phantom (a 20 mm tumour moving 22 mm superior-inferior and
7 mm left-right, turning points between phases, on the medium grid: 2.5 mm slices): every dropped phase is refilled
where the motion model puts it, so that the ITV keeps the whole excursion; transients next to the tumour are removed;
the weak response of a dropout is used first; evidence is the threshold exactly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dicomrt.phantom import Breathing, PhantomConfig, generate_phantom
from dicomrt.structures import TemporalSettings, thoracic_template
from model.metrics import dice
from model.refine import (
    CONNECTIVITY_26,
    EVIDENCE_THRESHOLD,
    HYSTERESIS_LEVEL,
    RefillSource,
    periodic_fit,
    refine_from_spec,
    to_evidence,
)

GTV = thoracic_template()[0]
TEMPORAL = TemporalSettings()
IRREGULAR = PhantomConfig(seed=4, size="medium", amplitude_si_mm=22.0, amplitude_lr_mm=7.0, tumour_diameter_mm=20.0,
                          breathing=Breathing.IRREGULAR)


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(IRREGULAR)


def _centroids_mm(masks: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    return np.array([np.argwhere(m).mean(axis=0) * spacing for m in masks])


def test_evidence_is_the_threshold_exactly_and_keeps_the_weak_response() -> None:
    rng = np.random.default_rng(0)
    for threshold in (0.5, 0.3, 0.77, 1.0, float(np.float32(0.1))):
        probability = np.concatenate([rng.random(10_000, dtype=np.float32),
                                      np.float32([threshold, 0.0, 1.0, threshold / 2])])
        evidence = to_evidence(probability, threshold)
        assert evidence.dtype == np.uint8
        np.testing.assert_array_equal(evidence >= EVIDENCE_THRESHOLD, probability >= threshold)
        weak = (probability >= threshold / 2 + 1e-6) & (probability < threshold)
        assert np.all(evidence[weak] >= HYSTERESIS_LEVEL) and np.all(evidence[weak] < EVIDENCE_THRESHOLD)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        to_evidence(np.zeros(3), 0.0)


def test_the_periodic_fit_predicts_a_phase_it_did_not_see() -> None:
    k = np.arange(10)
    angle = 2 * np.pi * k / 10
    trajectory = np.column_stack([3 + 2 * np.cos(angle) + 0.5 * np.sin(2 * angle), np.sin(angle),
                                  np.full(10, 7.0)])
    for missing in range(10):
        seen = [p for p in k if p != missing]
        fit = periodic_fit(seen, trajectory[seen], 10, [missing])
        np.testing.assert_allclose(fit.positions[0], trajectory[missing], atol=1e-9)
        np.testing.assert_allclose(fit.error, 0.0, atol=1e-9)
    # a cusp-like trace (cos^4) that no low-order series holds exactly: a small, stated error, far below the midpoint's
    trace = 20 * np.cos(np.pi * k / 10) ** 4
    column = np.column_stack([trace, trace, trace])
    fit = periodic_fit(k[1:], column[1:], 10, [0])
    assert abs(fit.positions[0, 0] - 20) < 2.0 < abs((column[1, 0] + column[9, 0]) / 2 - 20)
    assert 0 < fit.error[0] < 2.0
    assert periodic_fit([0, 1, 2], column[:3], 10, [5]) is None  # too few phases for a periodic model


def test_the_irregular_phantom_has_turning_points_beyond_both_neighbours(phantom) -> None:
    centroids = _centroids_mm(phantom.truth["GTV"], phantom.geometry.spacing_mm)
    midpoint_error = np.abs(centroids - (np.roll(centroids, 1, axis=0) + np.roll(centroids, -1, axis=0)) / 2)
    assert midpoint_error[:, 0].max() > 5.0  # superior-inferior, mm: the failure this suite guards against


def test_truth_refined_is_the_truth(phantom) -> None:
    refined = refine_from_spec(GTV, phantom.truth["GTV"], phantom.geometry, TEMPORAL)
    np.testing.assert_array_equal(refined.refined, phantom.truth["GTV"])
    assert refined.report.refills == () and sum(refined.report.removed_excess) == 0


def test_a_dropped_phase_is_refilled_where_the_motion_puts_it_and_the_itv_keeps_the_excursion(phantom, measured
                                                                                             ) -> None:
    truth = phantom.truth["GTV"]
    itv = truth.any(axis=0)
    centroids = _centroids_mm(truth, phantom.geometry.spacing_mm)
    rows = []
    for phase in range(len(truth)):
        predicted = truth.copy()
        predicted[phase] = False
        result = refine_from_spec(GTV, predicted, phantom.geometry, TEMPORAL)
        (refill,) = result.report.refills
        assert refill.phase == phase and refill.source is RefillSource.MOTION  # bool masks: no evidence to use
        others = np.delete(centroids, phase, axis=0)
        beyond = np.maximum(others.min(axis=0) - centroids[phase], centroids[phase] - others.max(axis=0)).max()
        if beyond > 2.0:  # well beyond the seen positions (mm): the refill must say it lies at an extreme
            assert refill.at_extreme, phase
        refined_itv = result.refined.any(axis=0)
        rows.append((dice(result.refined[phase], truth[phase]), np.sum(refined_itv & itv) / itv.sum(),
                     refined_itv.sum() / itv.sum() - 1))
    scores = np.array(rows)
    assert scores[:, 0].min() >= 0.85, scores[:, 0]
    assert scores[:, 1].min() >= 0.98, scores[:, 1]
    assert scores[:, 2].max() <= 0.10, scores[:, 2]
    measured(f"irregular phantom (20 mm tumour, 22/7 mm SI/LR), each phase dropped in turn: refilled-phase Dice "
             f"min {scores[:, 0].min():.3f} (mean {scores[:, 0].mean():.3f}), ITV coverage min "
             f"{scores[:, 1].min():.4f}, ITV volume excess max {scores[:, 2].max():+.3f}")


def test_transients_next_to_the_tumour_are_removed_and_the_tumour_never_is(phantom, measured) -> None:
    """Seeded cases: a ball of radius 3-8 mm whose surface lies 3-15 mm from the tumour's, in one phase. Removed:
    nothing of it larger than the structure's minimum volume stays more than one voxel from the true tumour."""
    truth, geometry = phantom.truth["GTV"], phantom.geometry
    spacing = np.asarray(geometry.spacing_mm)
    distance = [ndimage.distance_transform_edt(~m, sampling=spacing) for m in truth]
    near_tumour = [ndimage.binary_dilation(m, CONNECTIVITY_26) for m in truth]
    min_voxels = GTV.min_volume_ml / geometry.voxel_volume_ml
    rng = np.random.default_rng(17)
    removed, cases, worst_tumour, worst_excess = 0, 40, 1.0, 0.0
    for _ in range(cases):
        phase, gap, radius = int(rng.integers(len(truth))), rng.uniform(3, 15), rng.uniform(3, 8)
        candidates = np.argwhere(np.abs(distance[phase] - (gap + radius)) < 0.5)
        centre = candidates[rng.integers(len(candidates))]
        blob = ndimage.distance_transform_edt(~_point(geometry.shape, centre), sampling=spacing) <= radius
        predicted = truth.copy()
        predicted[phase] |= blob
        result = refine_from_spec(GTV, predicted, geometry, TEMPORAL)
        left = result.refined[phase] & blob & ~near_tumour[phase]
        removed += int(left.sum() < min_voxels)
        worst_tumour = min(worst_tumour, min(dice(r, t) for r, t in zip(result.refined, truth, strict=True)))
        worst_excess = max(worst_excess, result.refined.any(axis=0).sum() / truth.any(axis=0).sum() - 1)
    assert removed / cases >= 0.95
    assert worst_tumour >= 0.95  # every phase of the tumour kept, whatever the transient
    measured(f"irregular phantom, {cases} seeded transients (radius 3-8 mm, 3-15 mm from the tumour, one phase): "
             f"{removed / cases:.1%} removed; tumour Dice min {worst_tumour:.3f}; ITV excess max {worst_excess:+.3f}")


def _point(shape: tuple[int, int, int], index: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(index)] = True
    return mask


@pytest.mark.parametrize("shift_voxels", [0, 1])
def test_a_dropout_with_a_weak_response_is_refilled_from_that_response(phantom, shift_voxels: int) -> None:
    """The model's probability in the dropped phase is 0.35 on the tumour (threshold 0.5): under the threshold, over
    the hysteresis level. The refill is that response, also when it lies a slice beyond the motion model's guess."""
    truth, geometry = phantom.truth["GTV"], phantom.geometry
    phase = 0  # an extreme
    weak = np.roll(truth[phase], -shift_voxels, axis=0)  # towards the feet: further out at end-inhale
    probability = np.where(truth, 0.9, 0.0).astype(np.float32)
    probability[phase] = np.where(weak, 0.35, 0.0)
    result = refine_from_spec(GTV, to_evidence(probability, 0.5), geometry, TEMPORAL)
    (refill,) = result.report.refills
    assert refill.source is RefillSource.EVIDENCE and refill.phase == phase
    np.testing.assert_array_equal(result.refined[phase], weak)


def test_noise_under_the_threshold_is_not_taken_for_the_object(phantom) -> None:
    truth, geometry = phantom.truth["GTV"], phantom.geometry
    rng = np.random.default_rng(3)
    probability = np.where(truth, 0.9, rng.uniform(0.0, 0.4, truth.shape)).astype(np.float32)
    probability[5] = rng.uniform(0.0, 0.4, truth.shape[1:])  # a dropout: nothing but noise there
    result = refine_from_spec(GTV, to_evidence(probability, 0.5), geometry, TEMPORAL)
    (refill,) = result.report.refills
    assert refill.source is RefillSource.MOTION
    assert dice(result.refined[5], truth[5]) >= 0.85

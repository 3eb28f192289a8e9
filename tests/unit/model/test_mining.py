"""The hard negative sampler: class balance, and online mining that oversamples the hardest items."""

from __future__ import annotations

import numpy as np
import pytest

from model.mining import HardNegativeSampler, MiningSettings
from model.samples import ItemKind, SampleIndex
from tests.unit.model.training_data import TOY_TEMPLATE, toy_volume


def _fake_items(n_per_group: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Two structures × (positive, cross negative), ``n_per_group`` items each."""
    kinds = np.repeat([ItemKind.POSITIVE, ItemKind.CROSS, ItemKind.POSITIVE, ItemKind.CROSS], n_per_group)
    structures = np.repeat([0, 0, 1, 1], n_per_group)
    return kinds, structures


def test_base_weights_balance_structures_and_pools() -> None:
    kinds, structures = _fake_items()
    structures[150:200] = 0  # structure 0: 100 positives, 150 negatives; structure 1: 100 and 50
    sampler = HardNegativeSampler(kinds, structures, MiningSettings(negative_fraction=0.25))
    p = sampler.probabilities
    positive = kinds == ItemKind.POSITIVE
    assert p[positive].sum() == pytest.approx(0.75)
    assert p[positive & (structures == 0)].sum() == pytest.approx(p[positive & (structures == 1)].sum())
    without = HardNegativeSampler(kinds, structures, MiningSettings(negatives=False))
    assert without.probabilities[~positive].sum() == 0


def test_online_mining_oversamples_the_hardest_items_of_a_fake_loss_table() -> None:
    kinds, structures = _fake_items()
    settings = MiningSettings(hard_fraction=0.1, oversample=5.0)
    sampler = HardNegativeSampler(kinds, structures, settings)
    losses = np.random.default_rng(0).random(len(kinds))  # the fake loss table: every item seen once
    sampler.record(np.arange(len(kinds)), losses)
    before = sampler.probabilities.copy()
    sampler.new_epoch()
    draws = np.bincount(sampler.sample(200_000, np.random.default_rng(1)), minlength=len(kinds))
    for pool in (kinds == ItemKind.POSITIVE, kinds != ItemKind.POSITIVE):
        items = np.flatnonzero(pool)
        ranked = items[np.argsort(-losses[items])]
        hardest, rest = ranked[:20], ranked[20:]  # 10 % of 200
        # each hardest item is drawn ~5x as often as an ordinary item of the same group, and gets 5x its base share
        assert draws[hardest].mean() / draws[rest].mean() == pytest.approx(5.0, rel=0.1)
        assert np.allclose(sampler.probabilities[hardest] / before[hardest],
                           5.0 * sampler.probabilities[rest[0]] / before[rest[0]])
    assert draws[np.argmax(losses)] > 3 * np.median(draws[draws > 0])


def test_unseen_items_keep_their_weight_and_the_ema_tracks_recent_losses() -> None:
    kinds, structures = _fake_items(10)
    sampler = HardNegativeSampler(kinds, structures, MiningSettings(ema=0.5, hard_fraction=0.5))
    sampler.record(np.array([0, 1]), np.array([4.0, 1.0]))
    sampler.record(np.array([0]), np.array([0.0]))
    assert sampler.hardness[0] == pytest.approx(2.0)
    sampler.new_epoch()
    assert sampler.multiplier[0] == sampler.settings.oversample and sampler.multiplier[1] == 1.0
    assert (sampler.multiplier[2:] == 1.0).all()
    restored = HardNegativeSampler(kinds, structures, MiningSettings(ema=0.5, hard_fraction=0.5))
    restored.load_state_dict(sampler.state_dict())
    assert np.array_equal(restored.probabilities, sampler.probabilities)


def test_sample_index_kinds_on_a_toy_volume() -> None:
    index = SampleIndex.build([toy_volume(0)], [s.name for s in TOY_TEMPLATE])
    kinds = index.kind.reshape(6, 2)  # (z, structure)
    assert kinds[:, 0].tolist() == [ItemKind.ABSENT, *[ItemKind.POSITIVE] * 4, ItemKind.ABSENT]
    assert kinds[:, 1].tolist() == [ItemKind.ABSENT, ItemKind.CROSS, ItemKind.POSITIVE, ItemKind.POSITIVE,
                                    ItemKind.CROSS, ItemKind.ABSENT]
    assert index.item(0, 3, 1) == 7
    assert index.counts() == {"positive": 6, "absent": 4, "cross": 2}

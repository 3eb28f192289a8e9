"""Hard negative mining: which items each training step draws (``HardNegativeSampler``).

Anchor items are drawn with probability proportional to ``base weight × hardness multiplier``:

- base weight: positives (the structure is on the slice) share ``1 − negative_fraction`` of the mass and negatives
  (``ItemKind.ABSENT``: negative a; ``ItemKind.CROSS``: negative b) share ``negative_fraction``; within each pool
  every structure gets the same share (a 2 cm tumour is on few slices, the lungs on most; positives may be weighted
  per structure, ``structure_weights``), and every item of a (pool, structure) group the same weight.
  ``negatives=False`` draws positives only.
- online mining (``online``): ``record`` keeps, per item, an exponential moving average of its loss when it was last
  trained on (for a negative the loss is its false-positive score: the mask loss against an empty target plus the
  presence loss). At each ``new_epoch`` the items of each pool are ranked by that loss and the hardest
  ``hard_fraction`` of those seen get their weight multiplied by ``oversample``; items not yet seen keep 1.

The sampler's state (hardness table and multipliers) is part of a training checkpoint (``state_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.samples import ItemKind


@dataclass(frozen=True)
class MiningSettings:
    """See the module docstring. ``companions``: also decode every other structure's prompt on an anchor's slice
    (negatives b and positives of the others, at the cost of one image encoding). ``structure_weights``: relative
    share of a structure's positives (default 1; the small tumour gets 2)."""

    negatives: bool = True
    negative_fraction: float = 0.35
    companions: bool = True
    online: bool = True
    hard_fraction: float = 0.2
    oversample: float = 4.0
    ema: float = 0.5
    structure_weights: tuple[tuple[str, float], ...] = (("GTV", 2.0),)

    def __post_init__(self) -> None:
        if not 0.0 <= self.negative_fraction < 1.0:
            raise ValueError(f"negative_fraction must be in [0, 1), got {self.negative_fraction}")
        if not 0.0 < self.hard_fraction <= 1.0 or self.oversample < 1.0:
            raise ValueError(f"need 0 < hard_fraction ≤ 1 and oversample ≥ 1, got {self.hard_fraction}, "
                             f"{self.oversample}")
        if not 0.0 < self.ema <= 1.0:
            raise ValueError(f"ema must be in (0, 1], got {self.ema}")


class HardNegativeSampler:
    """Draws anchor items (see the module docstring). ``kinds``: (n,) ``ItemKind`` per item; ``structures``: (n,)
    template position per item."""

    def __init__(self, kinds: np.ndarray, structures: np.ndarray, settings: MiningSettings,
                 positive_share: np.ndarray | None = None) -> None:
        self.kinds = np.asarray(kinds)
        self.structures = np.asarray(structures)
        self.settings = settings
        self.positive_share = positive_share  # (n_structures,) relative share of each structure's positives
        self.positive = self.kinds == ItemKind.POSITIVE
        self.base = self._base_weights()
        self.hardness = np.full(len(self.kinds), np.nan)
        self.multiplier = np.ones(len(self.kinds))

    def _base_weights(self) -> np.ndarray:
        weights = np.zeros(len(self.kinds))
        pools = [(self.positive, 1.0 - self.settings.negative_fraction if self.settings.negatives else 1.0)]
        if self.settings.negatives:
            pools.append((~self.positive, self.settings.negative_fraction))
        for k, (pool, mass) in enumerate(pools):
            groups = np.unique(self.structures[pool])
            share = np.ones(len(groups))
            if k == 0 and self.positive_share is not None:
                share = np.asarray(self.positive_share, dtype=np.float64)[groups]
            for s, part in zip(groups, share / share.sum(), strict=True):
                members = pool & (self.structures == s)
                weights[members] = mass * part / members.sum()
        if weights.sum() == 0:
            raise ValueError("no item to sample: the data has no slice with a structure on it")
        return weights / weights.sum()

    @property
    def probabilities(self) -> np.ndarray:
        """(n,) the current drawing probability of every item."""
        weights = self.base * self.multiplier
        return weights / weights.sum()

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` item indices drawn with replacement from ``probabilities``."""
        return rng.choice(len(self.kinds), size=n, p=self.probabilities)

    def record(self, items: np.ndarray, losses: np.ndarray) -> None:
        """Update the hardness table with the per-item ``losses`` of a step (an item repeated keeps its last)."""
        items, losses = np.asarray(items), np.asarray(losses, dtype=np.float64)
        old = self.hardness[items]
        ema = self.settings.ema
        self.hardness[items] = np.where(np.isnan(old), losses, (1 - ema) * old + ema * losses)

    def new_epoch(self) -> dict[str, float]:
        """Re-rank (online mining): the hardest ``hard_fraction`` of each pool's seen items get ``oversample``.
        Returns a summary (share of the drawing mass now on the oversampled items, per pool)."""
        self.multiplier = np.ones(len(self.kinds))
        if not self.settings.online:
            return {}
        summary = {}
        for name, pool in (("positive", self.positive), ("negative", ~self.positive)):
            seen = np.flatnonzero(pool & ~np.isnan(self.hardness) & (self.base > 0))
            if len(seen) == 0:
                continue
            n_hard = max(1, round(self.settings.hard_fraction * len(seen)))
            hardest = seen[np.argsort(-self.hardness[seen], kind="stable")[:n_hard]]
            self.multiplier[hardest] = self.settings.oversample
            summary[f"{name}_hard_mass"] = float(self.probabilities[hardest].sum())
        return summary

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"hardness": self.hardness.copy(), "multiplier": self.multiplier.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if len(state["hardness"]) != len(self.kinds):
            raise ValueError(f"sampler state has {len(state['hardness'])} items, the data {len(self.kinds)}: "
                             "resume with the same data")
        self.hardness = np.array(state["hardness"], dtype=np.float64)
        self.multiplier = np.array(state["multiplier"], dtype=np.float64)

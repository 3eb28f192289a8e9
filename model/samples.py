"""Training samples: (volume, axial slice, structure) items with a text prompt and a target mask, and CT augmentation.

Every item asks "where is structure s on slice z of volume v?"; its target is that structure's mask on the slice,
possibly empty. Items come in three kinds (the hard negatives of the mining, ``model.mining``):

- ``POSITIVE``: the structure is on the slice;
- ``ABSENT`` (negative a): the structure is not on the slice, nor is any other structure: predict nothing;
- ``CROSS`` (negative b): the structure is not on the slice but another one is: the prompt of one structure on a slice
  showing others must predict nothing (not the other organ).

A batch is built around anchor items: their slices are augmented once (the same geometric transform for the CT and
every mask) and, with companions, every other structure's prompt is decoded on the same slice, so that the image
encoder runs once per slice.

Augmentation suitable for CT (``AugmentSettings``), on the slice grid in HU before the shared preprocessing
(``model.preprocess.ct_to_images``): a small rotation and isotropic scale about the slice centre with a small shift
(bilinear for HU, filled with air; bilinear for masks, which become soft targets), a global HU scale and offset
(``HU jitter``) and Gaussian noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch
import torch.nn.functional as F

from model.datasets import AnnotatedVolume

AIR_HU = -1000.0


class ItemKind(IntEnum):
    POSITIVE = 0
    ABSENT = 1
    CROSS = 2


@dataclass(frozen=True, eq=False)
class SampleIndex:
    """All items of a set of volumes, as parallel int arrays: ``volume``, ``z``, ``structure`` (template position)
    and ``kind`` (``ItemKind``); item i is (volume[i], z[i], structure[i])."""

    volume: np.ndarray
    z: np.ndarray
    structure: np.ndarray
    kind: np.ndarray
    n_structures: int

    def __len__(self) -> int:
        return len(self.volume)

    @classmethod
    def build(cls, volumes: Sequence[AnnotatedVolume], names: Sequence[str]) -> SampleIndex:
        """Items of every slice of every volume for every structure in ``names``."""
        parts = []
        for v, volume in enumerate(volumes):
            present = np.stack([volume.masks[n].any(axis=(1, 2)) for n in names], axis=1)  # (z, s)
            nz = present.shape[0]
            others = present.sum(axis=1, keepdims=True) - present  # (z, s): how many other structures are there
            kind = np.where(present, ItemKind.POSITIVE, np.where(others > 0, ItemKind.CROSS, ItemKind.ABSENT))
            zz, ss = np.meshgrid(np.arange(nz), np.arange(len(names)), indexing="ij")
            parts.append((np.full(zz.size, v), zz.ravel(), ss.ravel(), kind.ravel()))
        volume_, z, structure, kind = (np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(4))
        return cls(volume_, z, structure, kind, len(names))

    def item(self, volume: int, z: int, structure: int) -> int:
        """The index of item (volume, z, structure) (items are laid out volume by volume, slice by slice)."""
        offsets = np.concatenate([[0], np.cumsum(np.bincount(self.volume, minlength=self.volume.max() + 1))])
        return int(offsets[volume] + z * self.n_structures + structure)

    def counts(self) -> dict[str, int]:
        return {k.name.lower(): int((self.kind == k).sum()) for k in ItemKind}


@dataclass(frozen=True)
class AugmentSettings:
    """``rotation_deg``: max |angle|; ``scale``: max relative zoom change; ``shift_px``: max shift (slice pixels);
    ``hu_scale``: max relative contrast change of (HU + 1000); ``hu_offset``: max |offset| HU; ``noise_hu``: max
    noise sd (the sd is drawn uniformly in [0, noise_hu] per slice). ``enabled`` False: no augmentation."""

    enabled: bool = True
    rotation_deg: float = 7.0
    scale: float = 0.08
    shift_px: float = 4.0
    hu_scale: float = 0.05
    hu_offset: float = 30.0
    noise_hu: float = 20.0


def augment(hu: torch.Tensor, masks: torch.Tensor, settings: AugmentSettings, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch of slices and their masks the same way.

    ``hu``: (n, y, x) float32 HU; ``masks``: (n, s, y, x) float32 in [0, 1] (all structures of each slice). Returns
    the augmented (n, y, x) HU and (n, s, y, x) soft masks. Deterministic given ``generator``'s state.
    """
    if not settings.enabled:
        return hu, masks
    n, ny, nx = hu.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-settings.rotation_deg, settings.rotation_deg) * math.pi / 180
    zoom = 1.0 + uniform(-settings.scale, settings.scale)
    shift = torch.stack([uniform(-settings.shift_px, settings.shift_px) * 2 / nx,
                         uniform(-settings.shift_px, settings.shift_px) * 2 / ny], dim=1)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, ny, nx), align_corners=False)
    hu = F.grid_sample((hu - AIR_HU).unsqueeze(1), grid, mode="bilinear", padding_mode="zeros",
                       align_corners=False)[:, 0] + AIR_HU
    masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = 1.0 + uniform(-settings.hu_scale, settings.hu_scale)
    offset = uniform(-settings.hu_offset, settings.hu_offset)
    hu = (hu - AIR_HU) * contrast[:, None, None] + AIR_HU + offset[:, None, None]
    sd = uniform(0.0, settings.noise_hu)
    hu = hu + torch.randn(hu.shape, generator=generator) * sd[:, None, None]
    return hu, masks.clamp_(0.0, 1.0)


@dataclass(frozen=True, eq=False)
class Batch:
    """What one step trains on. ``hu``: (n_slices, y, x) float32; ``targets``: (n_items, y, x) float32 slice-grid
    masks (soft after augmentation); ``slice_of``: (n_items,) which slice each item is on; ``structure``: (n_items,)
    template position; ``items``: (n_items,) item indices (for the mining table); ``present``: (n_items,) 0/1."""

    hu: torch.Tensor
    targets: torch.Tensor
    slice_of: torch.Tensor
    structure: torch.Tensor
    items: np.ndarray
    present: torch.Tensor

    def micro_batches(self, slices: int) -> list[tuple[Batch, torch.Tensor]]:
        """The batch cut into consecutive parts of at most ``slices`` slices, each with its items' positions in
        this batch (for gradient accumulation: the parts together are exactly this batch's items)."""
        parts = []
        for start in range(0, self.hu.shape[0], slices):
            stop = min(start + slices, self.hu.shape[0])
            index = ((self.slice_of >= start) & (self.slice_of < stop)).nonzero()[:, 0]
            parts.append((Batch(self.hu[start:stop], self.targets[index], self.slice_of[index] - start,
                                self.structure[index], self.items[index.numpy()], self.present[index]), index))
        return parts


def make_batch(volumes: Sequence[AnnotatedVolume], names: Sequence[str], index: SampleIndex, anchors: np.ndarray,
               companions: bool, augmentation: AugmentSettings, generator: torch.Generator) -> Batch:
    """The batch of the ``anchors`` (item indices): their slices, plus every structure of those slices if
    ``companions`` (else only the anchors' structures). Slices repeated among anchors are loaded once."""
    keys = sorted({(int(index.volume[a]), int(index.z[a])) for a in anchors})
    slot = {key: i for i, key in enumerate(keys)}
    hu = torch.from_numpy(np.stack([volumes[v].hu[z] for v, z in keys]).astype(np.float32))
    masks = torch.from_numpy(np.stack([np.stack([volumes[v].masks[n][z] for n in names]) for v, z in keys])
                             .astype(np.float32))
    hu, masks = augment(hu, masks, augmentation, generator)
    if companions:
        pairs = [(slot[key], s) for key in keys for s in range(len(names))]
    else:
        pairs = sorted({(slot[(int(index.volume[a]), int(index.z[a]))], int(index.structure[a])) for a in anchors})
    slices = torch.tensor([p[0] for p in pairs])
    structure = torch.tensor([p[1] for p in pairs])
    items = np.array([index.item(keys[i][0], keys[i][1], s) for i, s in pairs])
    targets = masks[slices, structure]
    present = torch.from_numpy((index.kind[items] == ItemKind.POSITIVE).astype(np.float32))
    return Batch(hu, targets, slices, structure, items, present)

"""The one preprocessing shared by training and inference: CT slices in HU → model images, model maps → slice grid.

SAM 3's own image processor (``Sam3ImageProcessor``) resizes an RGB image to ``size`` × ``size`` (1008 for the official
checkpoint; no aspect-ratio preservation, no padding), rescales to [0, 1] and normalises with mean = std = 0.5 per
channel. We do the same on CT: each of the three channels is one HU window mapped linearly to [0, 1] (clipped), the
slice is resized (bilinear, antialiased when shrinking) to the model's square resolution, then normalised with the
checkpoint's ``image_mean`` / ``image_std``. CT slices are square in practice (512 × 512); a non-square slice is
stretched like SAM 3 stretches a photo, and ``to_slice_grid`` undoes it exactly. Text prompts are padded or
truncated to ``TEXT_MAX_LENGTH`` tokens, as ``Sam3Processor`` does.

The whole thing runs in torch on the compute device, so a batch of slices is transferred once, as int16/float32 HU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TEXT_MAX_LENGTH = 32  # the Sam3Processor pads/truncates prompts to 32 tokens


@dataclass(frozen=True)
class HUWindow:
    """A window ``[lower_hu, upper_hu]`` mapped linearly to [0, 1] (values outside are clipped)."""

    name: str
    lower_hu: float
    upper_hu: float

    def __post_init__(self) -> None:
        if not self.upper_hu > self.lower_hu:
            raise ValueError(f"window {self.name!r}: upper_hu must exceed lower_hu, got [{self.lower_hu}, "
                             f"{self.upper_hu}] HU")


LUNG = HUWindow("lung", -1000.0, 200.0)
MEDIASTINUM = HUWindow("mediastinum", -160.0, 240.0)
BONE = HUWindow("bone", -200.0, 1200.0)


@dataclass(frozen=True)
class ImageSpec:
    """How a CT slice becomes a model image.

    ``image_size``: side of the square model input in pixels (the checkpoint's ``vision_config.image_size``).
    ``windows``: one HU window per channel (3). ``image_mean`` / ``image_std``: per-channel normalisation applied after
    windowing to [0, 1] (SAM 3: 0.5 / 0.5, i.e. images in [-1, 1]).
    """

    image_size: int
    windows: tuple[HUWindow, HUWindow, HUWindow] = (LUNG, MEDIASTINUM, BONE)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if len(self.windows) != 3 or len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError(f"need 3 windows, means and stds (one per channel), got {len(self.windows)}, "
                             f"{len(self.image_mean)}, {len(self.image_std)}")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (n, c, h, w) to ``size``; antialiased when either side shrinks."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def ct_to_images(
    slices_hu: np.ndarray | torch.Tensor,
    spec: ImageSpec,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """CT slices → normalised model images.

    ``slices_hu``: (n, y, x) Hounsfield units (int16 or float), axial slices in volume order. Returns
    (n, 3, image_size, image_size) ``dtype`` on ``device``; channel c is ``spec.windows[c]``. Windowing and resizing are
    computed in float32 whatever ``dtype`` is, then cast.
    """
    if isinstance(slices_hu, np.ndarray) and not slices_hu.flags.writeable:
        slices_hu = slices_hu.copy()  # torch cannot wrap a read-only array (e.g. a phantom's); one batch is small
    hu = torch.as_tensor(slices_hu)
    if hu.ndim != 3:
        raise ValueError(f"slices_hu must be (n, y, x), got shape {tuple(hu.shape)}")
    if torch.device(device).type == "cuda":  # page-locked host memory: the copy is asynchronous, in the HU dtype
        hu = hu.pin_memory().to(device, non_blocking=True)
    hu = hu.to(device=device, dtype=torch.float32)
    lower = torch.tensor([w.lower_hu for w in spec.windows], device=hu.device).view(1, 3, 1, 1)
    upper = torch.tensor([w.upper_hu for w in spec.windows], device=hu.device).view(1, 3, 1, 1)
    images = ((hu.unsqueeze(1) - lower) / (upper - lower)).clamp_(0.0, 1.0)  # (n, 3, y, x) in [0, 1]
    images = _resize(images, (spec.image_size, spec.image_size)).clamp_(0.0, 1.0)
    mean = torch.tensor(spec.image_mean, device=hu.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.image_std, device=hu.device).view(1, 3, 1, 1)
    return ((images - mean) / std).to(dtype)


def to_slice_grid(maps: torch.Tensor, slice_shape: tuple[int, int]) -> torch.Tensor:
    """Model-resolution maps → the CT slice grid.

    ``maps``: (n, h, w) probabilities (or logits) on the model's square grid (SAM 3: image_size / 3.5, e.g. 288 for
    1008). Returns (n, y, x) float32 on the same device, bilinear (antialiased when shrinking), so that thresholding at
    0.5 afterwards gives a mask on the slice grid.
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (n, h, w), got shape {tuple(maps.shape)}")
    return _resize(maps.float().unsqueeze(1), tuple(slice_shape))[:, 0]


def masks_to_model_grid(masks: np.ndarray | torch.Tensor, size: int, *, device: torch.device | str = "cpu"
                        ) -> torch.Tensor:
    """Slice-grid masks → soft targets on the model's (size, size) mask grid, for training.

    ``masks``: (n, y, x) bool. Returns (n, size, size) float32 in [0, 1] (area-averaged when shrinking), the exact
    counterpart of ``to_slice_grid``.
    """
    m = torch.as_tensor(np.array(masks, dtype=np.float32) if isinstance(masks, np.ndarray) else masks)
    m = m.to(device=device, dtype=torch.float32)
    if m.ndim != 3:
        raise ValueError(f"masks must be (n, y, x), got shape {tuple(m.shape)}")
    return _resize(m.unsqueeze(1), (size, size))[:, 0].clamp_(0.0, 1.0)

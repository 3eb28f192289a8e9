"""HU windows → model images, and model maps → the slice grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.preprocess import (
    BONE,
    LUNG,
    MEDIASTINUM,
    HUWindow,
    ImageSpec,
    ct_to_images,
    masks_to_model_grid,
    to_slice_grid,
)


def test_windows_become_channels_normalised_like_sam3() -> None:
    hu = np.array([[[-1000, -160], [240, 1200]]], dtype=np.int16).repeat(56, axis=1).repeat(56, axis=2)
    images = ct_to_images(hu, ImageSpec(image_size=56))
    assert images.shape == (1, 3, 56, 56) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    corner = images[0, :, 0, 0]  # -1000 HU: bottom of the lung window, below mediastinum and bone
    torch.testing.assert_close(corner, torch.tensor([-1.0, -1.0, -1.0]))
    value = images[0, :, -1, -1]  # 1200 HU: top of every window
    torch.testing.assert_close(value, torch.tensor([1.0, 1.0, 1.0]))
    mid = images[0, :, 0, -1]  # -160 HU
    expected = [2 * (-160 - w.lower_hu) / (w.upper_hu - w.lower_hu) - 1 for w in (LUNG, MEDIASTINUM, BONE)]
    torch.testing.assert_close(mid, torch.tensor(expected, dtype=torch.float32).clamp(-1, 1))


def test_resizing_to_the_model_and_back() -> None:
    hu = np.full((3, 64, 48), -1000, dtype=np.int16)
    hu[:, 16:48, 12:36] = 40
    images = ct_to_images(hu, ImageSpec(image_size=112), dtype=torch.bfloat16)
    assert images.shape == (3, 3, 112, 112) and images.dtype == torch.bfloat16
    mask = torch.from_numpy(hu > 0).float()
    model_grid = masks_to_model_grid(hu > 0, 32)
    assert model_grid.shape == (3, 32, 32) and model_grid.min() >= 0 and model_grid.max() <= 1
    back = to_slice_grid(model_grid, (64, 48))
    assert back.shape == (3, 64, 48)
    agreement = ((back > 0.5) == (mask > 0.5)).float().mean()
    assert agreement > 0.97


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="upper_hu must exceed lower_hu"):
        HUWindow("odd", 100, 0)
    with pytest.raises(ValueError, match=r"slices_hu must be \(n, y, x\)"):
        ct_to_images(np.zeros((4, 4)), ImageSpec(image_size=28))
    with pytest.raises(ValueError, match="image_size must be positive"):
        ImageSpec(image_size=0)

"""Toy annotated volumes and a two-structure template for the training tests (no phantom, no files)."""

from __future__ import annotations

import numpy as np

from dicomrt.structures import RoiType, StructureSpec
from model.datasets import AnnotatedVolume
from tests.unit.model.conftest import make_geometry

TOY_TEMPLATE = (
    StructureSpec("Lung_L", ("left lung",), (0, 128, 255), RoiType.ORGAN),
    StructureSpec("Heart", ("heart",), (255, 0, 255), RoiType.ORGAN),
)


def toy_volume(seed: int, study: str = "toy", phase: int = 0, n_phases: int = 1,
               shape: tuple[int, int, int] = (6, 32, 32)) -> AnnotatedVolume:
    """A 'body' of 0 HU in air with a -800 HU box ("Lung_L", slices 1-4) and a 60 HU disc ("Heart", slices 2-3);
    slice 0 and 5 hold neither (absent negatives), slices 1 and 4 only the lung (cross negatives of the heart)."""
    rng = np.random.default_rng(seed)
    _, ny, nx = shape
    hu = np.full(shape, -1000, dtype=np.int16)
    hu[:, 4:-4, 3:-3] = 0
    lung = np.zeros(shape, dtype=bool)
    y0, x0 = 8 + int(rng.integers(0, 3)), 18 + int(rng.integers(0, 3))
    lung[1:5, y0:y0 + 12, x0:x0 + 8] = True
    yy, xx = np.mgrid[:ny, :nx]
    disc = (yy - 16) ** 2 + (xx - 9) ** 2 <= 16
    heart = np.zeros(shape, dtype=bool)
    heart[2:4] = disc
    hu[lung] = -800
    hu[heart] = 60
    return AnnotatedVolume(hu, {"Lung_L": lung, "Heart": heart}, make_geometry(shape, (5.0, 3.0, 3.0)), study, phase,
                           n_phases)

"""The ITV (union over phases, margins in mm) and motion (volume, centroid, amplitude)."""

from __future__ import annotations

import numpy as np
import pytest

from dicomrt.geometry import Geometry
from dicomrt.itv import build_itv, expand, margin_per_voxel_axis
from model.motion import motion
from tests.unit.model.conftest import ellipsoid, make_geometry, moving_tumour

GEOMETRY = make_geometry((40, 40, 40), (2.5, 2.0, 2.0))


def test_itv_contains_every_phase_and_nothing_else() -> None:
    truth, _ = moving_tumour(GEOMETRY)
    itv = build_itv(truth, GEOMETRY)
    assert all((itv >= phase).all() for phase in truth)
    np.testing.assert_array_equal(itv, truth.any(axis=0))


def test_isotropic_margin_is_a_ball_in_mm() -> None:
    point = np.zeros(GEOMETRY.shape, dtype=bool)
    point[20, 20, 20] = True
    grown = expand(point, GEOMETRY, 5.0)
    centre = GEOMETRY.index_to_patient(np.array([[20, 20, 20]]))[0]
    expected = ellipsoid(GEOMETRY, tuple(centre), (5.0, 5.0, 5.0))
    np.testing.assert_array_equal(grown, expected)
    assert grown[20, 20, 22] and not grown[20, 20, 23]  # 4 mm in, 6 mm out along x
    assert grown[22, 20, 20] and not grown[23, 20, 20]  # 5 mm in, 7.5 mm out along z


def test_anisotropic_margin_along_patient_axes() -> None:
    point = np.zeros(GEOMETRY.shape, dtype=bool)
    point[20, 20, 20] = True
    grown = expand(point, GEOMETRY, (2.0, 0.0, 10.0))  # x 2 mm, y none, z 10 mm
    assert grown[20, 20, 21] and not grown[20, 20, 22]
    assert not grown[20, 21, 20]
    assert grown[24, 20, 20] and not grown[25, 20, 20]
    truth, _ = moving_tumour(GEOMETRY)
    itv = build_itv(truth, GEOMETRY, (5.0, 5.0, 8.0))
    assert (itv >= truth.any(axis=0)).all() and itv.sum() > truth.any(axis=0).sum()


def test_margins_follow_the_affine_not_the_array_axes() -> None:
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    affine[:3, 0] = (0, 0, 3.0)
    affine[:3, 1] = (1.0, 0, 0)  # rows run along patient x
    affine[:3, 2] = (0, 1.0, 0)  # columns along patient y
    rotated = Geometry(affine, (4, 8, 8), "1.2.3", ("1", "2", "3", "4"))
    assert margin_per_voxel_axis(rotated, (2.0, 7.0, 9.0)) == (9.0, 2.0, 7.0)
    oblique = affine.copy()
    oblique[:3, 1] = (np.cos(0.3), np.sin(0.3), 0)
    oblique[:3, 2] = (-np.sin(0.3), np.cos(0.3), 0)
    tilted = Geometry(oblique, (4, 8, 8), "1.2.3", ("1", "2", "3", "4"))
    assert margin_per_voxel_axis(tilted, (5.0, 5.0, 9.0)) == (9.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="not aligned with a patient axis"):
        margin_per_voxel_axis(tilted, (2.0, 7.0, 9.0))
    with pytest.raises(ValueError, match="margin_mm must be"):
        margin_per_voxel_axis(GEOMETRY, (1.0, 2.0))


def test_motion_volume_centroid_and_amplitude() -> None:
    truth, centres = moving_tumour(GEOMETRY, radius_mm=8.0, amplitude_mm=12.0)
    result = motion(truth, GEOMETRY)
    voxel_ml = 2.5 * 2 * 2 / 1000
    np.testing.assert_allclose(result.volumes_ml, truth.sum(axis=(1, 2, 3)) * voxel_ml)
    assert result.volumes_ml.mean() == pytest.approx(4 / 3 * np.pi * 0.8 ** 3, rel=0.08)
    np.testing.assert_allclose(result.centroids_lps_mm, centres, atol=0.6)
    np.testing.assert_allclose(result.amplitude_mm, np.ptp(centres, axis=0), atol=1.0)
    empty = truth.copy()
    empty[4] = False
    partial = motion(empty, GEOMETRY)
    assert np.isnan(partial.centroids_lps_mm[4]).all() and not np.isnan(partial.amplitude_mm).any()
    assert partial.to_dict()["centroids_lps_mm"][4] == [None, None, None]

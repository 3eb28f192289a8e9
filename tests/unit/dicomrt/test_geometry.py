import numpy as np
import pytest

from dicomrt.errors import (
    GantryTiltError,
    InconsistentSeriesError,
    MissingSlicesError,
    NonUniformSpacingError,
    ObliqueSlicesError,
)
from dicomrt.geometry import geometry_from_slices, slice_order

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def stack(z_values, orientation=AXIAL, xy=(-100.0, -50.0), shift_per_slice=(0.0, 0.0)):
    return np.array([[xy[0] + k * shift_per_slice[0], xy[1] + k * shift_per_slice[1], z]
                     for k, z in enumerate(z_values)], dtype=float)


def build(positions, orientation=AXIAL, spacing=(0.8, 0.9)):
    order = slice_order(positions, orientation)
    return geometry_from_slices(positions[order], orientation, spacing, (64, 32), "1.2.3",
                                [f"1.2.{i}" for i in order], "test series")


def test_affine_maps_index_to_patient_positions():
    positions = stack([10.0, 12.5, 15.0, 17.5])
    geometry = build(positions[::-1].copy())  # given out of order
    assert geometry.shape == (4, 64, 32)
    np.testing.assert_allclose(geometry.slice_positions, positions)
    # one step in y (down a column) is PixelSpacing[0] along the column direction; in x, PixelSpacing[1] along rows
    np.testing.assert_allclose(geometry.index_to_patient([[0, 1, 0]]), [[-100.0, -49.2, 10.0]])
    np.testing.assert_allclose(geometry.index_to_patient([[0, 0, 1]]), [[-99.1, -50.0, 10.0]])
    assert geometry.spacing_mm == pytest.approx((2.5, 0.8, 0.9))
    assert geometry.orientation == pytest.approx(AXIAL)
    assert geometry.sop_instance_uids == ("1.2.3", "1.2.2", "1.2.1", "1.2.0")
    assert geometry.voxel_volume_ml == pytest.approx(2.5 * 0.8 * 0.9 / 1000)


def test_patient_to_index_inverts_the_affine():
    geometry = build(stack([0.0, 3.0, 6.0]))
    points = np.array([[1.5, 20.25, 7.0], [0, 0, 0]])
    np.testing.assert_allclose(geometry.patient_to_index(geometry.index_to_patient(points)), points)


def test_feet_first_orientation_still_stacks_towards_increasing_patient_z():
    flipped = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # normal points to -z
    geometry = build(stack([30.0, 20.0, 25.0]), orientation=flipped)
    np.testing.assert_allclose(geometry.slice_positions[:, 2], [20.0, 25.0, 30.0])
    assert geometry.affine[2, 0] == pytest.approx(5.0)
    np.testing.assert_allclose(geometry.index_to_patient([[0, 0, 1]])[0, 0], -100.0 - 0.9)


def test_oblique_slices_are_refused():
    tilted = (1.0, 0.0, 0.0, 0.0, np.cos(0.2), np.sin(0.2))
    with pytest.raises(ObliqueSlicesError, match=r"not axial: .* 11\.46 degrees"):
        build(stack([0.0, 2.0, 4.0]), orientation=tilted)


def test_gantry_tilt_is_refused():
    with pytest.raises(GantryTiltError, match="gantry tilt of 5.71 degrees"):
        build(stack([0.0, 2.0, 4.0, 6.0], shift_per_slice=(0.0, 0.2)))


def test_missing_slice_is_named():
    with pytest.raises(MissingSlicesError, match=r"test series: 1 slice\(s\) missing .* between z = 5.00 and 10.00 mm"):
        build(stack([0.0, 2.5, 5.0, 10.0, 12.5]))


def test_non_uniform_spacing_is_refused():
    with pytest.raises(NonUniformSpacingError, match=r"uniform within 1%, got \[2.0, 3.0\] mm"):
        build(stack([0.0, 2.0, 5.0, 7.0, 9.0]))


def test_duplicate_position_and_single_slice_are_refused():
    with pytest.raises(InconsistentSeriesError, match="two slices at the same position"):
        build(stack([0.0, 2.0, 2.0, 4.0]))
    with pytest.raises(InconsistentSeriesError, match="at least 2 slices, got 1"):
        build(stack([0.0]))


def test_mismatch_describes_the_difference():
    a = build(stack([0.0, 2.0, 4.0]))
    assert a.mismatch(build(stack([0.0, 2.0, 4.0]))) is None
    assert a.mismatch(build(stack([0.0, 2.0, 4.0, 6.0]))) == "shape (z, y, x) (3, 64, 32) vs (4, 64, 32)"
    assert a.mismatch(build(stack([1.0, 3.0, 5.0]))) == "voxel positions differ by up to 1.00 mm"


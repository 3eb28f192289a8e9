"""Reading RT structure sets written by planning systems and other tools (``../shared/data``), and refusing the
broken ones with the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomrt.geometry import Geometry, slice_normal
from dicomrt.instances import InstanceHeader, read_header
from dicomrt.phases import SeriesKind
from dicomrt.reader import scan_study
from dicomrt.rt_errors import ReferenceMismatchError, RTError
from dicomrt.rtstruct_read import match_series, rasterise_roi, read_rtstruct
from dicomrt.study import SeriesInfo


@pytest.fixture(scope="module")
def mock(shared_data):
    folder = shared_data / "rtutils_mock"
    return folder, scan_study([folder / "ct_1.dcm", folder / "ct_2.dcm"]).phases


def one_slice_series(path: Path) -> SeriesInfo:
    """The one CT image of a partial export as a series of one slice, SliceThickness thick (the study reader needs
    at least two slices to make a volume)."""
    header = read_header(path)
    assert isinstance(header, InstanceHeader)
    thickness = float(pydicom.dcmread(path, stop_before_pixels=True).SliceThickness)
    iop = np.asarray(header.orientation, dtype=np.float64)
    normal = slice_normal(header.orientation)
    affine = np.eye(4)
    affine[:3, 0] = normal * np.sign(normal[2]) * thickness
    affine[:3, 1] = iop[3:] * header.pixel_spacing[0]
    affine[:3, 2] = iop[:3] * header.pixel_spacing[1]
    affine[:3, 3] = header.position
    geometry = Geometry(affine, (1, header.rows, header.columns), header.frame_of_reference_uid,
                        (header.sop_instance_uid,))
    return SeriesInfo(header.series_instance_uid, header.series_number, header.series_description, SeriesKind.CT,
                      None, "one image", geometry, (header,))


def test_dicompyler_planning_system_file(shared_data):
    folder = shared_data / "dicompyler_example"
    content = read_rtstruct(folder / "rtss.dcm")
    assert content.names == ["BODY", "Areola", "Borders", "Breast", "Heart", "Lt Lung", "Nodes", "Scar",
                             "Tumor Bed", "Tumor Bed Block"]
    body, heart, lung = content.roi("BODY"), content.roi("Heart"), content.roi("lt lung")
    assert (body.colour, body.interpreted_type, len(body.contours)) == ((154, 155, 100), "EXTERNAL", 141)
    assert (heart.colour, heart.interpreted_type, len(heart.contours)) == ((255, 128, 0), "ORGAN", 33)
    assert len(lung.contours) == 165 and len(content.roi("Areola").contours) == 0
    ct = one_slice_series(folder / "ct.0.dcm")  # only one of its 98 CT slices is in the data set
    assert ct.geometry.shape == (1, 512, 512)
    with pytest.raises(ReferenceMismatchError, match="137 of its 141 contours reference images that are not in"):
        match_series(content, [ct])
    series, _ = match_series(content, [ct], allow_missing_images=True)
    body_mask = rasterise_roi(body, series.geometry, allow_missing_images=True)
    assert body_mask.skipped == 137
    area_cm2 = body_mask.mask.sum() * np.prod(series.geometry.spacing_mm[1:]) / 100
    assert 300 < area_cm2 < 700  # an axial section of a patient's body
    assert rasterise_roi(heart, series.geometry, allow_missing_images=True).mask.sum() == 0
    with pytest.raises(ReferenceMismatchError, match="lie on no slice of the CT grid"):
        rasterise_roi(heart, series.geometry)


def test_rtutils_mock_valid_file_reads_with_a_frame_of_reference_warning(mock):
    folder, cts = mock
    content = read_rtstruct(folder / "rt.dcm")
    series, warnings = match_series(content, cts)
    assert len(warnings) == 1 and "images decide" in warnings[0]
    (roi,) = content.rois
    assert roi.name == "ROI-1" and len(roi.contours) == 2
    mask = rasterise_roi(roi, series.geometry).mask
    assert mask[0].sum() > 1000 and not mask[1].any()


def test_rtutils_invalid_reference_is_refused(mock):
    folder, cts = mock
    content = read_rtstruct(folder / "invalid_reference_rt.dcm")
    with pytest.raises(ReferenceMismatchError,
                       match=r"ROI 1 'ROI-1': 1 of its 3 contours reference images that are not in CT series"):
        match_series(content, cts)


def test_rtutils_non_existent_reference_is_refused(mock):
    folder, cts = mock
    content = read_rtstruct(folder / "non_existent_reference_rt.dcm")
    with pytest.raises(ReferenceMismatchError, match="names no image series"):
        match_series(content, cts)


def test_series_not_given_is_refused(shared_data, mock):
    _, cts = mock
    content = read_rtstruct(shared_data / "dicompyler_example" / "rtss.dcm")
    with pytest.raises(ReferenceMismatchError, match="none of the CT series given"):
        match_series(content, cts)


def test_pydicom_rtstruct_parses_and_a_ct_is_refused():
    content = read_rtstruct(get_testdata_file("rtstruct.dcm"))
    assert content.names
    with pytest.raises(RTError, match="expected an RT Structure Set"):
        read_rtstruct(get_testdata_file("CT_small.dcm"))

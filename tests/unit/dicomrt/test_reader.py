"""The study reader on real vendor files (``../shared/data``) and on edited copies of them: one test per refusal."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomrt.errors import (
    DuplicateInstanceError,
    GantryTiltError,
    ImplausiblePixelDataError,
    MissingGeometryError,
    MissingSlicesError,
    MissingUIDError,
    MultiplePatientsError,
    MultipleStudiesError,
    NoCTError,
    NonUniformSpacingError,
    ObliqueSlicesError,
    PixelDecodeError,
    StudyNotFoundError,
)
from dicomrt.identifiers import short_hash
from dicomrt.instances import Skip
from dicomrt.phases import SeriesKind
from dicomrt.reader import load_study, read_study, scan_study


@pytest.fixture(scope="module")
def totalseg(shared_data: Path) -> Path:
    return shared_data / "totalseg_ct"


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".dcm")


def by_z(folder: Path) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(p) for p in files(folder)), key=lambda ds: float(ds.ImagePositionPatient[2]))


def edited_copy(src: Path, dst: Path, edit=None, skip=()) -> Path:
    """Copy a series slice by slice in z order; ``edit(ds, k)`` may change slice k; slices in ``skip`` are left out."""
    dst.mkdir(parents=True, exist_ok=True)
    for k, ds in enumerate(by_z(src)):
        if k in skip:
            continue
        if edit is not None:
            edit(ds, k)
        ds.save_as(dst / f"slice{k:03d}.dcm")
    return dst


def test_real_siemens_jpeg2000_ct_reads_as_one_3d_volume(totalseg):
    index = scan_study(totalseg)
    assert not index.is_4d
    (phase,) = index.phases
    assert phase.kind is SeriesKind.CT and phase.percent is None and index.reference is phase
    slices = by_z(totalseg)
    geometry = phase.geometry
    assert geometry.shape == (20, 512, 512)
    np.testing.assert_allclose(geometry.slice_positions, [[float(v) for v in ds.ImagePositionPatient] for ds in slices])
    assert geometry.spacing_mm == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert geometry.sop_instance_uids == tuple(ds.SOPInstanceUID for ds in slices)
    assert geometry.frame_of_reference_uid == slices[0].FrameOfReferenceUID
    assert any("single 3D CT" in w for w in index.warnings)

    volume = load_study(index).phases[0].volume
    assert volume.dtype == np.int16
    for k in (0, 7, 19):
        ds = slices[k]
        np.testing.assert_array_equal(volume[k], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))


def test_empty_uids_of_the_original_files_are_refused(shared_data):
    with pytest.raises(MissingUIDError, match=r"required UIDs are empty in 20 of 20 CT files \(SOPClassUID in 20, "
                                              r"SOPInstanceUID in 20, StudyInstanceUID in 20, SeriesInstanceUID in 20"):
        scan_study(shared_data / "totalseg_ct_original")


def test_no_ct_among_rt_objects_and_other_files(shared_data, tmp_path):
    for name in ("rt.dcm", "invalid_reference_rt.dcm"):
        shutil.copy(shared_data / "rtutils_mock" / name, tmp_path)
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(NoCTError, match=r"no CT images among 3 files \((1 not DICOM, 2 not a CT image|2 not a CT "
                                        r"image, 1 not DICOM)\)"):
        scan_study(tmp_path)


def test_non_dicom_and_truncated_files_are_skipped_and_counted(totalseg, tmp_path):
    study = edited_copy(totalseg, tmp_path / "in")
    (study / "README.txt").write_text("export notes")
    (study / "broken.dcm").write_bytes(files(totalseg)[0].read_bytes()[:400])
    index = scan_study(study)
    assert index.scan.files == 22 and index.scan.ct_instances == 20
    assert index.scan.skipped == {Skip.NOT_DICOM: 1, Skip.UNREADABLE: 1}
    assert "skipped 2 of 22 files (1 not DICOM, 1 unreadable)" in index.warnings


def test_missing_slice_is_refused(totalseg, tmp_path):
    with pytest.raises(MissingSlicesError, match=r"'CT Body 3.0' .*: 1 slice\(s\) missing \(first gap between "
                                                 r"z = -788.50 and -784.50 mm; spacing 2 mm\)"):
        scan_study(edited_copy(totalseg, tmp_path, skip={9}))


def test_non_uniform_spacing_is_refused(totalseg, tmp_path):
    def shift(ds, k):
        if k >= 10:
            ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.5
    with pytest.raises(NonUniformSpacingError, match=r"uniform within 1%, got \[2.0, 2.5\] mm"):
        scan_study(edited_copy(totalseg, tmp_path, shift))


def test_oblique_slices_are_refused(totalseg, tmp_path):
    def rotate(ds, k):
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9848078, 0.1736482]  # 10 degrees about x
    with pytest.raises(ObliqueSlicesError, match="10.00 degrees from the patient z axis"):
        scan_study(edited_copy(totalseg, tmp_path, rotate))


def test_gantry_tilt_is_refused(totalseg, tmp_path):
    def tilt(ds, k):
        ds.ImagePositionPatient[1] = float(ds.ImagePositionPatient[1]) + 0.35 * k
    with pytest.raises(GantryTiltError, match=r"gantry tilt of 9.9\d degrees"):
        scan_study(edited_copy(totalseg, tmp_path, tilt))


def test_missing_position_is_refused(totalseg, tmp_path):
    def drop(ds, k):
        if k == 3:
            del ds.ImagePositionPatient
    with pytest.raises(MissingGeometryError, match="1 of 20 images lack a valid ImagePositionPatient"):
        scan_study(edited_copy(totalseg, tmp_path, drop))


def test_two_studies_are_refused_unless_one_is_chosen(totalseg, tmp_path):
    edited_copy(totalseg, tmp_path / "a")

    def other_study(ds, k):
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.3.{k}"
        ds.PatientID = "SOMEONE-ELSE"
    edited_copy(totalseg, tmp_path / "b", other_study)
    with pytest.raises(MultipleStudiesError, match=r"2 studies of 2 patient\(s\): .*20 CT images.*choose one"):
        scan_study(tmp_path)
    chosen = scan_study(tmp_path, study=short_hash("1.2.826.0.1.3680043.8.498.1"))
    assert chosen.attributes.patient_id == "SOMEONE-ELSE"
    assert scan_study(tmp_path, study="1.2.826.0.1.3680043.8.498.1").scan.ct_instances == 40
    with pytest.raises(StudyNotFoundError, match="study '1.2.3' is not among the studies found"):
        scan_study(tmp_path, study="1.2.3")


def test_two_patients_in_one_study_are_refused(totalseg, tmp_path):
    def other_patient(ds, k):
        if k == 5:
            ds.PatientID = "SOMEONE-ELSE"
    with pytest.raises(MultiplePatientsError, match="2 different PatientID values .* refusing to mix patients"):
        scan_study(edited_copy(totalseg, tmp_path, other_patient))


def test_duplicate_sop_instance_uid_with_different_content_is_refused(totalseg, tmp_path):
    study = edited_copy(totalseg, tmp_path)
    ds = pydicom.dcmread(study / "slice004.dcm")
    ds.ImageComments = "edited"
    ds.save_as(study / "copy_of_slice004.dcm")
    with pytest.raises(DuplicateInstanceError, match=r"is used by 2 files with different content"):
        scan_study(study)


def test_identical_duplicate_files_are_read_once(totalseg, tmp_path):
    study = edited_copy(totalseg, tmp_path)
    shutil.copy(study / "slice004.dcm", study / "again.dcm")
    index = scan_study(study)
    assert index.phases[0].geometry.shape[0] == 20
    assert "1 duplicate file(s) of the same instance ignored" in index.warnings


def test_implausible_image_size_is_refused_before_decoding(totalseg, tmp_path):
    def huge(ds, k):
        if k == 0:
            ds.Rows = ds.Columns = 65535
    with pytest.raises(ImplausiblePixelDataError, match=r"1 CT file\(s\), e.g. slice000.dcm: image size 65535 x "
                                                        r"65535 is outside 1..4096 x 1..4096"):
        scan_study(edited_copy(totalseg, tmp_path, huge))


def test_truncated_native_pixel_data_is_refused_from_the_header(totalseg, tmp_path):
    ds = by_z(totalseg)[0]
    ds.decompress()
    ds.Rows = ds.Columns = 4096  # declares 32 MiB; the file holds 0.5 MiB
    tmp_path.mkdir(exist_ok=True)
    ds.save_as(tmp_path / "small.dcm")
    with pytest.raises(ImplausiblePixelDataError, match=r"declares 4096 x 4096 x 16 bits \(33554432 bytes\) but the "
                                                        r"file has only \d+ bytes"):
        scan_study(tmp_path)


def test_compressed_size_lie_is_caught_at_decoding(totalseg, tmp_path):
    def lie(ds, k):
        ds.Rows = ds.Columns = 1024
    index = scan_study(edited_copy(totalseg, tmp_path, lie))
    with pytest.raises(PixelDecodeError, match=r"slice 0 cannot be decoded \(JPEG 2000 Image Compression \(Lossless "
                                               r"Only\)\): could not broadcast"):
        load_study(index)


def test_read_study_is_scan_then_load(totalseg):
    study = read_study(totalseg)
    assert study.phases[0].volume.shape == (20, 512, 512)
    assert study.reference is study.index.reference

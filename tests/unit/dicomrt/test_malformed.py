"""Malformed and hostile headers (issue 14): what pydicom raises on them becomes a skip naming the element or a
specific refusal; invalid UIDs, unknown transfer syntaxes, Enhanced CT, deflate bombs and executable preambles."""

from __future__ import annotations

import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomrt.errors import (
    AmbiguousPhasesError,
    DuplicateInstanceError,
    InconsistentSeriesError,
    InvalidUIDError,
    MissingSlicesError,
    PixelDecodeError,
    StudyError,
    UnsupportedImageError,
)
from dicomrt.identifiers import is_valid_uid, short_hash
from dicomrt.instances import (
    CT_IMAGE_STORAGE,
    CT_SOP_CLASSES,
    ENHANCED_CT_IMAGE_STORAGE,
    MALFORMED_DICOM_ERRORS,
    MAX_INFLATED_BYTES,
    READABLE_IMAGE_SOP_CLASSES,
    InstanceHeader,
    Skip,
    Skipped,
    read_header,
    read_header_or_skipped,
    zero_preamble,
)
from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from dicomrt.reader import load_study, scan_study
from tests.fuzz.mutations import elements

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the values broken on purpose


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory) -> list[Path]:
    """A valid 2-phase study of 5 slices per phase (phantom, "T=0%"/"T=50%" descriptions): 10 files, phase 0% first,
    z order within each phase."""
    out = tmp_path_factory.mktemp("phantom")
    files = write_phantom(generate_phantom(PhantomConfig(seed=5, n_phases=2)), out, vendor="desc-t")
    return [p for volume in files.phases for p in volume.paths[20:25]]


@pytest.fixture
def study(phantom_study, tmp_path) -> list[Path]:
    """A fresh copy of the phantom study, to edit."""
    folder = tmp_path / "study"
    folder.mkdir()
    return [Path(shutil.copy(p, folder / p.name)) for p in phantom_study]


def set_vr(path: Path, tag: int, vr: bytes) -> None:
    data = bytearray(path.read_bytes())
    element = next(e for e in elements(bytes(data)) if e.tag == tag)
    data[element.vr_offset:element.vr_offset + 2] = vr
    path.write_bytes(bytes(data))


def set_raw(path: Path, tag: int, value: bytes) -> None:
    """Replace the value of ``tag`` by ``value`` as it is (pydicom would refuse to write it), length included."""
    data = bytearray(path.read_bytes())
    element = next(e for e in elements(bytes(data)) if e.tag == tag)
    data[element.value_offset:element.end] = value
    data[element.length_offset:element.length_offset + element.length_size] = len(value).to_bytes(
        element.length_size, "little")
    path.write_bytes(bytes(data))


def edit(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        if keyword == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = value
        else:
            setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


def skipped(path: Path) -> Skipped:
    result = read_header_or_skipped(path)
    assert isinstance(result, Skipped), result
    return result


# --- pydicom's exceptions on malformed files become skips naming the element ----------------------------------------


@pytest.mark.parametrize(("tag", "vr", "element"), [
    (0x00200052, b"UA", r"FrameOfReferenceUID \(0020,0052\)"),  # one flipped bit: UI -> UA
    (0x00280002, b"\x55\xfe", r"SamplesPerPixel \(0028,0002\)"),  # US -> 0x55 0xfe
])
def test_unknown_vr_is_an_unreadable_file_naming_the_element(study, tag, vr, element):
    set_vr(study[1], tag, vr)
    assert read_header(study[1]) is Skip.UNREADABLE
    assert re.fullmatch(rf"{study[1].name}: {element} is not [a-z ]+ \(NotImplementedError\)", skipped(study[1]).detail)


def test_a_skipped_slice_inside_a_study_is_refused_as_missing(study):
    set_vr(study[2], 0x00200052, b"UA")
    with pytest.raises(MissingSlicesError, match=r"1 slice\(s\) missing"):
        scan_study(study[0].parent)


def test_a_skipped_end_slice_of_one_phase_is_refused_as_another_grid(study):
    set_vr(study[4], 0x00280002, b"\x55\xfe")
    with pytest.raises(InconsistentSeriesError, match=r"phases 0% and 50% are not on the same grid \(shape"):
        scan_study(study[0].parent)


def test_skipped_files_are_counted_and_explained_in_the_warnings(study):
    for path in (study[4], study[9]):  # the top slice of both phases
        set_vr(path, 0x00280002, b"\x55\xfe")
    index = scan_study(study[0].parent)
    assert index.scan.skipped == {Skip.UNREADABLE: 2}
    assert index.phases[0].geometry.shape == (4, 128, 128)
    assert "skipped 2 of 10 files (2 unreadable)" in index.warnings
    names = sorted(p.name for p in (study[4], study[9]))
    assert (f"unreadable files skipped: {names[0]}: SamplesPerPixel (0028,0002) is not one integer "
            f"(NotImplementedError); {names[1]}: SamplesPerPixel (0028,0002) is not one integer "
            f"(NotImplementedError)") in index.warnings


def test_no_ct_refusal_names_what_was_wrong_with_the_files(study):
    for path in study:
        set_vr(path, 0x00080018, b"ZZ")
    with pytest.raises(StudyError, match=r"no CT images among 10 files \(10 unreadable\); .*SOPInstanceUID "
                                         r"\(0008,0018\) is not text \(NotImplementedError\); and 7 more"):
        scan_study(study[0].parent)


def test_a_value_in_the_message_is_never_the_patients(study):
    set_vr(study[0], 0x00100010, b"QQ")  # PatientName with an unknown VR
    detail = skipped(study[0]).detail
    assert "PatientName (0010,0010)" in detail and "PHANTOM" not in detail


@pytest.mark.parametrize(("keyword", "tag", "value", "expected"), [
    ("ImagePositionPatient", 0x00200032, b"nan\\nan\\nan ", "3 finite numbers"),  # accepted as a NaN grid before
    ("ImagePositionPatient", 0x00200032, b"1e999\\0\\0 ", "3 finite numbers"),
    ("PixelSpacing", 0x00280030, b"inf\\1", "2 finite numbers"),
    ("RescaleSlope", 0x00281053, b"inf ", "one finite number"),
    ("RescaleIntercept", 0x00281052, b"-1e999", "one finite number"),
    ("SeriesNumber", 0x00200011, b"1e999 ", "one integer"),  # OverflowError before
    ("InstanceNumber", 0x00200013, b"1\\2 ", "one integer"),
    ("InstanceNumber", 0x00200013, b"1.5 ", "one integer"),
    ("Rows", 0x00280010, b"\x80\x00\x80\x00", "one integer"),  # two values of a VM 1 element
])
def test_values_that_are_not_numbers_make_the_file_unreadable(study, keyword, tag, value, expected):
    set_raw(study[0], tag, value)
    assert skipped(study[0]).detail == f"{study[0].name}: {keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not " \
                                       f"{expected} ({skipped(study[0]).detail.rsplit('(', 1)[1]}"


def test_a_nan_phase_percent_makes_the_file_unreadable(phantom_study, tmp_path):
    path = Path(shutil.copy(phantom_study[0], tmp_path / "x.dcm"))
    edit(path, NominalPercentageOfRespiratoryPhase=float("nan"))
    assert "NominalPercentageOfRespiratoryPhase (0020,9245) is not one finite number" in skipped(path).detail


def test_zero_rescale_slope_is_refused_not_read_as_one(study):
    edit(study[0], RescaleSlope="0")
    assert "RescaleSlope (0028,1053) is 0" in skipped(study[0]).detail


def test_a_length_that_does_not_fit_the_vr_is_unreadable(study):
    data = bytearray(study[0].read_bytes())
    rows = next(e for e in elements(bytes(data)) if e.tag == 0x00280010)  # US, 2 bytes: make it 3
    data[rows.length_offset:rows.length_offset + 2] = (3).to_bytes(2, "little")
    data[rows.value_offset:rows.value_offset] = b"\x00"
    study[0].write_bytes(bytes(data))
    assert "Rows (0028,0010) is not one integer (BytesLengthException)" in skipped(study[0]).detail


def test_the_caught_exceptions_are_pydicoms_not_everything():
    assert Exception not in MALFORMED_DICOM_ERRORS and BaseException not in MALFORMED_DICOM_ERRORS
    assert NameError not in MALFORMED_DICOM_ERRORS and AssertionError not in MALFORMED_DICOM_ERRORS


def test_an_unreadable_duplicate_of_an_instance_is_a_refusal_not_a_crash(study):
    # Manufacturer is not read by the header pass: only comparing the two files in full meets it
    extra = study[0].parent / "copy.dcm"
    shutil.copy(study[0], extra)
    set_vr(extra, 0x00080070, b"QQ")
    assert isinstance(read_header(extra), InstanceHeader)
    with pytest.raises(DuplicateInstanceError, match=r"SOPInstanceUID \w+ is used by 2 files with different "
                                                     r"content"):
        scan_study(study[0].parent)


def test_an_unknown_transfer_syntax_is_refused_as_undecodable(study):
    edit(study[0], TransferSyntaxUID="1.2.3.4")
    with pytest.raises(PixelDecodeError, match=r"TransferSyntaxUID '1.2.3.4' is not a transfer syntax"):
        scan_study(study[0].parent)


def test_nominal_percent_outside_the_cycle_is_refused(phantom_study, tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    for k, path in enumerate(phantom_study):
        copy = Path(shutil.copy(path, folder / path.name))
        edit(copy, SeriesDescription="4D Thorax", NominalPercentageOfRespiratoryPhase=150 if k >= 5 else 0)
    with pytest.raises(AmbiguousPhasesError, match=r"NominalPercentageOfRespiratoryPhase must be in \[0, 100\), got "
                                                   r"150"):
        scan_study(folder)


def test_phases_a_hair_apart_are_refused_instead_of_counting_to_infinity(phantom_study, tmp_path):
    # 0% and 1e-30% once made the completeness check count through 1e32 expected phases (a hang)
    folder = tmp_path / "study"
    folder.mkdir()
    for k, path in enumerate(phantom_study):
        copy = Path(shutil.copy(path, folder / path.name))
        edit(copy, SeriesDescription="4D Thorax", NominalPercentageOfRespiratoryPhase=1e-30 if k >= 5 else 0.0)
    with pytest.raises(AmbiguousPhasesError, match=r"phases 0% and 1e-30% are less than 1% of the breathing cycle "
                                                   r"apart"):
        scan_study(folder)


# --- UIDs -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1.2.3", "2.25.123456789", "1.2.840.0113.1", "0"])
def test_valid_uids(value):
    assert is_valid_uid(value)


@pytest.mark.parametrize("value", ["", "../../x", "1.2.abc", "1..2", "1.2.", ".1.2", "1.2.3\n", " 1.2", "1.2 3",
                                   "1\\2", "1." + "2" * 63, "١.٢"])
def test_invalid_uids(value):
    assert not is_valid_uid(value)


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"])
def test_a_study_with_an_invalid_uid_is_refused_naming_the_attribute_not_the_value(study, keyword):
    for path in study:
        edit(path, **{keyword: "../../x"})
    with pytest.raises(InvalidUIDError, match=rf"{keyword} is not a valid UID in 10 of 10 CT files \(e.g. "
                                              rf"\w+\.dcm; value hash {short_hash('../../x')}\)") as caught:
        scan_study(study[0].parent)
    assert caught.value.code == "invalid_uid" and "../../x" not in str(caught.value)


@pytest.mark.parametrize("value", ["1.2.840.abc", "1." + "9" * 70])
def test_one_invalid_sop_instance_uid_refuses_the_study(study, value):
    edit(study[1], SOPInstanceUID=value)
    with pytest.raises(InvalidUIDError, match=r"SOPInstanceUID is not a valid UID in 1 of 10 CT files"):
        scan_study(study[0].parent)


def test_one_invalid_study_uid_is_refused_before_it_looks_like_a_second_study(study):
    edit(study[4], StudyInstanceUID="1.2.3.x")
    with pytest.raises(InvalidUIDError, match=r"StudyInstanceUID is not a valid UID in 1 of 10 CT files"):
        scan_study(study[0].parent)


def test_leading_zeros_in_uids_are_tolerated(study):
    for path in study[:5]:  # phase 0%
        edit(path, SeriesInstanceUID="1.2.826.0.1.3680043.0001.1")
    assert scan_study(study[0].parent).phases[0].series_instance_uid == "1.2.826.0.1.3680043.0001.1"


# --- Enhanced CT ----------------------------------------------------------------------------------------------------


def test_the_reader_reads_classic_ct_only():
    assert {CT_IMAGE_STORAGE} == READABLE_IMAGE_SOP_CLASSES
    assert ENHANCED_CT_IMAGE_STORAGE in CT_SOP_CLASSES - READABLE_IMAGE_SOP_CLASSES


def test_enhanced_ct_is_refused_by_name(study):
    for path in study:
        edit(path, SOPClassUID=ENHANCED_CT_IMAGE_STORAGE)
    assert read_header(study[0]).sop_class_uid == ENHANCED_CT_IMAGE_STORAGE  # read, so that it is refused by name
    with pytest.raises(UnsupportedImageError, match=r"10 CT file\(s\), e.g. .*: Enhanced CT Image Storage images are "
                                                    r"not read \(only CT Image Storage\)"):
        scan_study(study[0].parent)


# --- deflated datasets ----------------------------------------------------------------------------------------------


def deflated_ct(source: Path, path: Path, pixel_bytes: int | None = None) -> Path:
    ds = pydicom.dcmread(source)
    if pixel_bytes is not None:  # zeros: they deflate about a thousand times
        ds.PixelData = bytes(pixel_bytes)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_small_deflated_ct_is_read(phantom_study, tmp_path):
    header = read_header(deflated_ct(phantom_study[0], tmp_path / "deflated.dcm"))
    assert isinstance(header, InstanceHeader) and header.transfer_syntax_uid == DeflatedExplicitVRLittleEndian


def test_a_deflate_bomb_is_skipped_without_inflating_it(phantom_study, tmp_path):
    path = deflated_ct(phantom_study[0], tmp_path / "bomb.dcm", MAX_INFLATED_BYTES + 2**20)
    assert path.stat().st_size < MAX_INFLATED_BYTES // 100
    assert "inflates to more than 64 MiB" in skipped(path).detail


def test_a_deflated_dataset_that_does_not_inflate_is_unreadable(phantom_study, tmp_path):
    path = deflated_ct(phantom_study[0], tmp_path / "broken.dcm")
    data = bytearray(path.read_bytes())
    start = len(data) - len(zlib.compress(b"")) - 200
    data[start:] = b"\xff" * (len(data) - start)
    path.write_bytes(bytes(data))
    assert read_header(path) is Skip.UNREADABLE


# --- the preamble ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("magic", [b"\x7fELF\x02\x01\x01", b"PK\x03\x04\x14\x00"])
def test_zero_preamble_clears_an_executable_or_archive_header(phantom_study, tmp_path, magic):
    path = Path(shutil.copy(phantom_study[0], tmp_path / "x.dcm"))
    original = path.read_bytes()
    path.write_bytes(magic + original[len(magic):])
    assert zero_preamble(path) is True
    data = path.read_bytes()
    assert data[:128] == bytes(128) and data[128:] == original[128:]
    assert zero_preamble(path) is False and path.read_bytes() == data
    assert pydicom.dcmread(path).SOPInstanceUID == pydicom.dcmread(phantom_study[0]).SOPInstanceUID


def test_zero_preamble_leaves_other_files_alone(tmp_path):
    for name, content in (("notes.txt", b"\x7fELF" + b"x" * 300), ("short.dcm", b"\x7fELF" + bytes(100) + b"DI"),
                          ("empty", b""), ("nometa.dcm", b"PK\x03\x04" + bytes(124) + b"DIC!" + bytes(10))):
        path = tmp_path / name
        path.write_bytes(content)
        assert zero_preamble(path) is False and path.read_bytes() == content


def test_a_study_still_reads_after_its_preambles_are_zeroed(study):
    for path in study:
        path.write_bytes(b"MZ\x90\x00" + path.read_bytes()[4:])
        assert zero_preamble(path)
    volume = load_study(scan_study(study[0].parent)).phases[0].volume
    assert volume.shape == (5, 128, 128) and np.isfinite(volume).all()

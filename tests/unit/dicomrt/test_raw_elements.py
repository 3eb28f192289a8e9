"""Elements encoded by ``dicomrt.raw_elements`` are byte for byte what pydicom encodes, and read back as written."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag

from dicomrt.raw_elements import element, item, raw_sequence, sequence


def pydicom_bytes(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def test_elements_items_and_nested_sequences_are_encoded_as_pydicom_encodes_them():
    long_data = ["-123.4567"] * 7000  # past a 2-byte length: UN, as pydicom writes it
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = "1.2.3.44"  # odd length: padded with NUL
    contour = Dataset()
    contour.ContourImageSequence = [image]
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = 7
    contour.ContourData = [1.5, -2.25, 3.0]
    expected = Dataset()
    expected.ROIContourSequence = [Dataset()]
    expected.ROIContourSequence[0].ROIDisplayColor = [255, 0, 7]
    long = Dataset()
    long.ContourData = long_data
    expected.ROIContourSequence[0].ContourSequence = [contour, long]
    ours = sequence(Tag("ROIContourSequence"), [item(
        element(Tag("ROIDisplayColor"), "IS", "255\\0\\7"),
        sequence(Tag("ContourSequence"), [item(
            sequence(Tag("ContourImageSequence"), [item(element(Tag("ReferencedSOPClassUID"), "UI",
                                                                "1.2.840.10008.5.1.4.1.1.2"),
                                                        element(Tag("ReferencedSOPInstanceUID"), "UI", "1.2.3.44"))]),
            element(Tag("ContourGeometricType"), "CS", "CLOSED_PLANAR"),
            element(Tag("NumberOfContourPoints"), "IS", "7"),
            element(Tag("ContourData"), "DS", "1.5\\-2.25\\3.0")),
            item(element(Tag("ContourData"), "DS", "\\".join(long_data)))]))])
    with pytest.warns(UserWarning, match="64 kByte"):
        assert ours == pydicom_bytes(expected)


def test_a_raw_sequence_reads_back_and_is_written_as_it_is():
    colour = item(element(Tag("ROIDisplayColor"), "IS", "1\\2\\3"), element(Tag("ReferencedROINumber"), "IS", "1"))
    ds = Dataset()
    ds[Tag("ROIContourSequence")] = raw_sequence(Tag("ROIContourSequence"), [colour])
    ds.set_original_encoding(False, True, ds._character_set)
    written = pydicom_bytes(ds)
    assert written == sequence(Tag("ROIContourSequence"), [colour])
    assert list(ds.ROIContourSequence[0].ROIDisplayColor) == [1, 2, 3]
    assert ds.ROIContourSequence[0].ReferencedROINumber == 1

"""Writing the images of a CT series: the part of a CT Image Storage file that every CT series we write shares.

Two writers make CT series: ``dicomrt.derived`` (the AIP and MIP of a study) and ``dicomrt.phantom.writer`` (the
phantom's phases and AIP). Each puts the attributes that are its own into a ``Dataset`` (patient and study, series,
the image plane in its own number format, rescale, window); ``write_ct_image`` adds the rest from the stored values
(SOP class, Modality, the Image Pixel module, the pixel data, compressed when asked, and the Part 10 file meta) and
writes the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian


def write_ct_image(path: Path, ds: Dataset, stored: np.ndarray, *, bits_stored: int = 16,
                   transfer_syntax: UID = ExplicitVRLittleEndian, check_lossless: bool = False) -> None:
    """Complete ``ds`` (which holds SOPInstanceUID) as a CT image of the pixel values ``stored`` and write it to
    ``path`` (Part 10, file meta included).

    ``stored``: (rows, columns) int16 or uint16 stored values (HU = value · RescaleSlope + RescaleIntercept, which
    ``ds`` holds), 16 bits allocated of which ``bits_stored`` are used. ``transfer_syntax``: Explicit VR Little Endian
    (native pixel data) or a lossless compressed syntax, encoded by pylibjpeg; ``check_lossless`` decodes compressed
    pixel data again and raises if it differs from ``stored``.
    """
    stored = np.asarray(stored)
    if stored.ndim != 2 or stored.dtype not in (np.int16, np.uint16):
        raise ValueError(f"stored must be (rows, columns) int16 or uint16, got {stored.shape} {stored.dtype}")
    if not 1 <= bits_stored <= 16:
        raise ValueError(f"bits_stored must be between 1 and 16, got {bits_stored}")
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pixels = np.ascontiguousarray(stored, dtype=stored.dtype.newbyteorder("<"))
    if transfer_syntax == ExplicitVRLittleEndian:
        ds.PixelData = pixels.tobytes()
        ds["PixelData"].VR = "OW"
    else:
        ds.compress(transfer_syntax, pixels, encoding_plugin="pylibjpeg", generate_instance_uid=False)
        if check_lossless and not np.array_equal(ds.pixel_array, stored):
            raise RuntimeError(f"{transfer_syntax.name} encoding is not lossless here: decoded pixels differ")
    pydicom.dcmwrite(path, ds, enforce_file_format=True)

"""A tiny CT series (a few 8x8 slices, no phase information) that the reader accepts as a 3D CT study: the smallest
upload the gateway makes a job of, for tests that post many uploads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomrt.ct_series import write_ct_image
from dicomrt.identifiers import new_uid


def tiny_ct(folder: Path, *, slices: int = 3, size: int = 8, seed: int = 0,
            transfer_syntax: UID = ExplicitVRLittleEndian) -> list[Path]:
    """Write ``slices`` CT images of ``size`` x ``size`` pixels (1 mm pixels, 2 mm apart) into ``folder``; the UIDs
    derive from ``seed``. Returns the files in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = (new_uid("tiny-ct", seed, what) for what in ("study", "series", "frame"))
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(slices):
        ds = Dataset()
        ds.SOPInstanceUID = new_uid(series, k)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = "Tiny^CT", f"TINY-{seed}", "20240101", "120000"
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 1, k + 1, "tiny CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0, 0, 2 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 2
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        path = folder / f"tiny{seed}_{k:03d}.dcm"
        write_ct_image(path, ds, rng.integers(0, 2000, (size, size), dtype=np.uint16), bits_stored=12,
                       transfer_syntax=transfer_syntax)
        paths.append(path)
    return paths

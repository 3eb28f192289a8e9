"""Real data for the RT output tests: the TotalSegmentator CT and its label maps (``../shared/data``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pydicom

from dicomrt.reader import scan_study
from dicomrt.structures import RoiType, StructureSpec
from dicomrt.study import StudyIndex

# TotalSegmentator label → TG-263 name; volumes on the 20-slice CT: liver ~700 cm³, spleen ~250, stomach ~140,
# aorta ~22, spinal cord ~9.
TOTALSEG_STRUCTURES = {"liver": "Liver", "spleen": "Spleen", "stomach": "Stomach", "aorta": "A_Aorta",
                       "spinal_cord": "SpinalCord"}


@cache
def totalseg_index(data: Path) -> StudyIndex:
    return scan_study(data / "totalseg_ct")


@cache
def totalseg_masks(data: Path) -> dict[str, np.ndarray]:
    """TG-263 name → (z, y, x) bool on the totalseg_ct grid (z ascending in patient z)."""
    archive = np.load(data / "totalseg_labels.npz")
    labels = archive["labels"]
    by_name = {name: int(label) for label, name in json.loads(str(archive["names"])).items()}
    return {tg263: labels == by_name[name] for name, tg263 in TOTALSEG_STRUCTURES.items()}


def totalseg_specs() -> tuple[StructureSpec, ...]:
    return tuple(StructureSpec(name, (name.lower(),), (200, 100, 50 + 30 * k), RoiType.ORGAN)
                 for k, name in enumerate(TOTALSEG_STRUCTURES.values()))


def native_copy(folder: Path, out: Path) -> Path:
    """A copy of a CT series decompressed to explicit VR little endian (plastimatch cannot read JPEG 2000)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        ds.save_as(out / path.name)
    return out

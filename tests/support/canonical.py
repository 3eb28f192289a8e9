"""A job's outputs as digests that are equal exactly when the outputs are equal after parsing.

What is made anew by every run is left out or renamed: dates and times (DA, TM, DT), and UIDs that are not the
input study's (nor DICOM's own, ``1.2.840.10008.…``), which become ``uid1``, ``uid2``, … in their order of first
appearance within the job (so that references between our objects still have to agree). Everything else counts:
every element's value as stored (DS strings as written), pixel data by its bytes, ``summary.json`` but for its
timings, ``report.png`` by its decoded pixels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

_VOLATILE_VRS = {"DA", "TM", "DT"}
_DICOM_ROOT = "1.2.840.10008."


class _Uids:
    def __init__(self, known: set[str]) -> None:
        self.known, self.names = known, {}

    def __call__(self, uid: str) -> str:
        if uid in self.known or uid.startswith(_DICOM_ROOT):
            return uid
        return self.names.setdefault(uid, f"uid{len(self.names) + 1}")


def _lines(dataset: Dataset, uids: _Uids, depth: int = 0) -> list[str]:
    lines = []
    for element in dataset:
        if element.VR in _VOLATILE_VRS:
            continue
        head = f"{'  ' * depth}{element.tag} {element.VR}"
        if element.VR == "SQ":
            lines.append(head)
            for item in element.value:
                lines += [f"{'  ' * depth} item", *_lines(item, uids, depth + 1)]
        elif element.VR == "UI":
            values = element.value if isinstance(element.value, list | pydicom.multival.MultiValue) else [element.value]
            lines.append(f"{head} {[uids(str(v)) for v in values]}")
        elif isinstance(element.value, bytes):
            lines.append(f"{head} sha256:{hashlib.sha256(element.value).hexdigest()}")
        else:
            lines.append(f"{head} {element.value!r}")
    return lines


def output_digests(out_dir: Path, study_dir: Path) -> dict[str, str]:
    """Relative path → sha256 of the canonical form of every file of a job's output folder ``out_dir``, whose
    input study is in ``study_dir``."""
    known = set()
    for path in sorted(Path(study_dir).rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        known |= {str(e.value) for e in ds.iterall() if e.VR == "UI" and isinstance(e.value, str)}
    uids = _Uids(known)
    digests = {}
    for path in sorted(p for p in Path(out_dir).rglob("*") if p.is_file()):
        name = path.relative_to(out_dir).as_posix()
        if path.suffix == ".dcm":
            text = "\n".join(_lines(pydicom.dcmread(path), uids))
        elif path.name == "summary.json":
            summary = json.loads(path.read_text(encoding="utf-8"))
            summary.pop("timings")
            text = json.dumps(summary, sort_keys=True)
        elif path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                pixels = np.asarray(image)
            text = f"{pixels.shape} {hashlib.sha256(pixels.tobytes()).hexdigest()}"
        else:
            text = path.read_text(encoding="utf-8")
        digests[name] = hashlib.sha256(text.encode()).hexdigest()
    return digests

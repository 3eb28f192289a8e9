"""Finding the RTSTRUCTs of a clinic's export: files that are not DICOM are skipped, corrupt DICOM files refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.datasets import AnnotationError, NameMapping, load_rtstruct_study
from tests.unit.model.training_data import TOY_TEMPLATE

# A Part 10 preamble and prefix, then a file meta group length (UL) cut after one of its four bytes.
TRUNCATED_DICOM = b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\x01"


def test_rtstruct_search_skips_files_that_are_not_dicom(tmp_path: Path) -> None:
    study = tmp_path / "s1"
    study.mkdir()
    (study / "notes.txt").write_text("exported by a planning system\n")
    with pytest.raises(AnnotationError, match="s1: no RTSTRUCT found"):
        load_rtstruct_study(study, TOY_TEMPLATE, NameMapping())


def test_rtstruct_search_refuses_a_corrupt_dicom_file(tmp_path: Path) -> None:
    study = tmp_path / "s1"
    (study / "CT").mkdir(parents=True)
    (study / "CT" / "broken.dcm").write_bytes(TRUNCATED_DICOM)
    with pytest.raises(AnnotationError, match=r"s1/CT/broken.dcm: unreadable DICOM file \(BytesLengthException"):
        load_rtstruct_study(study, TOY_TEMPLATE, NameMapping())

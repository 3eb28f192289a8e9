"""Seeded mutation fuzzing of the header reader: about 1.5 minutes in CI on a busy 2-core machine, 3 at most.

Mutants of real headers (the phantom's vendor styles, ``../shared/data``'s vendor files, pydicom's CT and
big-endian MR) go through ``read_header`` one file at a time, and mutated studies through ``scan_study`` (then
``load_study`` for the phantom's): only a header, a ``Skip``, an accepted study or a ``StudyError`` may come out.
Any other exception, a hang, or an accepted object that breaks an invariant (non-finite geometry, an invalid UID)
fails the test, which lists each crash's recipe and where its input was saved (``$ITVSAM_FUZZ_CRASH_DIR``, else the
test's tmp folder): add it to ``tests/data/fuzz_regressions`` (see ``tests/fuzz/corpus.py``).

The inputs are fixed by the seed and the iteration counts; the time budget only stops a run on a much slower
machine early (the printed counts then say how far it got). ``ITVSAM_FUZZ_SCALE=10`` runs ten times as many.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import _shared_data_dir
from tests.fuzz.runner import Base, Report, fuzz_files, fuzz_folders, phantom_bases, real_bases

pytestmark = pytest.mark.slow

SCALE = float(os.environ.get("ITVSAM_FUZZ_SCALE", "1"))
FILE_ITERATIONS = int(2000 * SCALE)  # per base: 16 bases with ../shared/data
FOLDER_ITERATIONS = int(400 * SCALE)  # per study: 10 studies with ../shared/data
FILE_BUDGET_S = 100 * SCALE
FOLDER_BUDGET_S = 70 * SCALE


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> tuple[list[Base], list[Base]]:
    singles, folders = phantom_bases(tmp_path_factory.mktemp("fuzz-bases"))
    real_singles, real_folders = real_bases(_shared_data_dir())
    return singles + real_singles, folders + real_folders


def _crash_dir(tmp_path: Path) -> Path:
    return Path(os.environ.get("ITVSAM_FUZZ_CRASH_DIR") or tmp_path / "crashes")


def _check(report: Report, capsys) -> None:
    with capsys.disabled():  # the counts belong in the CI log, passed or not
        print("\n" + "\n".join(report.lines()))  # noqa: T201 - the fuzzer's figures, for the CI log
    crashes = "\n".join(f"  {c.outcome} [{c.base} seed {c.seed} iteration {c.iteration}] {c.mutations}: {c.detail} "
                        f"-> {c.saved}" for c in report.crashes[:20])
    assert not report.crashes, f"{len(report.crashes)} inputs crashed the reader:\n{crashes}"
    assert report.inputs > 0


def test_read_header_returns_a_header_or_a_skip_for_every_mutant(bases, tmp_path, capsys):
    singles, _ = bases
    report = fuzz_files(singles, tmp_path / "work", FILE_ITERATIONS, FILE_BUDGET_S, _crash_dir(tmp_path))
    _check(report, capsys)
    assert {o.split(":")[0] for o in report.outcomes} >= {"header", "skip"}


def test_scan_study_accepts_or_refuses_every_mutated_study(bases, tmp_path, capsys):
    _, folders = bases
    report = fuzz_folders(folders, tmp_path / "work", FOLDER_ITERATIONS, FOLDER_BUDGET_S, _crash_dir(tmp_path))
    _check(report, capsys)
    assert report.outcomes["loaded"] > 0 and sum(n for o, n in report.outcomes.items() if o.startswith("refused")) > 0

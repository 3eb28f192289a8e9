"""Every input of the fuzzer's regression corpus (``tests/data/fuzz_regressions``) that once crashed the reader: it
must now give a header or a ``Skip`` from ``read_header``, and a refusal or an accepted study from ``scan_study``."""

from __future__ import annotations

import pytest

from tests.conftest import _shared_data_dir
from tests.fuzz.corpus import CORPUS, items, mutant, replay
from tests.fuzz.runner import Base, phantom_bases, real_bases

ITEMS = items()


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Base]:
    names = {item.study["base"] for item in ITEMS if item.study}
    _, folders = phantom_bases(tmp_path_factory.mktemp("corpus-studies"), names)
    return {base.name: base for base in folders}


@pytest.fixture(scope="module")
def bases() -> dict[str, Base]:
    """The other projects' files the patches apply to (``../shared/data`` ones only where it is present)."""
    singles, _ = real_bases(_shared_data_dir())
    return {base.name: base for base in singles}


def test_the_corpus_is_small_and_listed():
    files = {p.name for p in CORPUS.glob("*.dcm")}
    assert files == {item.file for item in ITEMS if item.file}
    assert all((item.file is None) != (item.patch is None) for item in ITEMS)
    assert len(ITEMS) >= 30 and len({item.name for item in ITEMS}) == len(ITEMS)
    assert all((CORPUS / name).stat().st_size <= 16384 for name in files)


@pytest.mark.filterwarnings("ignore")  # pydicom warns about the values the corpus breaks on purpose
@pytest.mark.parametrize("item", ITEMS, ids=[item.name for item in ITEMS])
def test_corpus_input_is_skipped_or_refused(item, studies, bases, tmp_path):
    data = mutant(item, bases)
    if data is None:
        pytest.skip(f"the base file of {item.name} is in ../shared/data, which is absent")
    file_outcome, study_outcome = replay(item, data, studies, tmp_path)
    assert file_outcome == "header" or file_outcome.startswith("skip:"), (item.found, file_outcome)
    assert study_outcome.startswith("refused:") or study_outcome in ("accepted", "loaded"), (item.found, study_outcome)

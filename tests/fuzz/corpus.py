"""The regression corpus of the header fuzzer: inputs that crashed the reader once.

``tests/data/fuzz_regressions/manifest.json`` lists each input with what the reader did with it before the fix
(``found``) and the recipe that made it (base, seed, iteration, mutations). Mutants of the phantom (our own synthetic
data) are kept as header-only files; mutants of other projects' files (``../shared/data``, pydicom's test files),
which are not copied into this project, are kept as ``patch``: byte edits ``[start, end, new bytes as hex]`` of the
base file, whose SHA-256 is recorded. An input that only failed inside a study names the phantom study it replaces a
file of (``study``: base and file name; the stored header is spliced onto that file's pixel data again).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fuzz.mutations import splice
from tests.fuzz.runner import Base, classify_file, classify_folder

CORPUS = Path(__file__).resolve().parents[1] / "data" / "fuzz_regressions"
MANIFEST = CORPUS / "manifest.json"


@dataclass(frozen=True)
class Item:
    name: str
    found: str
    recipe: dict[str, Any]
    file: str | None = None  # a header-only file in CORPUS
    patch: dict[str, Any] | None = None  # {"base": name, "sha256": of the base file, "edits": [[start, end, hex]]}
    study: dict[str, str] | None = None


def items() -> list[Item]:
    return [Item(**entry) for entry in json.loads(MANIFEST.read_text())]


def make_patch(base_name: str, base: bytes, mutant: bytes) -> dict[str, Any]:
    """The byte edits that turn ``base`` into ``mutant`` (only the changed bytes are kept)."""
    matcher = difflib.SequenceMatcher(None, base, mutant, autojunk=False)
    edits = [[i1, i2, mutant[j1:j2].hex()] for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]
    return {"base": base_name, "sha256": hashlib.sha256(base).hexdigest(), "edits": edits}


def apply_patch(patch: dict[str, Any], base: bytes) -> bytes:
    if hashlib.sha256(base).hexdigest() != patch["sha256"]:
        raise ValueError(f"base {patch['base']} is not the file the patch was made from")
    data = bytearray(base)
    for start, end, new in sorted(patch["edits"], reverse=True):
        data[start:end] = bytes.fromhex(new)
    return bytes(data)


def mutant(item: Item, bases: dict[str, Base]) -> bytes | None:
    """The input's bytes; None when its base file is not here (``../shared/data`` absent)."""
    if item.file is not None:
        return (CORPUS / item.file).read_bytes()
    base = bases.get(item.patch["base"])
    return None if base is None else apply_patch(item.patch, base.files[0].read_bytes())


def replay(item: Item, data: bytes, studies: dict[str, Base], work: Path) -> tuple[str, str]:
    """(``read_header`` outcome, study outcome) of ``data``, the input of ``item``: the study is the phantom study of
    ``item.study`` with the input in place of its file, or else a folder holding the input alone (which still
    reaches the UID and pixel-format checks)."""
    folder = work / item.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if item.study is None:
        path = folder / f"{item.name}.dcm"
        path.write_bytes(data)
        return classify_file(path), classify_folder(folder, load=False)
    base = studies[item.study["base"]]
    (replaced,) = [p for p in base.files if p.name == item.study["replaces"]]
    single = work / f"{item.name}-alone.dcm"
    single.write_bytes(splice(data, replaced.read_bytes()))
    for original in base.files:
        shutil.copy(single if original == replaced else original, folder / original.name)
    return classify_file(single), classify_folder(folder, load=base.load)

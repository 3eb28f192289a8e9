"""A seeded mutation fuzzer for DICOM Part-10 headers: the element walker, the mutations and their recipes.

A mutant is fully described by its recipe ``(base name, seed, iteration)``: ``mutate(base, Random(f"{seed}:{name}:
{iteration}"))`` gives the same bytes on every machine, so a crash found in CI is replayed from its recipe alone.
Mutations aim at the header (everything before Pixel Data): bit flips, interesting bytes, truncation, VR codes,
length fields, element duplication, insertion, deletion and reordering, and values replaced by hostile ones (NaN,
overflowing numbers, UIDs with path characters, wrong transfer syntaxes, odd character sets) with a consistent length.
"""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

PREAMBLE = 128
_PIXEL_DATA = 0x7FE00010
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_SHORT_VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
              b"SS", b"ST", b"TM", b"UI", b"UL", b"US"]
_IMPLICIT_LE, _EXPLICIT_BE, _DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"

# Tags the reader interprets: mutations prefer them.
TARGET_TAGS = frozenset({
    0x00020002, 0x00020003, 0x00020010, 0x00080005, 0x00080008, 0x00080016, 0x00080018, 0x00080032, 0x00080033,
    0x00080060, 0x0008103E, 0x00100010, 0x00100020, 0x0020000D, 0x0020000E, 0x00200011, 0x00200013, 0x00200032,
    0x00200037, 0x00200052, 0x00200100, 0x00200105, 0x00209128, 0x00209245, 0x00280002, 0x00280004, 0x00280008,
    0x00280010, 0x00280011, 0x00280030, 0x00280100, 0x00280103, 0x00281052, 0x00281053,
})
INTERESTING_BYTES = (0x00, 0x01, 0x20, 0x2E, 0x30, 0x5C, 0x7F, 0x80, 0xFE, 0xFF)
INTERESTING_TEXT = (
    b"", b" ", b"nan", b"NaN", b"inf", b"-inf", b"1e999", b"-1e999", b"1e-300", b"1e308", b"-1e308", b"-0", b"0",
    b"-1", b"65536", b"99999999999999999999", b"1.5", b"+5", b"0x10", b"1\\2", b"1\\0\\0\\0\\1\\0\\0",
    b"1\\0\\0\\0\\0\\1", b"nan\\nan\\nan", b"1e308\\-1e308\\0", b"\\\\\\", b"../../x", b"1.2.abc", b"01.02.003",
    b"1..2", b"1." + b"9" * 70, b"2.25." + b"1" * 60, b"\x00\x00", b"\xff\xfe\xfd\xfc", b"A" * 300,
    b"1.2.840.10008.5.1.4.1.1.2.1", b"1.2.840.10008.5.1.4.1.1.4", b"1.2.840.10008.1.2.4.50", _EXPLICIT_BE.encode(),
    _DEFLATED.encode(), b"1.2.3", b"ISO_IR 192", b"ISO 2022 IR 87\\ISO 2022 IR 159", b"GB18030", b"\x1b$B", b"XYZ_123",
    b"MONOCHROME3", b"RGB", b"CT", b"MR", b"T=10%", b"T=10% 20%", b"150%", b"ORIGINAL\\PRIMARY\\AXIAL\\MIP",
)
INTERESTING_BINARY = (b"\x00\x00", b"\xff\xff", b"\x00\x80", b"\x01", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                      b"\x00\x00\x00\x00\x00\x00", b"\x08\x00\x10\x00")
INTERESTING_LENGTHS = (0, 1, 2, 3, 0x7F, 0xFF, 0xFFFF, 0xFFFE, 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF, 0x80000000)


@dataclass(frozen=True)
class Element:
    """One data element's layout in the file. Offsets are absolute; ``vr_offset`` is None in implicit VR."""

    offset: int  # the tag
    tag: int
    vr: bytes | None
    vr_offset: int | None
    length_offset: int
    length_size: int
    length: int  # 0xFFFFFFFF: undefined
    value_offset: int
    end: int  # first byte after the element (its value; the whole sequence for SQ)
    little: bool


def _walk(data: bytes, start: int, stop: int, *, explicit: bool, little: bool, out: list[Element], depth: int = 0,
          group_only: int | None = None) -> int:
    """Append the elements of ``data[start:stop]`` to ``out`` (descending into sequences); returns where it stopped.
    ``group_only``: stop at the first element of another group (the file meta)."""
    order = "<" if little else ">"
    pos = start
    while pos + 8 <= stop and len(out) < 4000 and depth < 8:
        group, number = struct.unpack_from(f"{order}HH", data, pos)
        tag = group << 16 | number
        if group_only is not None and group != group_only:
            return pos
        if tag in (_ITEM_END, _SEQUENCE_END):
            return pos + 8
        if tag == _ITEM:
            length = struct.unpack_from(f"{order}I", data, pos + 4)[0]
            end = stop if length == 0xFFFFFFFF else min(pos + 8 + length, stop)
            pos = _walk(data, pos + 8, end, explicit=explicit, little=little, out=out, depth=depth + 1)
            continue
        vr: bytes | None = None
        vr_offset = None
        if explicit and group != 0xFFFE:
            vr, vr_offset = data[pos + 4:pos + 6], pos + 4
            if vr in _LONG_VRS:
                if pos + 12 > stop:
                    return pos
                length_offset, length_size = pos + 8, 4
            elif vr.isalpha() and vr.isupper():
                length_offset, length_size = pos + 6, 2
            else:
                return pos  # not an element we can walk
        else:
            length_offset, length_size = pos + 4, 4
        length = int.from_bytes(data[length_offset:length_offset + length_size], "little" if little else "big")
        value_offset = length_offset + length_size
        if length == 0xFFFFFFFF:
            end = value_offset
            element = Element(pos, tag, vr, vr_offset, length_offset, length_size, length, value_offset, end, little)
            out.append(element)
            if tag == _PIXEL_DATA:
                return pos
            end = _walk(data, value_offset, stop, explicit=explicit, little=little, out=out, depth=depth + 1)
            out[out.index(element)] = Element(pos, tag, vr, vr_offset, length_offset, length_size, length,
                                              value_offset, end, little)
            pos = end
            continue
        end = value_offset + length
        out.append(Element(pos, tag, vr, vr_offset, length_offset, length_size, length, value_offset, min(end, stop),
                           little))
        if tag == _PIXEL_DATA or end > stop:
            return pos
        if vr == b"SQ" or (vr is None and tag in _IMPLICIT_SEQUENCES):
            _walk(data, value_offset, end, explicit=explicit, little=little, out=out, depth=depth + 1)
        pos = end
    return pos


# Sequences of the CT headers at hand, for walking implicit VR files (a tag's VR is not in the file there).
_IMPLICIT_SEQUENCES = frozenset({0x00081110, 0x00081111, 0x00081115, 0x00081120, 0x00081140, 0x00082112, 0x00089215,
                                 0x00400275, 0x30060010, 0x30060012, 0x30060014, 0x30060016, 0x30060020, 0x30060039,
                                 0x30060040, 0x30060080, 0x300E0002})


def elements(data: bytes) -> list[Element]:
    """The elements of a Part-10 file as far as they can be walked (a damaged file gives those before the damage)."""
    if len(data) < PREAMBLE + 4 or data[PREAMBLE:PREAMBLE + 4] != b"DICM":
        return []
    found: list[Element] = []
    meta_end = _walk(data, PREAMBLE + 4, len(data), explicit=True, little=True, out=found, group_only=0x0002)
    syntax = next((data[e.value_offset:e.end].rstrip(b"\x00 ").decode("latin-1") for e in found
                   if e.tag == 0x00020010), "")
    if syntax == _DEFLATED:
        return found
    _walk(data, meta_end, len(data), explicit=syntax != _IMPLICIT_LE, little=syntax != _EXPLICIT_BE, out=found)
    return found


def header_end(data: bytes, found: list[Element]) -> int:
    """Where Pixel Data starts (its tag), or the end of the file: mutations stay before it."""
    return next((e.offset for e in found if e.tag == _PIXEL_DATA), len(data))


# --- mutations ------------------------------------------------------------------------------------------------------

Mutation = Callable[[random.Random, bytearray, list[Element], int], str]


def _bit_flips(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    flips = [(rng.randrange(end), rng.randrange(8)) for _ in range(rng.choice((1, 1, 2, 4, 8)))]
    for offset, bit in flips:
        data[offset] ^= 1 << bit
    return "bit flips " + ", ".join(f"{o}:{b}" for o, b in flips)


def _bytes(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    offset = rng.randrange(end)
    count = rng.choice((1, 1, 2, 4))
    value = rng.choice(INTERESTING_BYTES)
    data[offset:offset + count] = bytes([value]) * len(data[offset:offset + count])
    return f"{count} byte(s) at {offset} = 0x{value:02x}"


def _truncate(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    cut = rng.randrange(min(end + 32, len(data)))
    del data[cut:]
    return f"truncated at {cut}"


def _element(rng: random.Random, found: list[Element], *, need_vr: bool = False) -> Element | None:
    pool = [e for e in found if e.tag != _PIXEL_DATA and (e.vr_offset is not None or not need_vr)]
    if not pool:
        return None
    targets = [e for e in pool if e.tag in TARGET_TAGS]
    return rng.choice(targets if targets and rng.random() < 0.6 else pool)


def _tag(e: Element) -> str:
    return f"({e.tag >> 16:04X},{e.tag & 0xFFFF:04X})"


def _vr(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    e = _element(rng, found, need_vr=True)
    if e is None:
        return _bit_flips(rng, data, found, end)
    choice = rng.randrange(4)
    if choice == 0:  # one flipped bit, as a bad disk or link would
        vr = bytearray(e.vr)
        vr[rng.randrange(2)] ^= 1 << rng.randrange(8)
        new = bytes(vr)
    elif choice == 1:
        new = bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(2))
    elif choice == 2:
        new = rng.choice(_SHORT_VRS + sorted(_LONG_VRS))
    else:
        new = bytes(rng.randrange(256) for _ in range(2))
    data[e.vr_offset:e.vr_offset + 2] = new
    return f"VR of {_tag(e)} {e.vr!r} -> {new!r}"


def _length(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    e = _element(rng, found)
    if e is None:
        return _bit_flips(rng, data, found, end)
    current = e.length if e.length != 0xFFFFFFFF else 0
    length = rng.choice((*INTERESTING_LENGTHS, current + 1, max(current - 1, 0), current * 2, len(data),
                         rng.randrange(1 << (8 * e.length_size))))
    length &= (1 << (8 * e.length_size)) - 1
    data[e.length_offset:e.length_offset + e.length_size] = length.to_bytes(e.length_size,
                                                                            "little" if e.little else "big")
    return f"length of {_tag(e)} {e.length} -> {length}"


def _duplicate(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    e = _element(rng, found)
    if e is None:
        return _bit_flips(rng, data, found, end)
    chunk = bytes(data[e.offset:e.end])
    where = e.end if rng.random() < 0.6 else rng.choice(found).offset
    data[where:where] = chunk
    return f"{_tag(e)} duplicated at {where}"


def _delete(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    e = _element(rng, found)
    if e is None:
        return _truncate(rng, data, found, end)
    del data[e.offset:e.end]
    return f"{_tag(e)} deleted"


def _swap(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    pairs = [(a, b) for a, b in itertools.pairwise(found) if a.end == b.offset and b.tag != _PIXEL_DATA]
    if not pairs:
        return _bit_flips(rng, data, found, end)
    a, b = rng.choice(pairs)
    data[a.offset:b.end] = data[b.offset:b.end] + data[a.offset:a.end]
    return f"{_tag(a)} and {_tag(b)} swapped"


def _encode_element(e_like: Element | None, tag: int, vr: bytes, value: bytes, *, explicit: bool, little: bool,
                    ) -> bytes:
    order = "<" if little else ">"
    head = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
    if not explicit:
        return head + struct.pack(f"{order}I", len(value)) + value
    if vr in _LONG_VRS:
        return head + vr + b"\x00\x00" + struct.pack(f"{order}I", len(value)) + value
    return head + vr + struct.pack(f"{order}H", min(len(value), 0xFFFF)) + value[:0xFFFF]


def _hostile_value(rng: random.Random, vr: bytes | None) -> bytes:
    if vr in (b"US", b"SS", b"UL", b"SL", b"FL", b"FD", b"AT", b"OB", b"OW") and rng.random() < 0.7:
        return rng.choice(INTERESTING_BINARY)
    value = rng.choice(INTERESTING_TEXT)
    return value + b" " if len(value) % 2 and rng.random() < 0.8 else value


def _value(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    """A value replaced by a hostile one, with its length field made to match (so the rest of the file still
    parses and the value itself reaches the reader)."""
    e = _element(rng, found)
    if e is None or e.length == 0xFFFFFFFF:
        return _bytes(rng, data, found, end)
    value = _hostile_value(rng, e.vr)
    if e.length_size == 2:
        value = value[:0xFFFF]
    order = "little" if e.little else "big"
    data[e.value_offset:e.end] = value
    data[e.length_offset:e.length_offset + e.length_size] = len(value).to_bytes(e.length_size, order)
    return f"value of {_tag(e)} -> {value[:40]!r}"


def _insert(rng: random.Random, data: bytearray, found: list[Element], end: int) -> str:
    """A new element (a tag the reader reads, any VR, a hostile value) at an element boundary: out of order, or
    a second copy of a tag, or a VR its tag never has."""
    if not found:
        return _bit_flips(rng, data, found, end)
    where = rng.choice(found)
    tag = rng.choice(sorted(TARGET_TAGS))
    explicit = where.vr_offset is not None
    vr = rng.choice(_SHORT_VRS + sorted(_LONG_VRS))
    value = _hostile_value(rng, vr)
    data[where.offset:where.offset] = _encode_element(where, tag, vr, value, explicit=explicit, little=where.little)
    return f"inserted ({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr.decode('latin-1')} {value[:30]!r} at {where.offset}"


MUTATIONS: dict[str, Mutation] = {
    "bit_flip": _bit_flips,
    "bytes": _bytes,
    "truncate": _truncate,
    "vr": _vr,
    "length": _length,
    "duplicate": _duplicate,
    "insert": _insert,
    "delete": _delete,
    "swap": _swap,
    "value": _value,
}
# Weights: value and VR mutations reach the reader's interpretation; byte-level ones the parser.
_WEIGHTS = {"bit_flip": 3, "bytes": 2, "truncate": 1, "vr": 3, "length": 2, "duplicate": 1, "insert": 2, "delete": 1,
            "swap": 1, "value": 5}


def mutate(base: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """One mutant of ``base``: 1 to 3 mutations stacked, each on the elements the previous one left walkable."""
    data = bytearray(base)
    done: list[str] = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        found = elements(bytes(data))
        end = max(1, min(header_end(bytes(data), found), len(data)))
        if len(data) == 0:
            break
        name = rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()))[0]
        done.append(f"{name}: {MUTATIONS[name](rng, data, found, end)}")
    return bytes(data), done


def recipe_rng(seed: int, name: str, iteration: int) -> random.Random:
    """The generator of mutant ``iteration`` of base ``name`` under ``seed``: a string seed, stable across runs and
    Python versions (no ``hash()``)."""
    return random.Random(f"{seed}:{name}:{iteration}")


PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"


def header_only(data: bytes) -> bytes:
    """``data`` cut a few bytes into Pixel Data (to store a mutant in the regression corpus: the header is what the
    reader parses; the pixels would only make the file large). Pixel Data is found by its tag's bytes, so a header
    the walker cannot follow is cut too."""
    at = data.find(PIXEL_DATA_TAG_LE, PREAMBLE)
    return data if at < 0 else data[:at + 32]


def splice(header: bytes, original: bytes) -> bytes:
    """A header-only mutant (``header_only``) made whole again with the pixel data of the file it came from."""
    at, original_at = header.find(PIXEL_DATA_TAG_LE, PREAMBLE), original.find(PIXEL_DATA_TAG_LE, PREAMBLE)
    return header if at < 0 or original_at < 0 else header[:at] + original[original_at:]

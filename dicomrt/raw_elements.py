"""Data elements encoded here, explicit VR little endian, byte for byte as pydicom encodes them.

Why: an RTSTRUCT of a full-size study holds thousands of contour items and image references. As pydicom ``Dataset``
items, each element is a Python object to build, then to check and encode when the file is written: most of the
writing time once the contours are traced. Encoded here straight to bytes, a whole sequence goes into its dataset as
one ``RawDataElement``, which pydicom writes as it is (in a dataset marked as encoded explicit VR little endian,
``Dataset.set_original_encoding``) and parses only when it is read. Values are ASCII text checked by the caller (UIDs
from the reader, integers, code strings, ContourData); ``tests/unit/dicomrt/test_raw_elements.py`` compares the
bytes with pydicom's own encoding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32  # VRs with a 4-byte length in explicit VR (PS3.5 7.1.2)

_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)


def element(tag: BaseTag, vr: str, value: str | bytes) -> bytes:
    """One encoded element. Text is padded to even length (UI with NUL, other VRs with a space); a value too long
    for a 2-byte length is written as UN (PS3.5 6.2.2), as pydicom does."""
    data = value.encode("ascii") if isinstance(value, str) else value
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    if vr not in EXPLICIT_VR_LENGTH_32 and len(data) > 0xFFFF:
        vr = "UN"
    if vr in EXPLICIT_VR_LENGTH_32:
        return struct.pack("<HH2s2xI", tag.group, tag.element, vr.encode(), len(data)) + data
    return struct.pack("<HH2sH", tag.group, tag.element, vr.encode(), len(data)) + data


def item(*elements: bytes) -> bytes:
    """One sequence item of encoded elements (given in ascending tag order), with its defined length."""
    content = b"".join(elements)
    return _ITEM + struct.pack("<I", len(content)) + content


def sequence(tag: BaseTag, items: Iterable[bytes]) -> bytes:
    """An encoded SQ element of encoded items, with its defined length (to nest in an item)."""
    return element(tag, "SQ", b"".join(items))


def raw_sequence(tag: BaseTag, items: Iterable[bytes]) -> RawDataElement:
    """An SQ element of encoded items, to put in a ``Dataset``."""
    value = b"".join(items)
    return RawDataElement(tag, "SQ", len(value), value, 0, False, True, True, False)

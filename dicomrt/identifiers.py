"""Identifiers: short hashes for logs (never the UID or patient id itself) and new DICOM UIDs."""

from __future__ import annotations

import hashlib
import re
import uuid

from pydicom.uid import RE_VALID_UID, generate_uid

# Name-based UUIDs of itvsam live in this namespace.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:itvsam")


def short_hash(value: str) -> str:
    """A 10-hex-digit SHA-256 digest of ``value``: stable across processes, safe to log, not reversible in practice."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]


# Digits and dots, no empty component: pydicom's pattern of a valid UID (``RE_VALID_UID``, the one ``UID.is_valid``
# uses), less its ban on leading zeros.
_DIGITS_AND_DOTS = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_valid_uid(value: str) -> bool:
    """Whether ``value`` can be a DICOM UID (PS3.5 §9.1): at most 64 characters, digits in dot-separated components.

    pydicom's pattern (``UID.is_valid``) decides, with one tolerance: components with a leading zero
    (``1.2.840.0113``), which PS3.5 forbids but older scanners wrote. Such a UID is harmless (digits and dots only,
    the same string the planning system holds, so references to it still match); refusing the study for it would gain
    nothing. Letters, spaces, slashes, backslashes, empty components or more than 64 characters are never accepted.
    """
    if len(value) > 64:
        return False
    # fullmatch, not pydicom's re.match: its "$" would accept a final newline ("1.2.3\n"); and no UID(value), which
    # strips spaces before checking.
    return re.fullmatch(RE_VALID_UID, value) is not None or _DIGITS_AND_DOTS.fullmatch(value) is not None


def new_uid(*entropy: object, prefix: str | None = None) -> str:
    """A new UID: ``2.25.<UUID as an integer>`` (ISO/IEC 9834-8), valid for a producer without a registered root,
    or under ``prefix`` (a site's own root, ending in ".").

    Deterministic when ``entropy`` is given (same inputs, same UID: a name-based UUID of their reprs), random
    otherwise. (pydicom's ``generate_uid`` ignores its entropy when it makes a ``2.25.`` UID, hence the UUID here.)
    """
    if prefix is not None:
        return str(generate_uid(prefix=prefix, entropy_srcs=[repr(e) for e in entropy] or None))
    if not entropy:
        return f"2.25.{uuid.uuid4().int}"
    return f"2.25.{uuid.uuid5(_NAMESPACE, '/'.join(repr(e) for e in entropy)).int}"

"""Identifiers: short hashes for logs (never the UID or patient id itself) and new DICOM UIDs."""

from __future__ import annotations

import hashlib
import uuid

from pydicom.uid import generate_uid

# Name-based UUIDs of itvsam live in this namespace.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:itvsam")


def short_hash(value: str) -> str:
    """A 10-hex-digit SHA-256 digest of ``value``: stable across processes, safe to log, not reversible in practice."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]


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

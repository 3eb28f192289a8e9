"""Identifiers: short hashes for logs (never the UID or patient id itself) and new DICOM UIDs."""

from __future__ import annotations

import hashlib

from pydicom.uid import generate_uid

# UIDs we create: ``2.25.<uuid>`` (ISO/IEC 9834-8), valid for any producer without a registered root. A site with
# its own root passes it as ``prefix``.
DEFAULT_UID_PREFIX: str | None = None


def short_hash(value: str) -> str:
    """A 10-hex-digit SHA-256 digest of ``value``: stable across processes, safe to log, not reversible in practice."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]


def new_uid(*entropy: object, prefix: str | None = DEFAULT_UID_PREFIX) -> str:
    """A new UID; deterministic when ``entropy`` is given (same inputs, same UID), random otherwise."""
    sources = [repr(e) for e in entropy] or None
    return str(generate_uid(prefix=prefix, entropy_srcs=sources))

"""Recognising respiratory phases and derived series from header values, in the conventions vendors use."""

from __future__ import annotations

import re
from enum import StrEnum


class SeriesKind(StrEnum):
    """What a CT volume is within a 4DCT study."""

    PHASE = "phase"  # one respiratory phase
    AVERAGE = "average"  # average intensity projection (AIP)
    MIP = "mip"  # maximum intensity projection
    MINIP = "minip"  # minimum intensity projection
    CT = "ct"  # a CT without phase information (a 3D CT, or a free-breathing scan beside a 4DCT)


# A number followed by a percent sign: "T=10%", "CT 10.0%", "Gated 10%", "Phase 10%", "50% Ex", "4D 0 %".
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s*%")
# Derived series, by words in SeriesDescription or values in ImageType. MinIP is tested before MIP.
_DERIVED: tuple[tuple[SeriesKind, re.Pattern[str]], ...] = (
    (SeriesKind.MINIP, re.compile(r"\bmin[\s_-]?ip\b|\bminimum\b", re.IGNORECASE)),
    (SeriesKind.MIP, re.compile(r"\bmip\b|\bmax[\s_-]?ip\b|\bmaximum\b", re.IGNORECASE)),
    (SeriesKind.AVERAGE, re.compile(r"\baip\b|\bavg\b|\bave(?:rage)?\b|\bave[\s_-]?ip\b|\bmean\b|\bavip\b",
                                    re.IGNORECASE)),
)


def percent_from_description(description: str) -> float | None:
    """The respiratory phase percent written in a SeriesDescription, or None when there is none.

    Raises ``ValueError`` when the description holds several different percentages (never guess which one).
    """
    values = {float(v) for v in _PERCENT.findall(description)}
    if not values:
        return None
    if len(values) > 1:
        raise ValueError(f"several percentages in SeriesDescription {description!r}: {sorted(values)}")
    value = values.pop()
    if not 0 <= value < 100:
        raise ValueError(f"phase percent must be in [0, 100), got {value:g} in SeriesDescription {description!r}")
    return value


def derived_kind(description: str, image_type: tuple[str, ...]) -> SeriesKind | None:
    """AVERAGE / MIP / MINIP when the description or ImageType marks a projection over phases, else None."""
    text = " ".join((description, *image_type))
    for kind, pattern in _DERIVED:
        if pattern.search(text):
            return kind
    return None


def phase_label(percent: float | None) -> str:
    """"10%" for a phase, "CT" for a volume without phase."""
    return "CT" if percent is None else f"{percent:g}%"

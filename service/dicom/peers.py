"""Who may send us studies (calling AE title *and* source address, both must match) and where results go.

Pure data and matching, no networking: the settings hold these (``ITVSAM_SCP_PEERS``, ``ITVSAM_DESTINATIONS``) and
the listener and the delivery loop consult them.
"""

from __future__ import annotations

import ipaddress
import json
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from dicomrt import layout

AE_TITLE_CHARS = set(" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~")


def check_ae_title(value: str) -> str:
    """An AE title: 1-16 printable ASCII characters other than backslash, not only spaces; returned stripped."""
    text = value.strip()
    if not 0 < len(text) <= 16 or not set(text) <= AE_TITLE_CHARS:
        raise ValueError(f"an AE title must be 1-16 printable ASCII characters without backslash, got {value!r}")
    return text


AETitle = Annotated[str, AfterValidator(check_ae_title)]


class Peer(BaseModel):
    """One allowed sender: its calling AE title and the address (or network, CIDR) it connects from."""

    model_config = ConfigDict(frozen=True)

    ae_title: AETitle
    host: str  # an IP address or a network such as 10.1.0.0/24

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"a peer's host must be an IP address or a CIDR network, got {value!r}") from None

    def matches(self, ae_title: str, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ae_title.strip() == self.ae_title and ip in ipaddress.ip_network(self.host)


def parse_peers(value: object) -> object:
    """``ITVSAM_SCP_PEERS``: a JSON list of ``{"ae_title", "host"}`` or the short form ``AE@HOST,AE@10.0.0.0/24``."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    peers = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        ae, sep, host = item.rpartition("@")
        if not sep:
            raise ValueError(f"a peer is AE_TITLE@HOST (an IP address or CIDR network), got {item!r}")
        peers.append({"ae_title": ae, "host": host})
    return peers


def allowed(peers: tuple[Peer, ...], ae_title: str, address: str) -> bool:
    """Whether some peer has this calling AE title *and* this source address."""
    return any(peer.matches(ae_title, address) for peer in peers)


class OutputKind(StrEnum):
    """Which of a job's outputs a destination receives."""

    REFERENCE = "reference"  # the ITV and every phase's target on the reference series
    PHASES = "phases"  # one RTSTRUCT per phase
    COMBINED = "combined"  # one RTSTRUCT over every phase series
    SEG = "seg"  # DICOM SEG per phase
    AIP = "aip"  # the average intensity projection series written by the job


_PATTERNS = {
    OutputKind.REFERENCE: (layout.REFERENCE_RTSTRUCT,),
    OutputKind.PHASES: (layout.PHASE_RTSTRUCTS,),
    OutputKind.COMBINED: (layout.COMBINED_RTSTRUCT,),
    OutputKind.SEG: (layout.SEGS,),
    OutputKind.AIP: (layout.AIP_FILES,),
}


def output_patterns(kinds: tuple[OutputKind, ...]) -> list[str]:
    """Glob patterns (relative to the job's output folder) of the chosen outputs, in a stable order."""
    return [pattern for kind in OutputKind if kind in kinds for pattern in _PATTERNS[kind]]


class Destination(BaseModel):
    """A planning system (or PACS) that receives results by C-STORE.

    ``calling_aets``: the jobs whose study was sent by one of these AE titles; empty: every job received over DICOM
    (the listener, or ``itvsam submit-dir --calling-ae``)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: AETitle
    host: str
    port: int = Field(gt=0, lt=65536)
    calling_aets: tuple[AETitle, ...] = ()
    outputs: tuple[OutputKind, ...] = (OutputKind.REFERENCE,)

    def serves(self, calling_ae: str | None) -> bool:
        if calling_ae is None:
            return False
        return not self.calling_aets or calling_ae.strip() in self.calling_aets


def parse_destinations(value: object) -> object:
    """``ITVSAM_DESTINATIONS``: a JSON list of destinations (see ``Destination``)."""
    if isinstance(value, str):
        text = value.strip()
        return json.loads(text) if text else []
    return value


def destinations_for(destinations: tuple[Destination, ...], calling_ae: str | None) -> list[Destination]:
    return [d for d in destinations if d.serves(calling_ae)]


def find_destination(destinations: tuple[Destination, ...], spec: str) -> Destination:
    """A configured destination by name, or an ad-hoc one written ``AE@HOST:PORT``."""
    for destination in destinations:
        if destination.name == spec:
            return destination
    ae, sep, address = spec.rpartition("@")
    host, colon, port = address.rpartition(":")
    if not (sep and colon and port.isdigit()):
        names = ", ".join(d.name for d in destinations) or "none configured"
        raise ValueError(f"a destination is a configured name ({names}) or AE@HOST:PORT, got {spec!r}")
    return Destination(name="adhoc", ae_title=ae, host=host, port=int(port))


def as_json(items: tuple[BaseModel, ...]) -> list[dict[str, Any]]:
    return [item.model_dump(mode="json") for item in items]

"""What the listener and the sender share: TCP_NODELAY on every DICOM connection, the requesting AE, C-ECHO."""

from __future__ import annotations

import socket

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from service.dicom.peers import Destination
from service.settings import ListenerSettings


class DicomNetworkError(Exception):
    """A peer could not be reached, refused the association, or answered with a failure status."""


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN: no Nagle delay (DICOM sends many small PDUs and waits for each answer; measured: Nagle's
    algorithm slows such transfers many-fold)."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


NODELAY = [(evt.EVT_CONN_OPEN, set_nodelay)]


def requestor_ae(settings: ListenerSettings) -> AE:
    """Our AE (``scp_ae_title``) as an association requestor, with the listener's timeouts."""
    ae = AE(ae_title=settings.scp_ae_title)
    ae.acse_timeout = settings.scp_acse_timeout_s
    ae.dimse_timeout = settings.scp_dimse_timeout_s
    ae.network_timeout = settings.scp_network_timeout_s
    ae.connection_timeout = settings.scp_acse_timeout_s
    return ae


def describe_failure(assoc: object, destination: Destination) -> str:
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    if getattr(assoc, "is_rejected", False):
        return f"{where} rejected the association"
    return f"{where} could not be reached, or aborted the association (no presentation context accepted?)"


def echo(destination: Destination, settings: ListenerSettings) -> None:
    """C-ECHO ``destination``; raises ``DicomNetworkError`` saying what went wrong."""
    ae = requestor_ae(settings)
    ae.add_requested_context(Verification)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, evt_handlers=NODELAY)
    if not assoc.is_established:
        raise DicomNetworkError(describe_failure(assoc, destination))
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or status.Status != 0x0000:
        code = f"0x{status.Status:04X}" if status else "no answer"
        raise DicomNetworkError(f"C-ECHO to {destination.ae_title}@{destination.host}:{destination.port}: {code}")

"""The DICOM listener of ``itvsam scp``: a pynetdicom Storage SCP for CT (and Verification) in front of the
collector, which turns complete studies into jobs through the same intake as an HTTP upload.

Event handlers are plain functions; what they need (the allow-list, the collector, the store's watermark check) is
passed in with ``evt_handlers=[(event, handler, [args])]``. Each refusal has its own answer:

- an association from a calling AE title / source address pair not on the allow-list: A-ASSOCIATE-RJ, rejected
  permanent, "calling AE title not recognised" (the address is checked too: AE titles alone are spoofable);
- more associations than ``scp_max_associations``: A-ASSOCIATE-RJ transient, local limit exceeded (pynetdicom);
- an SOP class or transfer syntax we do not take: the presentation context is refused at negotiation (only the SOP
  classes the study reader reads, ``dicomrt.instances.READABLE_IMAGE_SOP_CLASSES``: Enhanced CT, which it refuses,
  is not taken in the first place);
- the store below its disk watermark, or a study over the size or file limits: 0xA700 (out of resources);
- a dataset that is not a CT image: 0xA900; one that cannot be decoded: 0xC000; an unexpected error: 0xC001.

Throughput (``bench/bench_scp.py``: 1,200 CT images of 512x512 on one association from dcmtk's ``storescu``, a 2-core
machine shared with other work, medians of 3 runs): dcmtk's ``storescp`` ~700 images/s (575-1,080); pynetdicom
answering every C-STORE at once (``pynetdicom_alone``) ~590 (0.72x); this listener ~215 (0.31x; ~180, 0.26x, before
the short DUL poll and the uncopied write). What each image costs on top of pynetdicom, all of it before the status is
answered: writing the file to the store (~1.4 ms of CPU on ext4; with that alone, 0.41-0.44x), the reader's header
check (``read_header``, pydicom's parse and value conversions, ~0.75 ms alone, more under load) and its SHA-256
(~0.3 ms). dcmtk's ``storescp`` in front would not keep the refusals: it has no calling-AE/address allow-list, and it
runs ``--exec-on-reception`` after it has answered.
"""

from __future__ import annotations

import logging
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicomrt import raw_elements
from dicomrt.instances import PREAMBLE_LENGTH, READABLE_IMAGE_SOP_CLASSES
from dicomrt.reader import scan_study
from jobs.manifest import LateArrival, Manifest
from jobs.store import JobStore
from service.dicom.collector import OUT_OF_RESOURCES, CollectorConfig, InstanceRefused, StudyCollector
from service.dicom.delivery import DeliveryLoop, plan_deliveries
from service.dicom.net import set_nodelay
from service.dicom.peers import Peer, allowed
from service.intake import Queue, accept_study, disk_problem, record_refusal
from service.settings import ListenerSettings

logger = logging.getLogger(__name__)

# What the reader decodes (pylibjpeg): uncompressed, RLE, JPEG lossless, JPEG-LS lossless, JPEG 2000 lossless.
TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless,
                     JPEGLosslessSV1, JPEGLosslessP14, JPEGLSLossless, JPEG2000Lossless]
STORAGE_CLASSES = tuple(sorted(READABLE_IMAGE_SOP_CLASSES))
UNEXPECTED = 0xC001
REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03
# How long an association's DUL thread sleeps when it finds nothing to do (pynetdicom's default: 1 ms). Every C-STORE
# waits on it twice (for the request's first PDU, then for our response to be sent), so it bounds the listener even
# with a handler that does nothing: 512x512 CT images, measured with a no-op handler, ~310 images/s at 1 ms, ~500 at
# 0.2 ms, ~600 at 0.1 ms on an idle 2-core machine (240-280, 260-345, 310-350 on a loaded one). The price: an idle
# association's DUL wakes 5,000 times a second (~4 % of a core, measured) until it is released or its
# ``scp_network_timeout_s`` passes.
DUL_POLL_S = 0.0002


def check_peer(event: evt.Event, peers: tuple[Peer, ...]) -> None:
    """EVT_REQUESTED: reject the association unless its calling AE title and source address are allowed."""
    calling = event.assoc.requestor.primitive.calling_ae_title
    address = event.assoc.requestor.address
    if not allowed(peers, calling, address):
        logger.warning("association refused: calling AE %r from %s is not an allowed peer", calling, address)
        event.assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED)
        event.assoc.kill()  # as pynetdicom's own rejections: lets the DUL send the A-ASSOCIATE-RJ before closing


def tune_connection(event: evt.Event) -> None:
    """EVT_CONN_OPEN: no Nagle delay, and the DUL's short poll (``DUL_POLL_S``)."""
    set_nodelay(event)
    event.assoc.dul._run_loop_delay = DUL_POLL_S  # pynetdicom's own knob (an attribute of its DUL, no setting)


def handle_echo(event: evt.Event) -> int:
    return 0x0000


def received_file(event: evt.Event) -> tuple[bytes, memoryview]:
    """The C-STORE's dataset as a Part 10 file, in two pieces: preamble, prefix and file meta, then the dataset's
    bytes as pynetdicom received them, not copied (``event.encoded_dataset()`` would join them into a new ``bytes``: two
    copies of every image)."""
    request = event.request
    return part10_head(request.AffectedSOPClassUID, request.AffectedSOPInstanceUID, event.context.transfer_syntax), \
        request.DataSet.getbuffer()


def part10_head(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information (PS3.10 7.1) that pynetdicom writes for a received dataset
    (``encode_file_meta(event.file_meta)``, the same bytes), encoded by ``dicomrt.raw_elements``: pydicom's writer
    took ~0.2 ms an image. Values as pydicom encodes group 0002 (ISO 8859-1)."""
    body = b"".join((
        raw_elements.element(Tag(0x0002, 0x0001), "OB", b"\x00\x01"),  # FileMetaInformationVersion
        *(raw_elements.element(Tag(0x0002, number), vr, value.encode("latin-1")) for number, vr, value in (
            (0x0002, "UI", sop_class_uid), (0x0003, "UI", sop_instance_uid), (0x0010, "UI", transfer_syntax_uid),
            (0x0012, "UI", PYNETDICOM_IMPLEMENTATION_UID), (0x0013, "SH", PYNETDICOM_IMPLEMENTATION_VERSION))),
    ))
    length = raw_elements.element(Tag(0x0002, 0x0000), "UL", struct.pack("<I", len(body)))
    return b"".join((bytes(PREAMBLE_LENGTH), b"DICM", length, body))


def handle_store(event: evt.Event, collector: StudyCollector, space_problem: Callable[[], str | None]) -> int:
    """EVT_C_STORE: the instance to disk under its study (our names), or a failure status that says why not."""
    problem = space_problem()
    if problem is not None:
        logger.warning("C-STORE refused (0xA700): %s", problem)
        return OUT_OF_RESOURCES
    calling = event.assoc.requestor.ae_title
    try:
        collector.store_instance(received_file(event), calling)
    except InstanceRefused as exc:
        logger.warning("C-STORE from %s refused (0x%04X): %s", calling, exc.status, exc)
        return exc.status
    except OSError as exc:
        logger.error("C-STORE from %s could not be written (0xA700): %s", calling, exc)
        return OUT_OF_RESOURCES
    except Exception:
        logger.exception("C-STORE from %s failed (0x%04X)", calling, UNEXPECTED)
        return UNEXPECTED
    return 0x0000


def make_ae(settings: ListenerSettings) -> AE:
    """The AE with our title, the contexts we accept, and the limits and timeouts of the settings."""
    ae = AE(ae_title=settings.scp_ae_title)
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.maximum_associations = settings.scp_max_associations
    ae.maximum_pdu_size = settings.scp_max_pdu_bytes
    ae.acse_timeout = settings.scp_acse_timeout_s
    ae.dimse_timeout = settings.scp_dimse_timeout_s
    ae.network_timeout = settings.scp_network_timeout_s
    return ae


def server_tls(settings: ListenerSettings) -> ssl.SSLContext | None:
    """TLS for the listening port when ``scp_tls_cert``/``scp_tls_key`` are set (peer certificates required when
    ``scp_tls_ca`` is)."""
    if settings.scp_tls_cert is None or settings.scp_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.scp_tls_cert, settings.scp_tls_key)
    if settings.scp_tls_ca is not None:
        context.load_verify_locations(settings.scp_tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def collector_for(settings: ListenerSettings, store: JobStore, queue: Queue,
                  on_job: Callable[[str], None] = lambda _job_id: None) -> StudyCollector:
    """A collector whose ready studies go through ``service.intake`` into ``store`` and ``queue`` (``on_job`` is told
    of every job made)."""
    options = settings.scp_options

    def submit(received: Any, calling_ae: str | None, index: Any) -> Manifest:
        deliveries = plan_deliveries(settings.destinations, calling_ae)
        manifest, _created = accept_study(received, "dicom", options, False, store, queue, calling_ae=calling_ae,
                                          deliveries=deliveries, index=index)
        on_job(manifest.id)
        return manifest

    def refuse(received: Any, calling_ae: str | None, error: Any) -> Manifest:
        return record_refusal(received, "dicom", options, error, store, calling_ae=calling_ae)

    def note_late(job_id: str, arrival: LateArrival) -> None:
        store.update(job_id, lambda m: m.late_arrivals.append(arrival))

    config = CollectorConfig(settle_s=settings.scp_settle_s, idle_timeout_s=settings.scp_idle_timeout_s,
                             rerun_on_change=settings.scp_rerun_on_change, keep_s=settings.scp_keep_s,
                             max_study_bytes=settings.max_study_bytes, max_files=settings.max_files)
    return StudyCollector(store, config, submit, refuse, note_late, scan_study)


@dataclass
class Listener:
    """A running listener: the association server, the collector's monitor and the delivery loop."""

    server: ThreadedAssociationServer
    collector: StudyCollector
    delivery: DeliveryLoop
    stop_event: threading.Event
    threads: list[threading.Thread]

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def shutdown(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        for thread in self.threads:
            thread.join(timeout=10)


def _every(interval_s: float, stop: threading.Event, step: Callable[[], None], name: str) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                step()
            except Exception:  # logged and tried again: the listener must keep running
                logger.exception("%s failed", name)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread


def start_listener(settings: ListenerSettings, queue: Queue, store: JobStore | None = None,
                   tick_s: float = 0.25) -> Listener:
    """Start the listener on ``settings.scp_host``/``scp_port`` (0: a free port) without blocking."""
    store = store or JobStore(settings.store_dir)
    if not settings.scp_peers:
        logger.warning("no DICOM peers allowed (ITVSAM_SCP_PEERS): every association is refused")
    delivery = DeliveryLoop(store, settings)
    collector = collector_for(settings, store, queue, on_job=delivery.watch)
    recovered = collector.recover()
    if recovered:
        logger.info("took back %d partly received studies from a previous run", recovered)
    handlers = [(evt.EVT_CONN_OPEN, tune_connection), (evt.EVT_REQUESTED, check_peer, [settings.scp_peers]),
                (evt.EVT_C_ECHO, handle_echo),
                (evt.EVT_C_STORE, handle_store, [collector, lambda: disk_problem(store, settings)])]
    ae = make_ae(settings)
    server = ae.start_server((settings.scp_host, settings.scp_port), block=False, evt_handlers=handlers,
                             ssl_context=server_tls(settings))
    stop = threading.Event()
    threads = [_every(tick_s, stop, collector.tick, "itvsam-collector"),
               _every(min(1.0, max(settings.delivery_backoff_s / 4, 0.1)), stop, delivery.step, "itvsam-delivery")]
    listener = Listener(server, collector, delivery, stop, threads)
    logger.info("listening as %s on %s:%d%s", settings.scp_ae_title, settings.scp_host, listener.port,
                " (TLS)" if server.ssl_context else "")
    return listener

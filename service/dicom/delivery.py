"""Results sent back by C-STORE: planned when a job is made, sent once it succeeds, retried with backoff.

A job made from a study received over DICOM gets one ``Delivery`` per destination that serves its calling AE title
(``waiting`` in its manifest). The delivery loop (a thread of ``itvsam scp``) looks at those jobs: when a job has
succeeded its deliveries become ``pending`` and are sent; a failed attempt is retried after
``delivery_backoff_s * 2**(attempt - 1)`` (at most ``delivery_max_backoff_s``) until ``delivery_attempts`` were made,
then the delivery is ``failed`` with the last error. A job that failed or was cancelled fails its deliveries. The
manifest is the authority: a restarted listener picks up every delivery not finished.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from jobs.manifest import Delivery, DeliveryState, JobState, Manifest
from jobs.store import JobNotFoundError, JobStore
from service.dicom.net import NODELAY, DicomNetworkError, describe_failure, requestor_ae
from service.dicom.peers import Destination, OutputKind, destinations_for, output_patterns
from service.settings import ListenerSettings

logger = logging.getLogger(__name__)

SUCCESS_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})  # success and the C-STORE warnings


def plan_deliveries(destinations: tuple[Destination, ...], calling_ae: str | None) -> list[Delivery]:
    """One waiting delivery per destination that serves ``calling_ae``."""
    return [Delivery(destination=d.name, ae_title=d.ae_title, host=d.host, port=d.port,
                     outputs=[k.value for k in d.outputs]) for d in destinations_for(destinations, calling_ae)]


def backoff_s(attempts: int, settings: ListenerSettings) -> float:
    """The wait after the ``attempts``-th failed attempt."""
    return min(settings.delivery_backoff_s * 2 ** max(attempts - 1, 0), settings.delivery_max_backoff_s)


def chosen_files(output_dir: Path, outputs: list[str]) -> list[Path]:
    """The job's output files of the chosen kinds."""
    kinds = tuple(OutputKind(k) for k in outputs)
    files: list[Path] = []
    for pattern in output_patterns(kinds):
        files.extend(sorted(p for p in output_dir.glob(pattern) if p.is_file()))
    return files


def send_files(files: list[Path], destination: Destination, settings: ListenerSettings) -> int:
    """C-STORE ``files`` to ``destination`` on one association; returns how many were stored. Raises
    ``DicomNetworkError`` when the destination cannot be reached or refuses an instance."""
    if not files:
        raise DicomNetworkError("the job has none of the outputs chosen for this destination")
    ae = requestor_ae(settings)
    contexts: dict[str, set[str]] = {}
    for path in files:
        meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
        contexts.setdefault(str(meta.MediaStorageSOPClassUID), set()).add(str(meta.TransferSyntaxUID))
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes | {ExplicitVRLittleEndian, ImplicitVRLittleEndian}))
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, evt_handlers=NODELAY)
    if not assoc.is_established:
        raise DicomNetworkError(describe_failure(assoc, destination))
    stored = 0
    try:
        for path in files:
            status = assoc.send_c_store(path)
            if not status:
                raise DicomNetworkError(f"no answer to the C-STORE of {path.name} (timeout or connection lost)")
            if status.Status not in SUCCESS_STATUSES:
                raise DicomNetworkError(f"{destination.ae_title} answered 0x{status.Status:04X} to {path.name}")
            stored += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return stored


class DeliveryLoop:
    """``step()`` advances every job with unfinished deliveries (see the module docstring)."""

    def __init__(self, store: JobStore, settings: ListenerSettings, rescan_s: float = 10.0) -> None:
        self.store = store
        self.settings = settings
        self.rescan_s = rescan_s
        self._jobs: set[str] = set()
        self._scanned_at = float("-inf")

    def watch(self, job_id: str) -> None:
        self._jobs.add(job_id)

    def step(self) -> None:
        now = time.monotonic()
        if now - self._scanned_at >= self.rescan_s:
            self._scanned_at = now
            self._jobs |= {m.id for m in self.store.manifests() if _open(m)}
        for job_id in sorted(self._jobs):
            try:
                if not self._advance(job_id):
                    self._jobs.discard(job_id)
            except JobNotFoundError:
                self._jobs.discard(job_id)

    def _advance(self, job_id: str) -> bool:
        """Move the job's deliveries on; returns whether some are still unfinished."""
        manifest = self.store.read(job_id)
        if not _open(manifest):
            return False
        if not manifest.state.finished:
            return True
        if manifest.state is not JobState.SUCCEEDED:
            self._fail_all(job_id, f"the job {manifest.state.value}: nothing to deliver")
            return False
        for index, delivery in enumerate(manifest.deliveries):
            if delivery.state is DeliveryState.WAITING or (
                    delivery.state is DeliveryState.PENDING and (delivery.next_attempt_at or 0.0) <= time.time()):
                self._attempt(manifest, index)
        return _open(self.store.read(job_id))

    def _attempt(self, manifest: Manifest, index: int) -> None:
        delivery = manifest.deliveries[index]
        destination = Destination(name=delivery.destination, ae_title=delivery.ae_title, host=delivery.host,
                                  port=delivery.port)
        files = chosen_files(self.store.output_dir(manifest.id), delivery.outputs)
        try:
            stored, error = send_files(files, destination, self.settings), None
        except (DicomNetworkError, OSError, ValueError) as exc:
            stored, error = 0, str(exc)

        def record(m: Manifest) -> None:
            d = m.deliveries[index]
            d.attempts += 1
            now = time.time()
            if error is None:
                d.state, d.delivered_at, d.files, d.error, d.next_attempt_at = DeliveryState.DELIVERED, now, \
                    stored, None, None
            elif d.attempts >= self.settings.delivery_attempts:
                d.state, d.error, d.next_attempt_at = DeliveryState.FAILED, error, None
            else:
                d.state, d.error = DeliveryState.PENDING, error
                d.next_attempt_at = now + backoff_s(d.attempts, self.settings)

        updated = self.store.update(manifest.id, record).deliveries[index]
        if error is None:
            logger.info("job %s: %d file(s) delivered to %s", manifest.id, stored, delivery.destination)
        else:
            logger.warning("job %s: delivery to %s, attempt %d: %s (%s)", manifest.id, delivery.destination,
                           updated.attempts, error, updated.state.value)

    def _fail_all(self, job_id: str, reason: str) -> None:
        def record(m: Manifest) -> None:
            for d in m.deliveries:
                if d.state in (DeliveryState.WAITING, DeliveryState.PENDING):
                    d.state, d.error = DeliveryState.FAILED, reason

        with contextlib.suppress(JobNotFoundError):
            self.store.update(job_id, record)


def _open(manifest: Manifest) -> bool:
    return any(d.state in (DeliveryState.WAITING, DeliveryState.PENDING) for d in manifest.deliveries)

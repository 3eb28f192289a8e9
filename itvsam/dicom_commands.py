"""DICOM commands: ``scp`` (the listener and its deliveries), ``submit-dir`` (dcmtk storescp's end-of-study hook),
``echo`` (C-ECHO a destination)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from dicomrt.errors import StudyError
from itvsam.common import (
    EXIT_PATH,
    EXIT_REFUSED,
    EXIT_SERVICE,
    EXIT_USAGE,
    app,
    console,
    fail,
    load_settings,
    read_options,
)
from jobs.options import JobOptions


@app.command()
def scp(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default ITVSAM_SCP_HOST).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default ITVSAM_SCP_PORT).")] = None,
) -> None:
    """Run the DICOM listener: C-STORE of CT from allowed peers, a job per complete 4DCT, results sent back to the
    configured destinations; configured by ITVSAM_* environment variables. Stops on SIGTERM or Ctrl-C."""
    import signal
    import threading

    from jobs.queue import celery_queue
    from service.dicom.scp import start_listener
    from service.settings import get_listener_settings

    settings = load_settings(get_listener_settings)
    changes = {k: v for k, v in (("scp_host", host), ("scp_port", port)) if v is not None}
    settings = settings.model_copy(update=changes) if changes else settings
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        listener = start_listener(settings, celery_queue(settings))
    except OSError as exc:
        raise fail(EXIT_SERVICE, "cannot_listen", f"cannot listen on {settings.scp_host}:{settings.scp_port}: "
                                                   f"{exc}") from None
    console.print(f"listening as {settings.scp_ae_title} on {settings.scp_host}:{listener.port}", highlight=False)
    stop.wait()
    listener.shutdown()


@app.command(name="submit-dir")
def submit_dir(
    folder: Annotated[Path, typer.Argument(help="A study's folder, e.g. storescp's #p.")],
    url: Annotated[str | None, typer.Option(envvar="ITVSAM_URL", help="The gateway, e.g. http://host:8000.")] = None,
    token: Annotated[str | None, typer.Option(envvar="ITVSAM_TOKEN", help="API key.")] = None,
    direct: Annotated[bool, typer.Option(envvar="ITVSAM_SUBMIT_DIRECT", help="Put the job into the store and the "
                                                                            "queue directly, not through the gateway.")]
    = False,
    calling_ae: Annotated[str | None, typer.Option(help="The AE title that sent the study (storescp's #a): with "
                                                        "--direct, results go to the destinations serving it.")]
    = None,
    options: Annotated[Path | None, typer.Option(help="Job options: a JSON file.")] = None,
    remove: Annotated[bool, typer.Option(help="Remove the folder once the job is made.")] = False,
) -> None:
    """Submit a folder of DICOM files as one study (dcmtk's storescp --exec-on-eostudy hook); exit 3 with the reason
    if the study is refused."""
    import tempfile

    if not folder.is_dir():
        raise fail(EXIT_PATH, "not_found", f"no such folder: {folder}")
    job_options = read_options(options)
    if direct:
        job_id = _submit_direct(folder, job_options, calling_ae)
    else:
        from service.client import Client, ServiceError, zip_study

        if not url:
            raise fail(EXIT_USAGE, "usage", "give --url (ITVSAM_URL) of the gateway, or --direct")
        with tempfile.TemporaryDirectory(prefix="itvsam-submit-") as tmp, Client(url, token) as client:
            try:
                created = client.submit_zip(zip_study(folder, Path(tmp) / "study.zip"),
                                            job_options.to_json() if options else None)
            except ServiceError as exc:
                code = EXIT_REFUSED if exc.status in (400, 409, 413, 415, 422) else EXIT_SERVICE
                raise fail(code, exc.code, str(exc)) from None
        job_id = created["id"]
    if remove:
        shutil.rmtree(folder, ignore_errors=True)
    console.print(f"job {job_id} for {folder}", highlight=False)


def _submit_direct(folder: Path, options: JobOptions, calling_ae: str | None) -> str:
    from jobs.queue import celery_queue
    from jobs.store import JobStore
    from service import intake
    from service.dicom.delivery import plan_deliveries
    from service.settings import get_listener_settings
    from service.uploads import UploadError, UploadLimits, receive_folder

    settings = load_settings(get_listener_settings)
    store = JobStore(settings.store_dir)
    problem = intake.disk_problem(store, settings)
    if problem is not None:
        raise fail(EXIT_SERVICE, "insufficient_storage", problem)
    with store.staging_dir() as staging:
        try:
            received = receive_folder(folder, staging, UploadLimits.from_settings(settings))
            manifest, _ = intake.accept_study(received, "directory", options, False, store, celery_queue(settings),
                                              calling_ae=calling_ae,
                                              deliveries=plan_deliveries(settings.destinations, calling_ae))
        except UploadError as exc:
            raise fail(EXIT_REFUSED, exc.code, str(exc)) from None
        except StudyError as exc:
            raise fail(EXIT_REFUSED, exc.code, str(exc)) from None
    return manifest.id


@app.command(name="echo")
def echo_command(
    destination: Annotated[str, typer.Argument(help="A configured destination's name, or AE@HOST:PORT.")],
) -> None:
    """C-ECHO a destination (is the planning system reachable, and does it accept our AE title?)."""
    import time

    from service.dicom.net import DicomNetworkError, echo
    from service.dicom.peers import find_destination
    from service.settings import get_listener_settings

    settings = load_settings(get_listener_settings)
    try:
        target = find_destination(settings.destinations, destination)
    except ValueError as exc:
        raise fail(EXIT_USAGE, "unknown_destination", str(exc)) from None
    started = time.perf_counter()
    try:
        echo(target, settings)
    except DicomNetworkError as exc:
        raise fail(EXIT_SERVICE, "echo_failed", str(exc)) from None
    console.print(f"{target.name}: C-ECHO to {target.ae_title}@{target.host}:{target.port} ok in "
                  f"{(time.perf_counter() - started) * 1000:.0f} ms", highlight=False)

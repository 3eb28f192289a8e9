"""Service commands: ``serve`` (the HTTP gateway), ``worker`` (a GPU worker), ``submit`` (the client), ``apikey``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from itvsam.common import (
    EXIT_JOB_FAILED,
    EXIT_MODEL,
    EXIT_PATH,
    EXIT_REFUSED,
    EXIT_SERVICE,
    EXIT_USAGE,
    app,
    console,
    errors,
    fail,
    load_settings,
    read_options,
)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Gateway processes.")] = 1,
) -> None:
    """Run the HTTP gateway (FastAPI under uvicorn); configured by ITVSAM_* environment variables."""
    import uvicorn

    from service.api.server import GatewayHttpProtocol
    from service.settings import get_gateway_settings

    load_settings(get_gateway_settings)  # invalid settings: one line and exit 2 here, not a traceback per process

    # our protocol: request line and header limits, and the JSON error body for requests uvicorn cannot parse
    uvicorn.run("service.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                http=GatewayHttpProtocol, proxy_headers=True, timeout_keep_alive=30, log_level="info")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes (one per GPU).")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (a process per job slot) or solo.")] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
) -> None:
    """Run a GPU worker: takes jobs from the queue, the model loaded once per process (ITVSAM_MODEL_DIR)."""
    from workers.settings import get_worker_settings

    settings = load_settings(get_worker_settings)
    if settings.model_dir is None or not (settings.model_dir / "config.json").is_file():
        raise fail(EXIT_MODEL, "model_unavailable", f"ITVSAM_MODEL_DIR must name a SAM 3 snapshot folder (with "
                                                     f"config.json), got {settings.model_dir}")
    from workers.celery_app import celery_app

    celery_app.worker_main(["worker", "--queues", settings.queue, "--concurrency", str(concurrency), "--pool", pool,
                            "--loglevel", loglevel, "--prefetch-multiplier", "1", "--without-mingle",
                            "--without-gossip"])


@app.command()
def submit(
    source: Annotated[Path, typer.Argument(help="The study: a folder of DICOM files or a zip of them.")],
    url: Annotated[str, typer.Option(envvar="ITVSAM_URL", help="The gateway, e.g. http://host:8000.")],
    token: Annotated[str | None, typer.Option(envvar="ITVSAM_TOKEN", help="API key.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job and download its result zip.")] = False,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Result zip (default: itvsam-ID.zip).")] = None,
    options: Annotated[Path | None, typer.Option(help="Job options: a JSON file.")] = None,
    force: Annotated[bool, typer.Option(help="A new job even if the same study already has one.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the job.")] = 3600.0,
) -> None:
    """Send a study to the itvsam service; with --wait, show its progress and download the result."""
    import tempfile

    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from service.client import Client, ServiceError, zip_study

    if not source.exists():
        raise fail(EXIT_PATH, "not_found", f"no such file or folder: {source}")
    job_options = read_options(options).to_json() if options else None
    with tempfile.TemporaryDirectory(prefix="itvsam-submit-") as tmp, Client(url, token) as client:
        try:
            archive = zip_study(source, Path(tmp) / "study.zip")
        except ValueError as exc:
            raise fail(EXIT_USAGE, "not_a_study", str(exc)) from None
        columns = (TextColumn("{task.description:<30}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
        try:
            with Progress(*columns, console=errors, transient=True) as bar:
                task = bar.add_task("uploading", total=archive.stat().st_size)
                created = client.submit_zip(archive, job_options, force,
                                            on_bytes=lambda n: bar.advance(task, n))
        except ServiceError as exc:
            code = EXIT_REFUSED if exc.status in (400, 409, 413, 415, 422) else EXIT_SERVICE
            raise fail(code, exc.code, str(exc)) from None
        job_id = created["id"]
        console.print(f"job {job_id} {'created' if created['created'] else 'exists'}: {created['url']}",
                      highlight=False)
        if not wait:
            return
        try:
            job = _follow(client, job_id, timeout)
            if job["state"] != "succeeded":
                error = job.get("error") or {"code": job["state"], "message": f"the job was {job['state']}"}
                raise fail(EXIT_JOB_FAILED, error["code"], error["message"])
            path = client.download(job_id, out or Path(f"itvsam-{job_id}.zip"))
        except ServiceError as exc:
            raise fail(EXIT_SERVICE, exc.code, str(exc)) from None
    console.print(f"job {job_id} succeeded in {job['timings'].get('run_s', 0):.1f} s: {path}", highlight=False)


def _follow(client: Any, job_id: str, timeout: float) -> dict:
    """Poll the job with a progress bar (stage, phase i/n) until it is finished."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<30}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True) as bar:
        task = bar.add_task("queued", total=1.0)

        def show(job: dict) -> None:
            phase = f" {job['phase']}/{job['phases']}" if job.get("phase") else ""
            bar.update(task, completed=job["fraction"], description=f"{job['state']}: {job['stage']}{phase}")

        return client.wait(job_id, show, timeout_s=timeout)


@app.command()
def apikey() -> None:
    """Make a new API key: give the key to the client, add its hash to ITVSAM_API_KEY_HASHES of the gateway."""
    import secrets

    from service.settings import hash_api_key

    key = secrets.token_urlsafe(32)
    console.print(f"key:  {key}\nhash: {hash_api_key(key)}", highlight=False)



"""The service end to end against ``itvsam run`` on the same study, in the same run.

Starts a private redis-server, the gateway (``itvsam serve``) and one worker (``itvsam worker``, tiny SAM 3, CPU) on
free ports; uploads a phantom 4DCT (``--size full``: 10 phases of 512x512x120, 1200 files; ``small``: 128x128x44) as a
zip and measures:

- upload throughput: zip bytes / time of ``POST /v1/jobs`` (streamed to disk, unpacked, headers validated, queued);
- job latency: from the start of the upload to the job's ``succeeded`` (polled every 0.1 s), with the model's time
  (``model_s`` of the job's summary) separated from everything else;
- the same job in-process (``workers.pipeline.run_job`` after ``load_engine``, as ``itvsam run`` does), and the
  service overhead: service latency / in-process time, and the added seconds.

Light options by default (GTV only, reference RTSTRUCT, no SEG/projections: random weights make huge masks whose
writing dominates); ``--full-outputs`` for the default job.

    python bench/bench_service.py [--size full|small] [--full-outputs]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.service import (  # noqa: E402 (the service test helpers: processes on free ports)
    AUTH,
    LIGHT_OPTIONS,
    RedisServer,
    free_port,
    service_env,
    start_gateway,
    start_worker,
    wait_for,
    zip_folder,
)


def in_process(study: Path, model: Path, out: Path, options: dict) -> tuple[float, dict]:
    """``run_job`` in this process, as ``itvsam run`` (engine loaded first, not counted)."""
    import torch

    from jobs.options import parse_options
    from workers.pipeline import load_engine, run_job

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    engine = load_engine(model)
    started = time.perf_counter()
    result = run_job(study, out, engine, parse_options(options))
    return time.perf_counter() - started, result.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="full")
    parser.add_argument("--full-outputs", action="store_true", help="the default job (all RTSTRUCTs, SEG, AIP/MIP)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    options = {} if args.full_outputs else LIGHT_OPTIONS

    from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
    from model.tiny import write_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        model = write_tiny_checkpoint(root / "model")
        study = write_phantom(generate_phantom(PhantomConfig(seed=7, size=args.size)), root / "p",
                              vendor="desc-t").dicom_dir
        archive = zip_folder(study, root / "study.zip")
        files = sum(1 for _ in study.iterdir())
        raw_mb = sum(p.stat().st_size for p in study.iterdir()) / 1e6
        zip_mb = archive.stat().st_size / 1e6

        redis_server = RedisServer(root)
        redis_server.start()
        env = service_env(root / "store", redis_server.url, model, ITVSAM_LEASE_S="60", ITVSAM_HEARTBEAT_TTL_S="30",
                          ITVSAM_MAINTENANCE_INTERVAL_S="30", ITVSAM_JOB_SOFT_TIME_LIMIT_S="3000",
                          ITVSAM_JOB_TIME_LIMIT_S="3300", ITVSAM_VISIBILITY_TIMEOUT_S="3600")
        port = free_port()
        worker = start_worker(env, root / "worker.log")
        gateway = start_gateway(env, port, root / "gateway.log")
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=600)
            wait_for("a worker with its model", lambda: client.get("/readyz").status_code == 200, 300)
            started = time.perf_counter()
            with open(archive, "rb") as body:
                response = client.post("/v1/jobs", content=body, params={"options": json.dumps(options)},
                                       headers={"Content-Type": "application/zip"})
            upload_s = time.perf_counter() - started
            response.raise_for_status()
            job_id = response.json()["id"]
            job = wait_for("the job", lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["state"] in (
                "succeeded", "failed") and j, 3600, interval_s=0.1)
            latency_s = time.perf_counter() - started
            if job["state"] != "succeeded":
                raise SystemExit(f"job failed: {job['error']}")
            service_summary = client.get(f"/v1/jobs/{job_id}/summary").json()
        finally:
            gateway.stop()
            worker.stop()
            redis_server.stop()
        direct_s, direct_summary = in_process(study, model, root / "direct", options)

    model_s = service_summary["timings"]["model_s"]
    print(f"study: {args.size} phantom, {files} files, {raw_mb:.0f} MB ({zip_mb:.0f} MB zipped); "
          f"{'full' if args.full_outputs else 'light'} outputs; {os.cpu_count()} cores, tiny SAM 3 on CPU")
    print(f"{'measure':<44}{'value':>12}")
    rows = [
        ("upload (POST /v1/jobs) s", upload_s),
        ("upload throughput, zip MB/s", zip_mb / upload_s),
        ("upload throughput, study MB/s (unzipped)", raw_mb / upload_s),
        ("service: upload → succeeded s", latency_s),
        ("  worker run_s (claim → done)", job["timings"]["run_s"]),
        ("  queued_s", job["timings"]["queued_s"]),
        ("  model s (service job)", model_s),
        ("  everything but the model s", latency_s - model_s),
        ("in-process run_job s (itvsam run)", direct_s),
        ("  model s (in-process)", direct_summary["timings"]["model_s"]),
        ("service overhead ratio (service / in-process)", latency_s / direct_s),
        ("service overhead s", latency_s - direct_s),
    ]
    for name, value in rows:
        print(f"{name:<44}{value:>12.2f}")


if __name__ == "__main__":
    main()

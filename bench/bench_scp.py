"""Receive throughput of the DICOM listener (``itvsam scp``'s ``start_listener``) against dcmtk's own ``storescp``,
in the same run, on the same study sent by the same dcmtk ``storescu``.

A phantom 4DCT (``--size full``: 10 phases of 512x512x120, 1200 files; ``small``: 128x128x44, 440 files) is sent once
to each receiver (one association, uncompressed): ``storescp``, pynetdicom alone (the listener's AE and connection
tuning answering every C-STORE with success, nothing stored or checked: what pynetdicom itself costs), and the
listener. Reported per receiver: images/s and MB/s of the ``storescu`` run, and the ratios to dcmtk; for the listener
also the time from the last instance to the job (the settle time, the reader's check of the complete 4DCT, hard links,
the manifest). Both ends with TCP_NODELAY (``storescu``/``storescp`` through the ``TCP_NODELAY=1`` environment
variable, ours always); ``--nagle`` sends without it to show what it costs.

Measured (full size, a 2-core machine shared with other benchmarks, medians of 3 runs; ``storescp`` itself varied
575-1,080 images/s): storescp ~700 images/s, pynetdicom alone ~590 (0.72x), the listener ~215 (0.31x; ~180, 0.26x,
before its DUL poll and uncopied write), ~2.1 s from the last instance to the job. See ``service/dicom/scp.py`` for
where the listener's time goes.

    python bench/bench_scp.py [--size full|small] [--settle 1.0] [--nagle]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pynetdicom import evt  # noqa: E402

from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom  # noqa: E402
from jobs.store import JobStore  # noqa: E402
from service.dicom.scp import make_ae, tune_connection  # noqa: E402
from service.settings import ListenerSettings  # noqa: E402
from tests.support.dicom import PlanningSystem, RecordingQueue, dcmtk, listener_settings, running_listener  # noqa: E402


def send(port: int, folder: Path, aec: str, nodelay: bool) -> float:
    env = {**os.environ, "TCP_NODELAY": "1" if nodelay else "0"}
    started = time.perf_counter()
    subprocess.run([dcmtk("storescu"), "-aet", "SCANNER", "-aec", aec, "-xe", "+sd", "+r", "127.0.0.1", str(port),
                    str(folder)], check=True, capture_output=True, env=env, timeout=3600)
    return time.perf_counter() - started


def rate(seconds: float, files: int, megabytes: float) -> dict[str, float]:
    return {"s": round(seconds, 3), "images_per_s": round(files / seconds, 1),
            "mb_per_s": round(megabytes / seconds, 1)}


def send_to_pynetdicom_alone(folder: Path, settings: ListenerSettings, nodelay: bool) -> float:
    """The listener's AE (its contexts, PDU size, connection tuning) answering every C-STORE with success at once:
    what pynetdicom costs before the listener does anything."""
    server = make_ae(settings).start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_CONN_OPEN, tune_connection), (evt.EVT_C_STORE, lambda _event: 0x0000)])
    try:
        return send(int(server.server_address[1]), folder, "ITVSAM", nodelay)
    finally:
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="full")
    parser.add_argument("--settle", type=float, default=1.0, help="settle time of the listener (s)")
    parser.add_argument("--nagle", action="store_true", help="send without TCP_NODELAY on the dcmtk side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scp-") as tmp:
        root = Path(tmp)
        folder = write_phantom(generate_phantom(PhantomConfig(seed=5, size=args.size)), root / "p",
                               vendor="desc-t").dicom_dir
        files = sorted(folder.iterdir())
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        results = {"files": len(files), "megabytes": round(megabytes, 1), "nodelay": not args.nagle}

        tps = PlanningSystem(root, ae_title="DCMTK").start()
        try:
            seconds = send(tps.port, folder, "DCMTK", not args.nagle)
            assert len(tps.files()) == len(files)
        finally:
            tps.stop()
        results["storescp"] = rate(seconds, len(files), megabytes)

        settings = listener_settings(root / "ours", scp_settle_s=args.settle, scp_idle_timeout_s=600,
                                     max_study_bytes=64 * 1024**3)
        results["pynetdicom_alone"] = rate(send_to_pynetdicom_alone(folder, settings, not args.nagle), len(files),
                                           megabytes)
        queue = RecordingQueue()
        with running_listener(settings, queue) as listener:
            seconds = send(listener.port, folder, "ITVSAM", not args.nagle)
            last = time.perf_counter()
            while not queue.sent and time.perf_counter() - last < 600:
                time.sleep(0.02)
            to_job = time.perf_counter() - last
        job = JobStore(settings.store_dir).read(queue.sent[0])
        assert job.input.files == len(files), job.input
        results["itvsam_scp"] = {**rate(seconds, len(files), megabytes), "last_instance_to_job_s": round(to_job, 2),
                                 "settle_s": args.settle}
        for name in ("pynetdicom_alone", "itvsam_scp"):
            results[f"ratio_{name}_to_dcmtk"] = round(results[name]["mb_per_s"] / results["storescp"]["mb_per_s"], 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Reading a full-size 10-phase phantom 4DCT: our reader (headers, then volumes) against a naive pydicom loop.

The baseline, in the same process over the same files: ``np.stack([dcmread(f).pixel_array for f in files])`` — no
grouping, sorting, checks or HU conversion. Prints seconds per stage (best of ``--repeat`` runs, alternating so both
see the same page cache) and the ratio ours / baseline.

    python bench/bench_read.py [--study DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from dicomrt.phantom import PhantomConfig, VendorStyle, generate_phantom, write_phantom
from dicomrt.reader import find_files, load_study, scan_study


def naive(files: list[Path]) -> float:
    start = time.perf_counter()
    np.stack([pydicom.dcmread(f).pixel_array for f in files])
    return time.perf_counter() - start


def ours(folder: Path) -> tuple[float, float]:
    start = time.perf_counter()
    index = scan_study(folder)
    headers = time.perf_counter() - start
    start = time.perf_counter()
    load_study(index)
    return headers, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, help="a folder of DICOM files (default: a new full-size phantom)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.study
        if folder is None:
            start = time.perf_counter()
            phantom = generate_phantom(PhantomConfig(seed=11, size="full"))
            generated = time.perf_counter() - start
            folder = write_phantom(phantom, Path(tmp), vendor=VendorStyle("desc-t")).dicom_dir
            written = time.perf_counter() - start - generated
            print(f"phantom: generated in {generated:.1f} s, written in {written:.1f} s")
        files = find_files(folder)
        print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 2**20:.0f} MiB")
        naive(files)  # warm the page cache
        base, head, vol = [], [], []
        for _ in range(args.repeat):
            base.append(naive(files))
            h, v = ours(folder)
            head.append(h)
            vol.append(v)
        b, h, v = min(base), min(head), min(vol)
        print(f"naive dcmread + np.stack: {b:.2f} s")
        print(f"itvsam headers:           {h:.2f} s")
        print(f"itvsam volumes:           {v:.2f} s")
        print(f"itvsam total:             {h + v:.2f} s   ratio to naive: {(h + v) / b:.2f}x (limit 1.5x)")


if __name__ == "__main__":
    main()

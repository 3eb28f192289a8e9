"""Benchmark: per-phase RTSTRUCTs for 4 structures over a full-size 10-phase phantom, itvsam vs rt-utils.

Both writers get the same CT files (the phantom's, linked into one folder per phase for rt-utils) and the same
masks (the phantom's ground truth for GTV, Lung_L, Lung_R, Heart) in the same run: on a busy machine the ratio is
the figure, not the seconds. Each side is timed from its CT files to its written objects: itvsam ``scan_study``
(the headers; since the contours are traced in numpy, about two thirds of its time, printed apart) +
``write_rtstructs(mode="per-phase")``; rt-utils ``RTStructBuilder.create_new`` per phase (which reads the images) +
``add_roi`` per structure + ``save``. Prints seconds and the ratio (the bar: rt-utils at least 5 times slower);
asserts nothing.
Usage: ``python bench/bench_write.py [--size full|small] [--phases N]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from dicomrt.provenance import Provenance
from dicomrt.reader import scan_study
from dicomrt.rt_outputs import write_rtstructs
from dicomrt.structures import thoracic_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=["full", "small"])
    parser.add_argument("--phases", type=int, default=10)
    args = parser.parse_args()
    from rt_utils import RTStructBuilder

    start = time.perf_counter()
    phantom = generate_phantom(PhantomConfig(seed=1, size=args.size, n_phases=args.phases))
    specs = thoracic_template()
    masks = {s.name: np.asarray(phantom.truth[s.name], bool) for s in specs}
    print(f"phantom {args.size}: {phantom.hu.shape} (phase, z, y, x), generated in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        written = write_phantom(phantom, root / "phantom", vendor="nominal")
        folders = _per_phase_folders(scan_study(written.dicom_dir), root / "ct")

        start = time.perf_counter()
        index = scan_study(written.dicom_dir)
        scanned = time.perf_counter()
        ours = write_rtstructs(index, masks, specs, root / "itvsam", "per-phase", Provenance("bench"))
        itvsam_s = time.perf_counter() - start
        itvsam_write_s = time.perf_counter() - scanned

        start = time.perf_counter()
        for p, folder in enumerate(folders):
            rtstruct = RTStructBuilder.create_new(dicom_series_path=str(folder))
            for spec in specs:
                # rt-utils wants (rows, columns, slices) in its own slice order (ascending position along the normal)
                rtstruct.add_roi(mask=np.transpose(masks[spec.name][p], (1, 2, 0)), color=list(spec.colour),
                                 name=spec.name)
            rtstruct.save(str(root / f"rtutils_{p:02d}.dcm"))
        rtutils_s = time.perf_counter() - start
        contours = sum(len(c.ContourSequence) for path in ours
                       for c in pydicom.dcmread(path).ROIContourSequence if "ContourSequence" in c)
    print(f"itvsam:   {itvsam_s:.2f} s ({itvsam_write_s:.2f} s writing, {itvsam_s - itvsam_write_s:.2f} s reading "
          f"headers) for {len(ours)} RTSTRUCTs, {contours} contours")
    print(f"rt-utils: {rtutils_s:.2f} s for {len(folders)} RTSTRUCTs")
    print(f"ratio rt-utils / itvsam: {rtutils_s / itvsam_s:.1f}x")


def _per_phase_folders(index, root: Path) -> list[Path]:
    """One folder of links per phase: rt-utils reads every image of the folder it is given as one series."""
    folders = []
    for k, phase in enumerate(index.phases):
        folder = root / f"phase{k:02d}"
        folder.mkdir(parents=True)
        for header in phase.instances:
            (folder / header.path.name).symlink_to(header.path)
        folders.append(folder)
    return folders


if __name__ == "__main__":
    main()

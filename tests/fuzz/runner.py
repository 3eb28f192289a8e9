"""Drive ``read_header`` (one file) and ``scan_study``/``load_study`` (a folder) on seeded mutants and classify what
comes out: a header, a ``Skip``, an accepted study, a refusal by code, or a crash (any other exception, a hang past
the per-input time limit, or an accepted object that breaks an invariant: a non-finite geometry, an invalid UID).
"""

from __future__ import annotations

import math
import re
import shutil
import signal
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom.data

from dicomrt.errors import StudyError
from dicomrt.instances import InstanceHeader, Skip, read_header
from dicomrt.phantom import Compression, PhantomConfig, VendorStyle, generate_phantom, write_phantom
from dicomrt.reader import load_study, scan_study
from tests.fuzz.mutations import header_only, mutate, recipe_rng

SEED = 20240514
PER_INPUT_LIMIT_S = 10.0


class FuzzTimeout(BaseException):
    """An input took longer than ``PER_INPUT_LIMIT_S``: a hang is a crash."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(signum, frame):
        raise FuzzTimeout(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Base:
    """A file to mutate (``files`` of one) or a study folder (``files`` of several; ``load``: decode it too)."""

    name: str
    files: tuple[Path, ...]
    load: bool = False


@dataclass
class Crash:
    kind: str
    base: str
    seed: int
    iteration: int
    mutations: list[str]
    outcome: str
    detail: str
    saved: list[str] = field(default_factory=list)


@dataclass
class Report:
    kind: str
    inputs: int = 0
    planned: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)
    crashes: list[Crash] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = (f"fuzz {self.kind}: {self.inputs} of {self.planned} inputs in {self.seconds:.1f} s, "
                f"{len(self.crashes)} crashes")
        return [head, *(f"  {outcome:<40} {n}" for outcome, n in sorted(self.outcomes.items()))]


# --- bases ----------------------------------------------------------------------------------------------------------


def phantom_bases(root: Path, names: set[str] | None = None) -> tuple[list[Base], list[Base]]:
    """(single files, study folders) from a 2-phase small phantom in every vendor style (and RLE pixel data for
    one): one slice of each style, and each style's study cut to 3 slices per phase (6 files, still a valid study).
    ``names``: only these bases (e.g. ``{"phantom-desc-t"}``)."""
    phantom = generate_phantom(PhantomConfig(seed=11, n_phases=2))
    singles: list[Base] = []
    folders: list[Base] = []
    styles = [(v, Compression.NONE) for v in VendorStyle] + [(VendorStyle.NOMINAL, Compression.RLE)]
    for vendor, compression in styles:
        name = f"phantom-{vendor.value}" + ("" if compression is Compression.NONE else f"-{compression.value}")
        if names is not None and name not in names:
            continue
        files = write_phantom(phantom, root / name, vendor=vendor, compression=compression)
        chosen = tuple(p for volume in files.phases for p in volume.paths[20:23])
        singles.append(Base(name, (chosen[0],)))
        folders.append(Base(name, chosen, load=True))
    return singles, folders


def real_bases(shared_data: Path | None) -> tuple[list[Base], list[Base]]:
    """Vendor files from ``../shared/data`` (Siemens JPEG 2000, GE, an implicit-VR CT, an RTSTRUCT, the original
    files with empty UIDs) and pydicom's own CT and big-endian MR; the 20-slice Siemens series as a folder."""
    singles = [Base("pydicom-CT_small", (Path(pydicom.data.get_testdata_file("CT_small.dcm")),)),
               Base("pydicom-MR_small_bigendian", (Path(pydicom.data.get_testdata_file("MR_small_bigendian.dcm")),))]
    folders: list[Base] = []
    if shared_data is None:
        return singles, folders
    siemens = sorted((shared_data / "totalseg_ct").glob("*.dcm"))
    singles += [
        Base("siemens-j2k", (siemens[0],)),
        Base("siemens-j2k-original", (sorted((shared_data / "totalseg_ct_original").glob("*.dcm"))[0],)),
        Base("ge-ct", (shared_data / "rtutils_mock" / "ct_1.dcm",)),
        Base("mim-rtstruct", (shared_data / "rtutils_mock" / "rt.dcm",)),
        Base("dicompyler-implicit-ct", (shared_data / "dicompyler_example" / "ct.0.dcm",)),
    ]
    folders.append(Base("siemens-j2k-series", tuple(siemens)))
    return singles, folders


# --- outcomes -------------------------------------------------------------------------------------------------------


def _valid_uid(value: str) -> bool:
    """Digits in dot-separated components, at most 64 characters (leading zeros tolerated, as the reader does)."""
    return len(value) <= 64 and re.fullmatch(r"[0-9]+(\.[0-9]+)*", value) is not None


def header_problem(header: InstanceHeader) -> str | None:
    """An invariant a returned header breaks (a value no later stage can use), or None."""
    for name in ("position", "orientation", "pixel_spacing"):
        values = getattr(header, name)
        if values is not None and not all(math.isfinite(v) for v in values):
            return f"non-finite {name}"
    for name in ("rescale_slope", "rescale_intercept"):
        if not math.isfinite(getattr(header, name)):
            return f"non-finite {name}"
    if header.nominal_percent is not None and not math.isfinite(header.nominal_percent):
        return "non-finite nominal_percent"
    return None


def index_problem(index) -> str | None:
    """An invariant an accepted study breaks: a non-finite or singular affine, or an invalid UID it would copy into
    the objects we write."""
    for series in (*index.phases, *index.derived):
        affine = series.geometry.affine
        if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
            return "accepted a non-finite or singular geometry"
        uids = [index.attributes.study_instance_uid, series.series_instance_uid,
                series.geometry.frame_of_reference_uid, *series.geometry.sop_instance_uids]
        if not all(_valid_uid(u) for u in uids):
            return "accepted an invalid UID"
        if series.percent is not None and not 0 <= series.percent < 100:
            return "accepted a phase outside [0, 100) %"
    return None


def classify_file(path: Path) -> str:
    """``header`` / ``skip:<reason>`` / ``crash:<what>`` for ``read_header(path)``; raises nothing."""
    try:
        with time_limit(PER_INPUT_LIMIT_S):
            result = read_header(path)
    except FuzzTimeout:
        return "crash:hang"
    except Exception as exc:  # the fuzzer's job: anything that escapes is recorded
        return f"crash:{type(exc).__name__}"
    if isinstance(result, Skip):
        return f"skip:{result.name.lower()}"
    problem = header_problem(result)
    return f"crash:{problem}" if problem else "header"


def classify_folder(folder: Path, load: bool) -> str:
    """``accepted``/``loaded`` / ``refused:<code>`` / ``crash:<what>`` for ``scan_study`` (then ``load_study``)."""
    try:
        with time_limit(PER_INPUT_LIMIT_S):
            index = scan_study(folder)
            problem = index_problem(index)
            if problem:
                return f"crash:{problem}"
            if not load:
                return "accepted"
            load_study(index)
            return "loaded"
    except StudyError as exc:
        return f"refused:{exc.code}"
    except FuzzTimeout:
        return "crash:hang"
    except Exception as exc:  # the fuzzer's job: anything that escapes is recorded
        return f"crash:{type(exc).__name__}"


def _last_line(exc_text: str) -> str:
    lines = [line for line in exc_text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _detail_of_file(path: Path) -> str:
    try:
        read_header(path)
    except Exception:  # replaying a crash to describe it
        return _last_line(traceback.format_exc())
    return ""


# --- runs -----------------------------------------------------------------------------------------------------------


def fuzz_files(bases: list[Base], work: Path, iterations: int, budget_s: float, crash_dir: Path,
               seed: int = SEED) -> Report:
    """``iterations`` mutants of each single-file base through ``read_header``, round-robin over the bases, until
    done or ``budget_s`` is spent."""
    report = Report("read_header (single files)", planned=iterations * len(bases))
    originals = {b.name: b.files[0].read_bytes() for b in bases}
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for iteration in range(iterations):
            if time.monotonic() - start > budget_s:
                break
            for base in bases:
                rng = recipe_rng(seed, base.name, iteration)
                data, done = mutate(originals[base.name], rng)
                path = work / f"{base.name}.dcm"
                path.write_bytes(data)
                outcome = classify_file(path)
                report.inputs += 1
                report.outcomes[outcome] += 1
                if outcome.startswith("crash:"):
                    crash = Crash("file", base.name, seed, iteration, done, outcome, _detail_of_file(path))
                    saved = crash_dir / f"{base.name}-{seed}-{iteration}.dcm"
                    crash_dir.mkdir(parents=True, exist_ok=True)
                    saved.write_bytes(header_only(data))
                    crash.saved.append(str(saved))
                    report.crashes.append(crash)
    report.seconds = time.monotonic() - start
    return report


def folder_mutant(base: Base, originals: list[bytes], rng) -> tuple[dict[str, bytes], list[str]]:
    """The files that change in the study folder of ``base`` (name → bytes) and the mutations done: one file
    replaced by its mutant, two files, or a mutant added beside its original (a duplicate SOPInstanceUID)."""
    mode = rng.choices(("replace", "two", "extra"), weights=(70, 15, 15))[0]
    count = 2 if mode == "two" else 1
    chosen = rng.sample(range(len(originals)), count)
    changed: dict[str, bytes] = {}
    done: list[str] = [mode]
    for k in chosen:
        data, steps = mutate(originals[k], rng)
        name = "extra.dcm" if mode == "extra" else base.files[k].name
        changed[name] = data
        done += [f"{name} (from {base.files[k].name}): {step}" for step in steps]
    return changed, done


def fuzz_folders(bases: list[Base], work: Path, iterations: int, budget_s: float, crash_dir: Path,
                 seed: int = SEED) -> Report:
    """``iterations`` mutated studies per folder base through ``scan_study`` (and ``load_study`` when it accepts
    a phantom study), round-robin, until done or ``budget_s`` is spent."""
    report = Report("scan_study/load_study (study folders)", planned=iterations * len(bases))
    folders: dict[str, tuple[Path, list[bytes]]] = {}
    for base in bases:
        folder = work / base.name
        folder.mkdir(parents=True, exist_ok=True)
        originals = [p.read_bytes() for p in base.files]
        for path, data in zip(base.files, originals, strict=True):
            (folder / path.name).write_bytes(data)
        folders[base.name] = (folder, originals)
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for iteration in range(iterations):
            if time.monotonic() - start > budget_s:
                break
            for base in bases:
                folder, originals = folders[base.name]
                changed, done = folder_mutant(base, originals, recipe_rng(seed, base.name, iteration))
                for name, data in changed.items():
                    (folder / name).write_bytes(data)
                outcome = classify_folder(folder, base.load)
                report.inputs += 1
                report.outcomes[outcome] += 1
                if outcome.startswith("crash:"):
                    crash = Crash("folder", base.name, seed, iteration, done, outcome, _detail_of_folder(folder))
                    target = crash_dir / f"{base.name}-{seed}-{iteration}"
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(folder, target)
                    crash.saved.append(str(target))
                    report.crashes.append(crash)
                for name in changed:  # restore the study
                    if name == "extra.dcm":
                        (folder / name).unlink()
                    else:
                        k = [p.name for p in base.files].index(name)
                        (folder / name).write_bytes(originals[k])
    report.seconds = time.monotonic() - start
    return report


def _detail_of_folder(folder: Path) -> str:
    try:
        with time_limit(PER_INPUT_LIMIT_S):
            load_study(scan_study(folder))
    except (StudyError, FuzzTimeout) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    except Exception:  # replaying a crash to describe it
        return _last_line(traceback.format_exc())
    return ""

"""Find, check and load a 4DCT study in a folder of DICOM files as scanners, PACS and planning systems export them.

Two passes: ``scan_study`` reads headers only (no pixel data), groups instances into volumes (one per respiratory
phase, projection or plain CT), checks everything that can be checked from headers and refuses what it cannot use;
``load_study`` then decodes the pixel data of the phases only. ``read_study`` does both.
"""

from __future__ import annotations

import filecmp
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import pixels
from pydicom.uid import UID

from dicomrt.errors import (
    AmbiguousPhasesError,
    DuplicateInstanceError,
    ImplausiblePixelDataError,
    IncompleteStudyError,
    InconsistentSeriesError,
    InvalidUIDError,
    MissingGeometryError,
    MissingUIDError,
    MultiplePatientsError,
    MultipleStudiesError,
    NoCTError,
    PixelDecodeError,
    StudyNotFoundError,
    UnsupportedImageError,
)
from dicomrt.geometry import geometry_from_slices, slice_normal, slice_order
from dicomrt.identifiers import is_valid_uid, short_hash
from dicomrt.instances import (
    CT_SOP_CLASSES,
    MALFORMED_DICOM_ERRORS,
    READABLE_IMAGE_SOP_CLASSES,
    InstanceHeader,
    Skip,
    Skipped,
    read_header_or_skipped,
    transfer_syntax_name,
)
from dicomrt.phases import SeriesKind, derived_kind, percent_from_description, phase_label
from dicomrt.study import Phase, ScanSummary, SeriesInfo, Study4D, StudyIndex

logger = logging.getLogger(__name__)

_REQUIRED_UIDS = {
    "SOPClassUID": "sop_class_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "FrameOfReferenceUID": "frame_of_reference_uid",
}
_PROJECTIONS = (SeriesKind.AVERAGE, SeriesKind.MIP, SeriesKind.MINIP)
# Respiratory phases closer than this (in percent of the cycle) are not phases of one 4DCT.
_MIN_PHASE_STEP_PERCENT = 1.0
# How many unreadable files a warning or refusal names (with what was wrong in each).
_SKIP_DETAILS_SHOWN = 3


@dataclass(frozen=True)
class ReaderLimits:
    """Bounds checked from headers before any pixel data is decoded, so a small file cannot allocate gigabytes."""

    max_rows: int = 4096
    max_columns: int = 4096
    max_voxels: int = 2**31  # all phases of the study together


def find_files(source: Path | Iterable[Path]) -> list[Path]:
    """Regular files under ``source`` (a folder, searched recursively, or a list of files), in a stable order."""
    roots = [source] if isinstance(source, Path) else list(source)
    files: list[Path] = []
    for root in roots:
        if root.is_dir():
            files.extend(p for p in root.rglob("*") if p.is_file())
        elif root.is_file():
            files.append(root)
        else:
            raise FileNotFoundError(f"no such file or folder: {root}")
    return sorted(set(files))


def scan_study(
    source: Path | Iterable[Path],
    *,
    study: str | None = None,
    reference_percent: float = 50.0,
    limits: ReaderLimits = ReaderLimits(),
) -> StudyIndex:
    """Headers-only reading and validation of the 4DCT study in ``source``.

    ``study`` chooses one study when the files hold several: its StudyInstanceUID or the short hash shown in
    messages. The reference series is the study's AIP if it has one on the phases' grid, else the phase at
    ``reference_percent`` (else the nearest phase, with a warning). Raises a ``StudyError`` subclass naming the problem.
    """
    paths = find_files(source)
    headers: list[InstanceHeader] = []
    skipped: Counter[Skip] = Counter()
    unreadable: list[str] = []
    for path in paths:
        header = read_header_or_skipped(path)
        if isinstance(header, Skipped):
            skipped[header.reason] += 1
            if header.reason is Skip.UNREADABLE:
                unreadable.append(header.detail)
        else:
            headers.append(header)
    summary = ScanSummary(files=len(paths), ct_instances=len(headers), skipped=dict(skipped))
    if not headers:
        raise NoCTError(f"no CT images among {len(paths)} files{_skipped_text(skipped)}{_details(unreadable, '; ')}")
    warnings: list[str] = []
    if skipped:
        warnings.append(f"skipped {sum(skipped.values())} of {len(paths)} files{_skipped_text(skipped)}")
    if unreadable:
        warnings.append(f"unreadable files skipped{_details(unreadable, ': ')}")
    _check_required_uids(headers)
    _check_valid_uids(headers, ("StudyInstanceUID",))  # before grouping: a broken one is not a second study
    headers = _choose_study(headers, study)
    _check_valid_uids(headers, tuple(_REQUIRED_UIDS))
    _check_one_patient(headers)
    headers = _without_duplicates(headers, warnings)
    _check_pixel_format(headers, limits)
    by_series: dict[str, list[InstanceHeader]] = defaultdict(list)
    for header in headers:
        by_series[header.series_instance_uid].append(header)
    volumes = [v for series in by_series.values() for v in _split_series(series, warnings)]
    phases = _phases(volumes, warnings)
    derived = _projections(volumes, phases[0], warnings)
    reference = _reference(phases, derived, reference_percent, warnings)
    voxels = sum(int(np.prod(p.geometry.shape)) for p in phases)
    if voxels > limits.max_voxels:
        raise ImplausiblePixelDataError(f"the study's phases hold {voxels} voxels, more than the limit of "
                                        f"{limits.max_voxels}")
    index = StudyIndex(headers[0].study, tuple(phases), tuple(derived), reference, tuple(warnings), summary)
    logger.info("study %s: %d phases, %d projections, reference %s, %d warnings", index.study_hash, len(phases),
                len(derived), reference.label, len(warnings))
    return index


def load_volume(series: SeriesInfo) -> np.ndarray:
    """The HU volume of ``series``: (z, y, x) on ``series.geometry``; int16 when every slice's rescale is an integer
    shift (slope 1), else float32. A slice that cannot be decoded refuses the study, naming the series and the slice
    (``decode_slice``)."""
    instances = series.instances
    exact = all(h.rescale_slope == 1 and float(h.rescale_intercept).is_integer() for h in instances)
    volume = np.empty(series.geometry.shape, dtype=np.int16 if exact else np.float32)
    for k, header in enumerate(instances):
        try:
            raw = decode_slice(header)
            if raw.shape != volume.shape[1:]:
                raise ImplausiblePixelDataError(f"decodes to {raw.shape}, the series' grid is {volume.shape[1:]}")
        except (PixelDecodeError, ImplausiblePixelDataError) as exc:
            raise type(exc)(f"{_describe(series)}: slice {k} {exc}") from exc
        if exact:
            low, high = int(raw.min()) + int(header.rescale_intercept), int(raw.max()) + int(header.rescale_intercept)
            if low < -32768 or high > 32767:
                raise ImplausiblePixelDataError(f"{_describe(series)}: slice {k} has HU values outside the int16 "
                                                f"range ({low} to {high})")
            np.add(raw, np.int32(header.rescale_intercept), out=volume[k], casting="unsafe")
        else:
            volume[k] = raw * np.float32(header.rescale_slope) + np.float32(header.rescale_intercept)
    return volume


def decode_slice(header: InstanceHeader) -> np.ndarray:
    """The stored values of one image, (rows, columns), decoded as ``load_volume`` decodes every slice (the one
    decoder of the job, the gateway's intake check and the listener's C-STORE check). Raises ``PixelDecodeError``
    when no decoder reads it (absent or damaged pixel data) and ``ImplausiblePixelDataError`` when it decodes to
    another shape than its header declares; the message says which encoding and what was wrong."""
    try:
        raw = _pixels(header)
    except Exception as exc:  # any decoder failure becomes a refusal naming the encoding
        raise PixelDecodeError(f"cannot be decoded ({transfer_syntax_name(header.transfer_syntax_uid)}): {exc}"
                               ) from exc
    if raw.shape != (header.rows, header.columns):
        raise ImplausiblePixelDataError(f"decodes to {raw.shape}, its header declares {(header.rows, header.columns)}")
    return raw


def _pixels(header: InstanceHeader) -> np.ndarray:
    """The stored values of one slice, (rows, columns), as pydicom's ``pixel_array`` gives them.

    Uncompressed little-endian data is read straight from the offset the header pass found (one ``np.fromfile``
    instead of parsing the file again: reading a study then costs about what a plain ``dcmread`` loop does, see
    ``bench/bench_read.py``); every other encoding goes through pydicom's decoders.
    """
    if header.native_pixels is None or header.bits_allocated not in (8, 16, 32):
        return pixels.pixel_array(header.path)
    offset, length = header.native_pixels
    count = header.rows * header.columns
    dtype = np.dtype(f"<{'i' if header.pixel_representation else 'u'}{header.bits_allocated // 8}")
    if length < count * dtype.itemsize:
        raise ValueError(f"PixelData holds {length} bytes, {header.rows} x {header.columns} x "
                         f"{header.bits_allocated} bits need {count * dtype.itemsize}")
    raw = np.fromfile(header.path, dtype=dtype, count=count, offset=offset)
    if raw.size != count:
        raise ValueError(f"the file ends after {raw.size} of {count} pixels")
    return raw.reshape(header.rows, header.columns)


def load_study(index: StudyIndex) -> Study4D:
    """Decode the pixel data of every phase of ``index`` (projections and other series stay unread)."""
    return Study4D(index, tuple(Phase(series, load_volume(series)) for series in index.phases))


def read_study(source: Path | Iterable[Path], **options) -> Study4D:
    """``scan_study`` then ``load_study``; ``options`` are those of ``scan_study``."""
    return load_study(scan_study(source, **options))


# --- header checks -------------------------------------------------------------------------------------------------


def _skipped_text(skipped: Counter[Skip]) -> str:
    return "" if not skipped else " (" + ", ".join(f"{n} {reason.value}" for reason, n in skipped.items()) + ")"


def _details(details: Sequence[str], lead: str) -> str:
    if not details:
        return ""
    more = len(details) - _SKIP_DETAILS_SHOWN
    return lead + "; ".join(details[:_SKIP_DETAILS_SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _check_required_uids(headers: Sequence[InstanceHeader]) -> None:
    empty = {keyword: found for keyword, attr in _REQUIRED_UIDS.items()
             if (found := [h for h in headers if not getattr(h, attr)])}
    if empty:
        first = next(iter(empty.values()))[0].path.name
        detail = ", ".join(f"{keyword} in {len(found)}" for keyword, found in empty.items())
        raise MissingUIDError(f"required UIDs are empty in {max(len(f) for f in empty.values())} of {len(headers)} "
                              f"CT files ({detail}; e.g. {first}): refusing rather than guessing them")


def _check_valid_uids(headers: Sequence[InstanceHeader], keywords: Sequence[str]) -> None:
    """Refuse the study when one of its CT instances holds an invalid UID (``dicomrt.identifiers.is_valid_uid``).

    Refused, not skipped, whichever UID it is. The study's UIDs (Study, Series, FrameOfReference, each image's
    SOPInstanceUID) are copied into the RTSTRUCT and SEG we write, whose references a planning system matches
    exactly: an invalid one makes an invalid object, and repairing it would break the link to the images. Skipping
    only an instance with an invalid SOPInstanceUID would change the volume instead: a hole (refused as missing
    slices), or at either end a shorter volume (a 3D CT, or a 4DCT whose phases all lose that slice) on which an ITV
    could be cut short without anyone noticing. A UID
    that breaks the rules is a broken or tampered export, and the message names it so that it can be exported again.
    Values are shown by hash only.
    """
    for keyword in keywords:
        attr = _REQUIRED_UIDS[keyword]
        bad = [h for h in headers if getattr(h, attr) and not is_valid_uid(getattr(h, attr))]
        if bad:
            values = sorted({short_hash(getattr(h, attr)) for h in bad})
            raise InvalidUIDError(f"{keyword} is not a valid UID in {len(bad)} of {len(headers)} CT files (e.g. "
                                  f"{bad[0].path.name}; value hash {', '.join(values[:4])}): a UID holds at most 64 "
                                  f"characters, digits in dot-separated components")


def _choose_study(headers: list[InstanceHeader], study: str | None) -> list[InstanceHeader]:
    by_study: dict[str, list[InstanceHeader]] = defaultdict(list)
    for header in headers:
        by_study[header.study_instance_uid].append(header)
    listing = "; ".join(
        f"{short_hash(uid)}: {len(found)} CT images, date {found[0].study.study_date or '?'}, "
        f"'{found[0].study.study_description}'"
        for uid, found in by_study.items())
    if study is not None:
        chosen = [uid for uid in by_study if study in (uid, short_hash(uid))]
        if not chosen:
            raise StudyNotFoundError(f"study {study!r} is not among the studies found ({listing})")
        return by_study[chosen[0]]
    if len(by_study) > 1:
        patients = len({h.study.patient_id for h in headers})
        raise MultipleStudiesError(f"the files hold {len(by_study)} studies of {patients} patient(s): {listing}; "
                                   f"choose one by its hash")
    return headers


def _check_one_patient(headers: Sequence[InstanceHeader]) -> None:
    for what, values in (("PatientID", {h.study.patient_id for h in headers}),
                         ("PatientName", {h.study.patient_name for h in headers})):
        if len(values) > 1:
            raise MultiplePatientsError(f"one study holds images with {len(values)} different {what} values "
                                        f"(hashes {', '.join(sorted(short_hash(v) for v in values))}): refusing to "
                                        f"mix patients")


def _without_duplicates(headers: list[InstanceHeader], warnings: list[str]) -> list[InstanceHeader]:
    by_uid: dict[str, list[InstanceHeader]] = defaultdict(list)
    for header in headers:
        by_uid[header.sop_instance_uid].append(header)
    unique = []
    repeated = 0
    for uid, found in by_uid.items():
        first = found[0]
        for other in found[1:]:
            if not _same_instance(first.path, other.path):
                raise DuplicateInstanceError(f"SOPInstanceUID {short_hash(uid)} is used by {len(found)} files with "
                                             f"different content ({first.path.name}, {other.path.name})")
            repeated += 1
        unique.append(first)
    if repeated:
        warnings.append(f"{repeated} duplicate file(s) of the same instance ignored")
    return unique


def _same_instance(first: Path, other: Path) -> bool:
    """Whether two files hold the same instance: the same bytes, or the same dataset encoded differently. A file
    that cannot be read in full (pixel data included) is not the same as one that can."""
    if filecmp.cmp(first, other, shallow=False):
        return True
    try:
        return pydicom.dcmread(first) == pydicom.dcmread(other)
    except MALFORMED_DICOM_ERRORS:
        return False


def _check_pixel_format(headers: Sequence[InstanceHeader], limits: ReaderLimits) -> None:
    problems: dict[str, list[InstanceHeader]] = defaultdict(list)
    errors: dict[str, type[Exception]] = {}

    def flag(error: type[Exception], message: str, header: InstanceHeader) -> None:
        problems[message].append(header)
        errors[message] = error

    for h in headers:
        if h.sop_class_uid in CT_SOP_CLASSES and h.sop_class_uid not in READABLE_IMAGE_SOP_CLASSES:
            flag(UnsupportedImageError, f"{UID(h.sop_class_uid).name} images are not read (only "
                                        f"{', '.join(UID(c).name for c in sorted(READABLE_IMAGE_SOP_CLASSES))}): "
                                        f"export the series as classic CT images", h)
            continue
        if h.number_of_frames != 1:
            flag(UnsupportedImageError, f"multi-frame (enhanced) CT images are not supported (NumberOfFrames "
                                        f"{h.number_of_frames})", h)
        if h.samples_per_pixel != 1 or h.photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2"):
            flag(UnsupportedImageError, f"CT images must be greyscale (SamplesPerPixel {h.samples_per_pixel}, "
                                        f"PhotometricInterpretation {h.photometric_interpretation!r})", h)
        if h.bits_allocated not in (8, 16, 32):
            flag(UnsupportedImageError, f"BitsAllocated must be 8, 16 or 32, got {h.bits_allocated}", h)
        if not (0 < h.rows <= limits.max_rows and 0 < h.columns <= limits.max_columns):
            flag(ImplausiblePixelDataError, f"image size {h.rows} x {h.columns} is outside 1..{limits.max_rows} x "
                                            f"1..{limits.max_columns}", h)
            continue
        ts = UID(h.transfer_syntax_uid or "1.2.840.10008.1.2")
        if not ts.is_transfer_syntax:
            flag(PixelDecodeError, f"TransferSyntaxUID {h.transfer_syntax_uid[:64]!r} is not a transfer syntax", h)
            continue
        declared = h.rows * h.columns * h.samples_per_pixel * max(h.bits_allocated, 8) // 8 * h.number_of_frames
        if not ts.is_compressed and not ts.is_deflated and h.file_size < declared:
            flag(ImplausiblePixelDataError, f"pixel data declares {h.rows} x {h.columns} x {h.bits_allocated} bits "
                                            f"({declared} bytes) but the file has only {h.file_size} bytes", h)
        try:
            available = pixels.get_decoder(ts).is_available
        except NotImplementedError:
            available = False
        if not available:
            flag(PixelDecodeError, f"no decoder for transfer syntax {transfer_syntax_name(ts)} ({ts})", h)
    if problems:
        message, found = next(iter(problems.items()))
        raise errors[message](f"{len(found)} CT file(s), e.g. {found[0].path.name}: {message}")


# --- grouping into volumes -----------------------------------------------------------------------------------------


def describe_series(series: SeriesInfo) -> str:
    """How refusals name a series: number, description, hash of its UID and its phase (no patient data)."""
    return _describe(series)


def _describe(series: SeriesInfo | Sequence[InstanceHeader], label: str | None = None) -> str:
    if isinstance(series, SeriesInfo):
        first, label = series.instances[0], series.label
    else:
        first = series[0]
    text = f"series {first.series_number if first.series_number is not None else '?'} '{first.series_description}' " \
           f"[{short_hash(first.series_instance_uid)}]"
    return f"{text} ({label})" if label else text


def _split_series(headers: list[InstanceHeader], warnings: list[str]) -> list[SeriesInfo]:
    """The volumes in one DICOM series: one, or one per phase when a single series holds all phases."""
    what = _describe(headers)
    first = headers[0]
    kind = derived_kind(first.series_description, first.image_type)
    if kind is not None:
        return [_volume(headers, kind, None, "SeriesDescription/ImageType")]
    nominal = [h.nominal_percent for h in headers]
    if any(v is not None for v in nominal):
        if any(v is None for v in nominal):
            raise AmbiguousPhasesError(f"{what}: NominalPercentageOfRespiratoryPhase is present in some images "
                                       f"and missing in {nominal.count(None)}")
        outside = sorted({v for v in nominal if not 0 <= v < 100})
        if outside:
            raise AmbiguousPhasesError(f"{what}: NominalPercentageOfRespiratoryPhase must be in [0, 100), got "
                                       f"{', '.join(f'{v:g}' for v in outside[:4])}")
        described = _described_percent(first.series_description, what)
        if described is not None and set(nominal) != {described}:
            raise AmbiguousPhasesError(f"{what}: SeriesDescription says {described:g}% but "
                                       f"NominalPercentageOfRespiratoryPhase says {sorted(set(nominal))}")
        return [_volume(group, SeriesKind.PHASE, percent, "NominalPercentageOfRespiratoryPhase")
                for percent, group in _group_by(headers, lambda h: h.nominal_percent).items()]
    temporal = [h.temporal_position for h in headers]
    if all(t is not None for t in temporal) and len(set(temporal)) > 1:
        count = first.number_of_temporal_positions or len(set(temporal))
        if min(temporal) < 1 or max(temporal) > count:
            raise AmbiguousPhasesError(f"{what}: temporal positions {sorted(set(temporal))} do not fit "
                                       f"NumberOfTemporalPositions {count}")
        warnings.append(f"{what}: phase percents derived from temporal positions 1..{count}, assuming evenly spaced "
                        f"phases starting at 0%")
        return [_volume(group, SeriesKind.PHASE, (t - 1) * 100 / count, "TemporalPositionIdentifier")
                for t, group in _group_by(headers, lambda h: h.temporal_position).items()]
    repeats = _repeated_positions(headers, what)
    described = _described_percent(first.series_description, what)
    if repeats > 1:
        if described is not None:
            raise AmbiguousPhasesError(f"{what}: SeriesDescription names one phase ({described:g}%) but each slice "
                                       f"position occurs {repeats} times")
        warnings.append(f"{what}: {repeats} phases told apart by repeated slice positions and InstanceNumber, "
                        f"assuming evenly spaced phases starting at 0%")
        return [_volume(group, SeriesKind.PHASE, k * 100 / repeats, "repeated slice positions")
                for k, group in enumerate(_split_by_repetition(headers, repeats, what))]
    if described is None:
        return [_volume(headers, SeriesKind.CT, None, "none")]
    return [_volume(headers, SeriesKind.PHASE, described, "SeriesDescription")]


def _described_percent(description: str, what: str) -> float | None:
    try:
        return percent_from_description(description)
    except ValueError as exc:
        raise AmbiguousPhasesError(f"{what}: {exc}") from exc


def _group_by(headers: Iterable[InstanceHeader], key) -> dict:
    groups: dict = defaultdict(list)
    for header in headers:
        groups[key(header)].append(header)
    return dict(sorted(groups.items()))


def _require_geometry(headers: Sequence[InstanceHeader], what: str) -> None:
    for keyword, attr in (("ImagePositionPatient", "position"), ("ImageOrientationPatient", "orientation"),
                          ("PixelSpacing", "pixel_spacing")):
        lacking = sum(getattr(h, attr) is None for h in headers)
        if lacking:
            raise MissingGeometryError(f"{what}: {lacking} of {len(headers)} images lack a valid {keyword}")


def _repeated_positions(headers: Sequence[InstanceHeader], what: str) -> int:
    """How many times each slice position occurs (1 for a plain series); refuses an uneven repetition."""
    _require_geometry(headers, what)
    counts = Counter(_position_key(h) for h in headers).values()
    if len(set(counts)) > 1:
        raise AmbiguousPhasesError(f"{what}: slice positions occur unevenly ({min(counts)} to {max(counts)} times): "
                                   f"duplicated or missing slices, or phases that cannot be told apart")
    return next(iter(counts))


def _position_key(header: InstanceHeader) -> float:
    return round(float(np.dot(header.position, slice_normal(header.orientation))), 2)


def _split_by_repetition(headers: Sequence[InstanceHeader], repeats: int, what: str) -> list[list[InstanceHeader]]:
    """Phase k = the k-th occurrence of every slice position in InstanceNumber order; refuses overlapping blocks."""
    if any(h.instance_number is None for h in headers):
        raise AmbiguousPhasesError(f"{what}: repeated slice positions without InstanceNumber: phases cannot be told "
                                   f"apart")
    groups: list[list[InstanceHeader]] = [[] for _ in range(repeats)]
    for same_position in _group_by(headers, _position_key).values():
        for k, header in enumerate(sorted(same_position, key=lambda h: h.instance_number)):
            groups[k].append(header)
    spans = [(min(h.instance_number for h in g), max(h.instance_number for h in g)) for g in groups]
    if any(spans[k][1] >= spans[k + 1][0] for k in range(repeats - 1)):
        raise AmbiguousPhasesError(f"{what}: instance numbers of the {repeats} repetitions of each slice position "
                                   f"interleave: phases cannot be told apart")
    return groups


def _volume(headers: list[InstanceHeader], kind: SeriesKind, percent: float | None, source: str) -> SeriesInfo:
    what = _describe(headers, phase_label(percent) if kind in (SeriesKind.PHASE, SeriesKind.CT) else kind.value)
    _require_geometry(headers, what)
    first = headers[0]
    for name, values in (("ImageOrientationPatient", {tuple(round(v, 4) for v in h.orientation) for h in headers}),
                         ("PixelSpacing", {tuple(round(v, 4) for v in h.pixel_spacing) for h in headers}),
                         ("Rows x Columns", {(h.rows, h.columns) for h in headers}),
                         ("FrameOfReferenceUID", {short_hash(h.frame_of_reference_uid) for h in headers})):
        if len(values) > 1:
            raise InconsistentSeriesError(f"{what}: {name} differs between slices: {sorted(values)[:4]}")
    order = slice_order(np.array([h.position for h in headers]), first.orientation)
    ordered = tuple(headers[i] for i in order)
    geometry = geometry_from_slices(np.array([h.position for h in ordered]), first.orientation, first.pixel_spacing,
                                    (first.rows, first.columns), first.frame_of_reference_uid,
                                    [h.sop_instance_uid for h in ordered], what)
    return SeriesInfo(first.series_instance_uid, first.series_number, first.series_description, kind, percent,
                      source, geometry, ordered)


# --- the study -----------------------------------------------------------------------------------------------------


def _phases(volumes: list[SeriesInfo], warnings: list[str]) -> list[SeriesInfo]:
    phases = sorted((v for v in volumes if v.kind is SeriesKind.PHASE), key=lambda v: v.percent)
    plain = [v for v in volumes if v.kind is SeriesKind.CT]
    if not phases:
        if not plain:
            raise NoCTError("the study holds only projections (AIP/MIP/MinIP), no CT volume to contour")
        if len(plain) > 1:
            raise AmbiguousPhasesError(f"{len(plain)} CT series without respiratory phase information: "
                                       f"{'; '.join(_describe(v) for v in plain)}; send one series or a 4DCT")
        warnings.append(f"no respiratory phase information: {_describe(plain[0])} read as a single 3D CT")
        return plain
    for volume in plain:
        warnings.append(f"ignored {_describe(volume)}: a CT without respiratory phase information beside the 4DCT")
    for percent, same in _group_by(phases, lambda v: v.percent).items():
        if len(same) > 1:
            raise AmbiguousPhasesError(f"phase {percent:g}% is given by {len(same)} series: "
                                       f"{'; '.join(_describe(v) for v in same)}")
    if len(phases) == 1:
        raise IncompleteStudyError(f"only one respiratory phase found ({_describe(phases[0])}): a 4DCT needs all "
                                   f"its phases")
    _check_complete(phases, warnings)
    base = phases[0]
    for other in phases[1:]:
        mismatch = base.geometry.mismatch(other.geometry)
        if mismatch:
            raise InconsistentSeriesError(f"phases {base.label} and {other.label} are not on the same grid "
                                          f"({mismatch}): {_describe(base)} vs {_describe(other)}")
    return phases


def _check_complete(phases: list[SeriesInfo], warnings: list[str]) -> None:
    percents = np.array([p.percent for p in phases])
    step = float(np.min(np.diff(percents)))
    if step < _MIN_PHASE_STEP_PERCENT:
        close = int(np.argmin(np.diff(percents)))
        raise AmbiguousPhasesError(f"phases {phases[close].label} and {phases[close + 1].label} are less than "
                                   f"{_MIN_PHASE_STEP_PERCENT:g}% of the breathing cycle apart: not phases of one "
                                   f"4DCT ({_describe(phases[close])} vs {_describe(phases[close + 1])})")
    count = 100 / step
    on_grid = np.allclose((percents - percents[0]) / step, np.round((percents - percents[0]) / step), atol=0.02)
    if not (on_grid and abs(count - round(count)) < 0.02):
        warnings.append(f"phases are not evenly spaced ({', '.join(p.label for p in phases)}): completeness not "
                        f"checked")
        return
    expected = {round(percents[0] + k * step, 3) % 100 for k in range(round(count))}
    missing = sorted(expected - {round(float(p), 3) for p in percents})
    declared = {h.number_of_temporal_positions for p in phases for h in p.instances} - {None}
    if missing:
        raise IncompleteStudyError(f"respiratory phases missing: {', '.join(phase_label(m) for m in missing)} "
                                   f"(found {', '.join(p.label for p in phases)})")
    if declared and declared != {len(phases)}:
        raise IncompleteStudyError(f"NumberOfTemporalPositions says {sorted(declared)} phases, found {len(phases)}")


def _projections(volumes: list[SeriesInfo], base: SeriesInfo, warnings: list[str]) -> list[SeriesInfo]:
    usable = []
    for volume in (v for v in volumes if v.kind in _PROJECTIONS):
        mismatch = base.geometry.mismatch(volume.geometry)
        if mismatch:
            warnings.append(f"{_describe(volume)} is not on the phases' grid ({mismatch}): not used")
        else:
            usable.append(volume)
    return sorted(usable, key=lambda v: (v.kind.value, v.series_number or 0))


def _reference(phases: list[SeriesInfo], derived: list[SeriesInfo], percent: float,
               warnings: list[str]) -> SeriesInfo:
    averages = [v for v in derived if v.kind is SeriesKind.AVERAGE]
    if averages:
        if len(averages) > 1:
            warnings.append(f"{len(averages)} average (AIP) series; the reference is {_describe(averages[0])}")
        return averages[0]
    if phases[0].kind is SeriesKind.CT:
        return phases[0]
    nearest = min(phases, key=lambda p: abs(p.percent - percent))
    if nearest.percent != percent:
        warnings.append(f"no AIP and no {phase_label(percent)} phase: the reference is the nearest phase, "
                        f"{nearest.label}")
    return nearest

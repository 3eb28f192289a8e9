"""``write_phantom``: the phantom as CT Image Storage files in one of several vendor styles, plus its ground truth.

Vendor styles (how the respiratory phase of an image can be told; percents formatted with ``{:g}``, e.g. 10, 12.5):

============================  ============  ========================================================================
style                         series        phase carried by
============================  ============  ========================================================================
``desc-t``                    one per phase SeriesDescription "4D Thorax T=10%"
``desc-ct``                   one per phase SeriesDescription "CT 10.0%" (one decimal)
``desc-gated``                one per phase SeriesDescription "Gated 10%"
``desc-phase``                one per phase SeriesDescription "Phase 10%"
``desc-exin``                 one per phase SeriesDescription "0% In", "10% Ex" .. "50% Ex", "60% In" .. "90% In"
                                            (Ex while exhaling, 0 < p <= 50; In at 0 and while inhaling, p > 50)
``nominal``                   one per phase NominalPercentageOfRespiratoryPhase (0020,9245) FL in every image;
                                            SeriesDescription "4DCT Thorax"
``single-temporal``           one           TemporalPositionIdentifier (0020,0100) = phase index + 1 and
                                            NumberOfTemporalPositions (0020,0105) = number of phases;
                                            SeriesDescription "4DCT all phases"
``single-positions``          one           nothing: each slice position repeats once per phase; InstanceNumber and
                                            AcquisitionTime/ContentTime increase phase by phase (phase-major);
                                            SeriesDescription "4DCT Thorax"
============================  ============  ========================================================================

In every style InstanceNumber runs head to feet within a phase (and phase-major in the single-series styles) and
AcquisitionTime/ContentTime increase with the phase. Pixel encodings alternate between styles so that readers meet
both: ``desc-t``, ``desc-gated``, ``desc-exin`` and ``single-temporal`` store unsigned 12-bit values with
RescaleIntercept -1024; the others store signed 16-bit HU with RescaleIntercept 0. RescaleSlope is always 1.

The optional AIP series (SeriesDescription "AIP", ImageType DERIVED\\SECONDARY\\AXIAL\\AVERAGE) holds the mean HU of
the phases rounded to the nearest integer (half to even), on the same grid and FrameOfReferenceUID, each image
referencing its source images. RespiratoryCyclePosition (0018,9214) is not written: it is not part of the CT Image
IOD (``dciodvfy`` flags it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from dicomrt.ct_series import write_ct_image
from dicomrt.geometry import Geometry
from dicomrt.phantom.config import Compression, PhantomConfig, VendorStyle
from dicomrt.phantom.generate import STRUCTURES, Phantom4D

logger = logging.getLogger(__name__)

STATEMENT = "synthetic phantom, not patient data"
MANUFACTURER = "itvsam phantom"
PATIENT_NAME = "PHANTOM^ITVSAM"
STUDY_DATE = "20240102"
STUDY_START_S = 9 * 3600.0  # 09:00:00
PHASE_INTERVAL_S = 10.0  # reconstruction time between phases (AcquisitionTime/ContentTime)
SLICE_INTERVAL_S = 0.05
AIP_SERIES_NUMBER = 100
_TRANSFER_SYNTAX = {Compression.NONE: ExplicitVRLittleEndian, Compression.RLE: RLELossless,
                    Compression.JPEG2000: JPEG2000Lossless}


def _percent(p: float) -> str:
    return f"{p:g}"


_DESCRIPTIONS: dict[VendorStyle, Callable[[float], str]] = {
    VendorStyle.DESC_T: lambda p: f"4D Thorax T={_percent(p)}%",
    VendorStyle.DESC_CT: lambda p: f"CT {p:.1f}%",
    VendorStyle.DESC_GATED: lambda p: f"Gated {_percent(p)}%",
    VendorStyle.DESC_PHASE: lambda p: f"Phase {_percent(p)}%",
    VendorStyle.DESC_EXIN: lambda p: f"{_percent(p)}% {'Ex' if 0 < p <= 50 else 'In'}",
    VendorStyle.NOMINAL: lambda p: "4DCT Thorax",
    VendorStyle.SINGLE_TEMPORAL: lambda p: "4DCT all phases",
    VendorStyle.SINGLE_POSITIONS: lambda p: "4DCT Thorax",
}
_SINGLE_SERIES = {VendorStyle.SINGLE_TEMPORAL, VendorStyle.SINGLE_POSITIONS}
_UNSIGNED_12 = {VendorStyle.DESC_T, VendorStyle.DESC_GATED, VendorStyle.DESC_EXIN, VendorStyle.SINGLE_TEMPORAL}


def series_description(vendor: VendorStyle | str, percent: float) -> str:
    """The SeriesDescription that ``vendor`` gives to the images of phase ``percent``."""
    return _DESCRIPTIONS[VendorStyle(vendor)](percent)


@dataclass(frozen=True)
class PixelEncoding:
    """How HU are stored: ``stored = HU - intercept`` (slope 1) in ``bits_stored`` bits, signed or not."""

    signed: bool
    bits_stored: int
    intercept: int

    def encode(self, hu: np.ndarray) -> np.ndarray:
        stored = hu.astype(np.int32) - self.intercept
        if stored.min() < self.lowest or stored.max() > self.highest:
            raise ValueError(f"HU {hu.min()}..{hu.max()} do not fit {self.bits_stored}-bit "
                             f"{'signed' if self.signed else 'unsigned'} values with intercept {self.intercept}")
        return stored.astype(np.int16 if self.signed else np.uint16)

    @property
    def lowest(self) -> int:
        return -(2 ** (self.bits_stored - 1)) if self.signed else 0

    @property
    def highest(self) -> int:
        return 2 ** (self.bits_stored - 1) - 1 if self.signed else 2**self.bits_stored - 1


def pixel_encoding(vendor: VendorStyle | str) -> PixelEncoding:
    """The pixel encoding of a vendor style (see the module docstring)."""
    if VendorStyle(vendor) in _UNSIGNED_12:
        return PixelEncoding(signed=False, bits_stored=12, intercept=-1024)
    return PixelEncoding(signed=True, bits_stored=16, intercept=0)


@dataclass(frozen=True)
class VolumeFiles:
    """One volume as written: a phase (``percent``, ``phase_index``) or the AIP (both None).

    ``paths``: the files in z order, ``paths[k]`` holding slice ``k`` of ``geometry``, whose ``sop_instance_uids``
    are the written ones. In the single-series styles all phases share one SeriesInstanceUID.
    """

    percent: float | None
    phase_index: int | None
    series_instance_uid: str
    series_number: int
    series_description: str
    paths: tuple[Path, ...]
    geometry: Geometry


@dataclass(frozen=True)
class PhantomFiles:
    """What ``write_phantom`` wrote: ``volumes`` are the phases in percent order, then the AIP if written."""

    out_dir: Path
    dicom_dir: Path
    truth_npz: Path
    truth_json: Path
    vendor: VendorStyle
    compression: Compression
    study_instance_uid: str
    volumes: tuple[VolumeFiles, ...]

    @property
    def phases(self) -> tuple[VolumeFiles, ...]:
        return tuple(v for v in self.volumes if v.percent is not None)

    @property
    def aip(self) -> VolumeFiles | None:
        return next((v for v in self.volumes if v.percent is None), None)

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every DICOM file written."""
        return tuple(p for v in self.volumes for p in v.paths)


def _time(seconds: float) -> str:
    """DICOM TM ``HHMMSS.FFFFFF`` of ``seconds`` after midnight."""
    micro = round(seconds * 1e6)
    s, micro = divmod(micro, 1_000_000)
    return f"{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}.{micro:06d}"


def _ds(value: float) -> str:
    """A DS string of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def write_phantom(phantom: Phantom4D, out_dir: Path, *, vendor: VendorStyle | str, aip: bool = False,
                  compression: Compression | str = Compression.NONE) -> PhantomFiles:
    """Write ``phantom`` under ``out_dir``: the images in ``out_dir/dicom/`` and the truth in ``out_dir/truth.npz``
    and ``out_dir/truth.json``.

    File names are hashes of the SOPInstanceUIDs and the files are created in a shuffled (deterministic) order, so
    neither names nor creation order reveal the phase or slice. UIDs derive from the phantom's config, the vendor
    style, the phase and the slice (the compression does not change them). Refuses (ValueError) to write into a
    non-empty ``dicom/`` folder or over existing truth files.
    """
    try:
        vendor = VendorStyle(vendor)
    except ValueError:
        raise ValueError(f"vendor must be one of {[v.value for v in VendorStyle]}, got {vendor!r}") from None
    try:
        compression = Compression(compression)
    except ValueError:
        raise ValueError(f"compression must be one of {[c.value for c in Compression]}, "
                         f"got {compression!r}") from None
    out_dir = Path(out_dir)
    dicom_dir = out_dir / "dicom"
    truth_npz, truth_json = out_dir / "truth.npz", out_dir / "truth.json"
    if dicom_dir.exists() and any(dicom_dir.iterdir()):
        raise ValueError(f"refusing to write into {dicom_dir}: the folder is not empty (a phantom never overwrites "
                         f"existing files; choose a new output folder)")
    existing = [str(p) for p in (truth_npz, truth_json) if p.exists()]
    if existing:
        raise ValueError(f"refusing to overwrite existing truth files {existing}; choose a new output folder")
    dicom_dir.mkdir(parents=True, exist_ok=True)

    config = phantom.config
    nz = phantom.geometry.shape[0]
    encoding = pixel_encoding(vendor)
    study_uid = config.uid("study", vendor.value)
    single = vendor in _SINGLE_SERIES
    volumes_hu: list[np.ndarray] = list(phantom.hu)
    keys: list[int | str] = list(range(config.n_phases))
    if aip:
        volumes_hu.append(np.rint(phantom.hu.mean(axis=0, dtype=np.float64)).astype(np.int16))
        keys.append("aip")
    sop_uids = [[config.uid("image", vendor.value, key, k) for k in range(nz)] for key in keys]

    images: list[tuple[int, int]] = [(v, k) for v in range(len(keys)) for k in range(nz)]
    order = np.random.default_rng([config.seed, 7]).permutation(len(images))
    paths = [[dicom_dir / f"{hashlib.sha256(uid.encode()).hexdigest()[:20]}.dcm" for uid in uids]
             for uids in sop_uids]
    series_info = [_series(config, vendor, key, single) for key in keys]
    transfer_syntax = _TRANSFER_SYNTAX[compression]
    checked = False
    for index in order:
        v, k = images[index]
        key = keys[v]
        dataset = _dataset(phantom, vendor, encoding, study_uid, series_info[v], key, k, sop_uids[v][k],
                           [uids[k] for uids in sop_uids[: config.n_phases]])
        write_ct_image(paths[v][k], dataset, encoding.encode(volumes_hu[v][k]), bits_stored=encoding.bits_stored,
                       transfer_syntax=transfer_syntax, check_lossless=not checked)
        checked = True

    volumes = []
    for v, key in enumerate(keys):
        uid, number, description = series_info[v]
        geometry = Geometry(phantom.geometry.affine, phantom.geometry.shape,
                            phantom.geometry.frame_of_reference_uid, tuple(sop_uids[v]))
        percent = None if key == "aip" else phantom.percents[int(key)]
        volumes.append(VolumeFiles(percent, None if key == "aip" else int(key), uid, number, description,
                                   tuple(paths[v]), geometry))
    files = PhantomFiles(out_dir, dicom_dir, truth_npz, truth_json, vendor, compression, study_uid, tuple(volumes))
    write_truth(phantom, files)
    logger.info("wrote %d DICOM files (%s, %s) and the truth", len(images), vendor.value, compression.value)
    return files


def _series(config: PhantomConfig, vendor: VendorStyle, key: int | str, single: bool) -> tuple[str, int, str]:
    """(SeriesInstanceUID, SeriesNumber, SeriesDescription) of volume ``key``."""
    if key == "aip":
        return config.uid("series", vendor.value, "aip"), AIP_SERIES_NUMBER, "AIP"
    if single:
        return config.uid("series", vendor.value, "all"), 2, series_description(vendor, 0.0)
    return config.uid("series", vendor.value, key), 2 + int(key), series_description(vendor, config.percents[key])


def _dataset(phantom: Phantom4D, vendor: VendorStyle, encoding: PixelEncoding, study_uid: str,
             series: tuple[str, int, str], key: int | str, k: int, sop_uid: str, sources: list[str]) -> Dataset:
    """The attributes of slice ``k`` of volume ``key`` that are the phantom's own (``write_ct_image`` adds the SOP
    class, Modality, Image Pixel module, pixel data and file meta)."""
    config = phantom.config
    geometry = phantom.geometry
    nz, ny, nx = geometry.shape
    dz, dy, dx = geometry.spacing_mm
    position = geometry.index_to_patient(np.array([[k, 0.0, 0.0]]))[0]
    is_aip = key == "aip"
    phase = config.n_phases if is_aip else int(key)
    series_uid, series_number, description = series

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL", "AVERAGE"] if is_aip else ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPInstanceUID = sop_uid
    series_time = STUDY_START_S + 60.0 + phase * PHASE_INTERVAL_S
    image_time = series_time + (nz - 1 - k) * SLICE_INTERVAL_S  # the scan runs head to feet
    if vendor in _SINGLE_SERIES and not is_aip:
        series_time = STUDY_START_S + 60.0
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = _time(STUDY_START_S)
    ds.SeriesTime = _time(series_time)
    if not is_aip:
        ds.AcquisitionDate = STUDY_DATE
        ds.AcquisitionTime = _time(image_time)
    ds.ContentTime = _time(image_time)
    ds.AccessionNumber = f"PH{config.seed}"[:16]
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "itvsam synthetic data"
    ds.ReferringPhysicianName = ""
    ds.StationName = "PHANTOM"
    ds.StudyDescription = "4DCT Thorax phantom"
    ds.SeriesDescription = description
    ds.ManufacturerModelName = "dicomrt.phantom"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = f"PHANTOM-{config.seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = _ds(dz)
    ds.KVP = "120"
    ds.SoftwareVersions = "itvsam dicomrt.phantom 1"
    ds.ReconstructionDiameter = _ds(max(ny * dy, nx * dx))
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"P{config.seed}"[:16]
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    in_volume = nz - k  # head to feet
    ds.InstanceNumber = phase * nz + in_volume if vendor in _SINGLE_SERIES and not is_aip else in_volume
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
    ds.FrameOfReferenceUID = geometry.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = _ds(position[2])
    ds.ImageComments = STATEMENT
    if not is_aip:
        if vendor is VendorStyle.NOMINAL:
            ds.NominalPercentageOfRespiratoryPhase = float(phantom.percents[phase])
        elif vendor is VendorStyle.SINGLE_TEMPORAL:
            ds.TemporalPositionIdentifier = phase + 1
            ds.NumberOfTemporalPositions = config.n_phases
    else:
        ds.DerivationDescription = (f"Average intensity projection: mean HU over {config.n_phases} respiratory "
                                    f"phases, rounded to the nearest integer")
        items = []
        for uid in sources:
            item = Dataset()
            item.ReferencedSOPClassUID = CTImageStorage
            item.ReferencedSOPInstanceUID = uid
            items.append(item)
        ds.SourceImageSequence = DicomSequence(items)
    ds.PixelSpacing = [_ds(dy), _ds(dx)]
    ds.WindowCenter = ["40", "-600"]
    ds.WindowWidth = ["400", "1600"]
    ds.WindowCenterWidthExplanation = ["MEDIASTINUM", "LUNG"]
    ds.RescaleIntercept = str(encoding.intercept)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    return ds


def write_truth(phantom: Phantom4D, files: PhantomFiles) -> None:
    """``truth.npz`` (structure → (phase, z, y, x) bool, ``ITV`` (z, y, x) bool, ``percents``, ``affine`` (4, 4)
    index (z, y, x, 1) → LPS mm) and ``truth.json`` (the ground truth and what was written)."""
    arrays: dict[str, np.ndarray] = {name: phantom.truth[name] for name in STRUCTURES}
    arrays["ITV"] = phantom.itv
    arrays["percents"] = np.asarray(phantom.percents, dtype=np.float64)
    arrays["affine"] = np.asarray(phantom.geometry.affine, dtype=np.float64)
    _save_npz(files.truth_npz, arrays)
    description = phantom.describe()
    encoding = pixel_encoding(files.vendor)
    description["dicom"] = {
        "vendor_style": files.vendor.value,
        "compression": files.compression.value,
        "study_instance_uid": files.study_instance_uid,
        "frame_of_reference_uid": phantom.geometry.frame_of_reference_uid,
        "pixel_encoding": {"signed": encoding.signed, "bits_stored": encoding.bits_stored,
                           "rescale_intercept": encoding.intercept, "rescale_slope": 1},
        "aip": "mean HU over phases rounded half to even" if files.aip is not None else None,
        "series": [{"percent": v.percent, "series_instance_uid": v.series_instance_uid,
                    "series_number": v.series_number, "series_description": v.series_description,
                    "files": len(v.paths)} for v in files.volumes],
        "files": len(files.paths),
    }
    description["truth_npz"] = {"keys": [*STRUCTURES, "ITV", "percents", "affine"],
                                "masks": "(phase, z, y, x) bool; ITV (z, y, x) bool",
                                "affine": "index (z, y, x, 1) -> LPS mm"}
    files.truth_json.write_text(json.dumps(description, indent=2) + "\n")


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``numpy.savez_compressed`` but with fast (level 1) deflate: the full-size masks are ~1 GB of bools."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)

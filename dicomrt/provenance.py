"""Header attributes shared by every object we write: who made it (``Provenance``) and whose study it belongs to.

Patient and study attributes are copied from the input study (``StudyAttributes``); nothing is invented. The model
identity goes into standard attributes only (no private tags): ROIGenerationDescription of every ROI, the
StructureSetDescription / ContentDescription, and, shortened, the SeriesDescription.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from importlib import metadata

from pydicom.dataset import Dataset

from dicomrt.instances import StudyAttributes
from dicomrt.rt_errors import RTError

MANUFACTURER = "itvsam"
# DICOM value lengths (PS3.5 table 6.2-1) of the attributes we fill from arguments.
MAX_LO = 64
MAX_SH = 16


def software_version() -> str:
    """The installed itvsam version, or "unknown" when running from an uninstalled tree."""
    try:
        return metadata.version("itvsam")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Provenance:
    """What made an object. ``model_identity``: e.g. ``"sam3+lora:3f9a0c12d4"`` or ``"manual import"`` (at most 64
    characters, a DICOM LO value). ``software_version``: itvsam's version by default."""

    model_identity: str
    software_version: str = ""

    def __post_init__(self) -> None:
        check_text("model_identity", self.model_identity, MAX_LO)
        if not self.model_identity.strip():
            raise RTError("model_identity must name the model (or the tool that made the masks), got an empty string")
        object.__setattr__(self, "software_version", self.software_version or software_version())
        check_text("software_version", self.software_version, MAX_LO)


def check_text(argument: str, value: str, max_length: int) -> str:
    """``value`` if it is a string of at most ``max_length`` characters without backslash or control characters."""
    if not isinstance(value, str):
        raise RTError(f"{argument} must be a string, got {type(value).__name__}")
    if len(value) > max_length:
        raise RTError(f"{argument} must be at most {max_length} characters (its DICOM VR), got {len(value)}: "
                      f"{value!r}")
    if "\\" in value or any(ord(c) < 32 for c in value):
        raise RTError(f"{argument} must not hold a backslash or control characters, got {value!r}")
    return value


def now() -> tuple[str, str]:
    """The current local date and time as DICOM DA and TM strings."""
    moment = datetime.datetime.now()
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S.%f")


def add_patient_and_study(ds: Dataset, attributes: StudyAttributes) -> None:
    """Patient and General Study module attributes (and SpecificCharacterSet) copied from the input study."""
    charset = attributes.specific_character_set
    texts = (attributes.patient_name, attributes.referring_physician_name, attributes.study_description)
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    elif not all(t.isascii() for t in texts):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = attributes.patient_name
    ds.PatientID = attributes.patient_id
    ds.PatientBirthDate = attributes.patient_birth_date
    ds.PatientSex = attributes.patient_sex
    ds.StudyInstanceUID = attributes.study_instance_uid
    ds.StudyDate = attributes.study_date
    ds.StudyTime = attributes.study_time
    ds.StudyID = attributes.study_id
    ds.AccessionNumber = attributes.accession_number
    ds.ReferringPhysicianName = attributes.referring_physician_name
    if attributes.study_description:
        ds.StudyDescription = attributes.study_description


def add_equipment(ds: Dataset, provenance: Provenance) -> None:
    """General Equipment module: Manufacturer itvsam, model name and software version."""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER
    ds.SoftwareVersions = provenance.software_version

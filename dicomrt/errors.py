"""Why a set of DICOM files is refused as a 4DCT study.

Each refusal is its own type with a stable ``code`` (used by the CLI exit message, the HTTP API's error body and the
DICOM listener's log) and a message that names the problem and the offending series or values. Messages may name
series by description and hashed UID, never by patient name or id.
"""

from __future__ import annotations


class StudyError(ValueError):
    """Base of every refusal of an input study."""

    code = "invalid_study"


class NoCTError(StudyError):
    code = "no_ct"


class StudyNotFoundError(StudyError):
    code = "study_not_found"


class MultipleStudiesError(StudyError):
    code = "multiple_studies"


class MultiplePatientsError(StudyError):
    code = "multiple_patients"


class MissingUIDError(StudyError):
    code = "missing_uid"


class InvalidUIDError(StudyError):
    """A UID holds what a UID cannot (characters other than digits and dots, an empty component, more than 64
    characters): the UIDs of the study are copied into the objects we write, so they must be valid."""

    code = "invalid_uid"


class DuplicateInstanceError(StudyError):
    code = "duplicate_instance"


class MissingSlicesError(StudyError):
    code = "missing_slices"


class NonUniformSpacingError(StudyError):
    code = "nonuniform_spacing"


class ObliqueSlicesError(StudyError):
    code = "oblique_slices"


class GantryTiltError(StudyError):
    code = "gantry_tilt"


class InconsistentSeriesError(StudyError):
    """Slices of one series (or phases of one study) disagree in geometry, frame of reference or image format."""

    code = "inconsistent_series"


class AmbiguousPhasesError(StudyError):
    """The respiratory phases cannot be told apart without guessing."""

    code = "ambiguous_phases"


class ImplausiblePixelDataError(StudyError):
    code = "implausible_pixel_data"


class UnsupportedImageError(StudyError):
    code = "unsupported_image"


class PixelDecodeError(StudyError):
    code = "undecodable_pixel_data"


class MissingGeometryError(StudyError):
    code = "missing_geometry"


class IncompleteStudyError(StudyError):
    """Respiratory phases are missing: an ITV from an incomplete 4DCT would be too small."""

    code = "incomplete_study"

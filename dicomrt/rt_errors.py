"""Why RT outputs cannot be written, or an RT structure set cannot be read, from the inputs given.

Each refusal is a ``ValueError`` subclass with a stable ``code`` (as in ``dicomrt.errors``) and a message that names
the argument or element, what was expected and what was received. Messages never hold patient names or ids.
"""

from __future__ import annotations


class RTError(ValueError):
    """Base of every refusal in the RT output and RT structure set code."""

    code = "invalid_rt_input"


class TemplateError(RTError):
    """A structure template (or one ``StructureSpec``) is invalid: the message names the bad field."""

    code = "invalid_template"


class MaskShapeError(RTError):
    """A mask is not on the expected grid: the message gives the expected and received shapes."""

    code = "mask_shape"


class GridMismatchError(RTError):
    """Two series that must share voxel positions (a phase and the reference series) do not."""

    code = "grid_mismatch"


class ContourError(RTError):
    """A contour cannot be written or read as a valid closed planar polygon."""

    code = "invalid_contour"


class ReferenceMismatchError(RTError):
    """An RT structure set does not belong to the CT series it is matched against (or names none)."""

    code = "reference_mismatch"

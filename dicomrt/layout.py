"""Where a job's outputs go: every file name of an output folder, in one place.

Writers (``dicomrt.outputs``), the result zip and API routes (``service``), deliveries and the demo all name files
through ``OutputLayout``, so a name changes here or nowhere::

    RS_phase00.dcm ...        one RTSTRUCT per phase series
    RS_reference.dcm          on the reference series: the ITV (and its expansion) and every phase's target
    RS_combined.dcm           one RTSTRUCT referencing every phase series
    seg/SEG_phase00.dcm ...   DICOM SEG per phase
    derived/AIP, derived/MIP  average / maximum intensity projections written by the job
    summary.json, report.png  the JSON summary and the QA picture
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REFERENCE_RTSTRUCT = "RS_reference.dcm"
COMBINED_RTSTRUCT = "RS_combined.dcm"
PHASE_RTSTRUCTS = "RS_phase*.dcm"
SEGS = "seg/SEG_phase*.dcm"
DERIVED = "derived"
AIP, MIP = "AIP", "MIP"  # the folders of the projections under derived/
AIP_FILES = f"{DERIVED}/{AIP}/*.dcm"
SUMMARY = "summary.json"
REPORT = "report.png"


@dataclass(frozen=True)
class OutputLayout:
    """The output folder ``root`` of one job (or ``itvsam contour`` run)."""

    root: Path

    def phase_rtstruct(self, k: int) -> Path:
        """The RTSTRUCT of the ``k``-th phase (0-based, in percent order)."""
        return self.root / PHASE_RTSTRUCTS.replace("*", f"{k:02d}")

    def seg(self, k: int) -> Path:
        return self.root / SEGS.replace("*", f"{k:02d}")

    @property
    def reference_rtstruct(self) -> Path:
        return self.root / REFERENCE_RTSTRUCT

    @property
    def combined_rtstruct(self) -> Path:
        return self.root / COMBINED_RTSTRUCT

    @property
    def derived(self) -> Path:
        return self.root / DERIVED

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def report(self) -> Path:
        return self.root / REPORT

    def phase_rtstructs(self) -> list[Path]:
        """The per-phase RTSTRUCTs present, in phase order."""
        return sorted(self.root.glob(PHASE_RTSTRUCTS))

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

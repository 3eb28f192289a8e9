"""What produced a result: the model identity recorded with every job, in every DICOM object and summary. No torch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from dicomrt.provenance import MAX_LO


@dataclass(frozen=True)
class ModelIdentity:
    """What produced a result: SHA-256 of the config (canonical JSON), of the weight files, and of the adapter.

    ``merged_from`` is set for a checkpoint written by ``merge``: the identity of the base and adapter it came from.
    ``label``: the model directory's label (``itvsam_model.json``), e.g. that it is a phantom model.
    ``thresholds``: the calibrated per-structure thresholds (of the adapter when there is one, else of the model).
    """

    config_sha256: str
    weights_sha256: str
    adapter_sha256: str | None = None
    merged_from: dict[str, str | None] | None = None
    label: str | None = None
    thresholds: dict[str, float] | None = None

    @property
    def short(self) -> str:
        """12 hex digits summarising the whole identity (for logs and file names)."""
        text = f"{self.config_sha256}:{self.weights_sha256}:{self.adapter_sha256}"
        if self.thresholds is not None:
            text += ":" + json.dumps(self.thresholds, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (recorded with every result)."""
        return {**asdict(self), "short": self.short}

    def dicom_text(self) -> str:
        """The model as written into every DICOM object (a LO value, ≤ 64 characters): its hash, and the head of its
        label (e.g. "PHANTOM MODEL") so that a phantom model's contours say so inside the planning system too."""
        label = (self.label or "").split(":")[0].strip()
        return (f"itvsam SAM3 {self.short}" + (f" {label}" if label else ""))[:MAX_LO]

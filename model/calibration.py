"""Per-structure probability thresholds, calibrated on validation volumes (``itvsam_calibration.json``). No torch.

A model's probabilities are not calibrated: one trained with a recall-favouring loss over-segments at 0.5, one trained
on few positives under-segments. At every validation the trainer measures, per structure, the Dice of the raw mask
``probability ≥ t`` (before refinement) for every ``t`` of ``THRESHOLD_GRID`` (``dice_curve``), and with the best
result it writes the threshold that maximises the mean Dice over the validation volumes (``calibrate``; ties go to
the threshold nearest ``DEFAULT_THRESHOLD``). The pipeline thresholds each structure at its calibrated value unless a
job sets one threshold for all; a structure the calibration does not name takes ``DEFAULT_THRESHOLD``.

The calibration belongs to the weights it was measured with: a full model's directory holds it, and for a LoRA
adapter the adapter's directory (with an adapter, a base model's own calibration is not used); ``merge`` carries the
adapter's into the merged model. It is part of the model identity (``model.sam3.ModelIdentity.thresholds``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.metrics import dice

CALIBRATION_FILE = "itvsam_calibration.json"
DEFAULT_THRESHOLD = 0.5
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))  # 0.20, 0.25, …, 0.80


def thresholds_for(names: Sequence[str], calibrated: Mapping[str, float] | None, override: float | None = None
                   ) -> dict[str, float]:
    """The threshold of each structure: ``override`` when given, else its ``calibrated`` one, else the default."""
    calibrated = calibrated or {}
    return {name: override if override is not None else calibrated.get(name, DEFAULT_THRESHOLD) for name in names}


def dice_curve(probability: np.ndarray, truth: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> np.ndarray:
    """Dice of ``probability ≥ t`` against the bool ``truth`` for every ``t`` of ``grid`` (same length)."""
    return np.array([dice(probability >= t, truth) for t in grid])


def calibrate(curves: Mapping[str, Sequence[np.ndarray]], grid: Sequence[float] = THRESHOLD_GRID
              ) -> dict[str, dict[str, float]]:
    """Per structure, from its per-volume ``dice_curve``s: ``threshold`` (the grid value of the highest mean Dice,
    ties to the one nearest ``DEFAULT_THRESHOLD``), ``dice`` there and ``dice_at_default``."""
    grid = np.asarray(grid, dtype=np.float64)
    out = {}
    for name, per_volume in curves.items():
        mean = np.mean(np.stack(per_volume), axis=0)
        best = np.flatnonzero(mean == mean.max())
        pick = int(best[np.argmin(np.abs(grid[best] - DEFAULT_THRESHOLD))])
        at_default = np.flatnonzero(np.isclose(grid, DEFAULT_THRESHOLD))
        out[name] = {"threshold": float(grid[pick]), "dice": float(mean[pick]),
                     "dice_at_default": float(mean[at_default[0]]) if len(at_default) else float("nan")}
    return out


def write_calibration(directory: str | Path, calibration: Mapping[str, Mapping[str, float]], volumes: int,
                      grid: Sequence[float] = THRESHOLD_GRID) -> Path:
    """Write ``directory/itvsam_calibration.json``: thresholds, the Dice behind them, the grid and the volume count."""
    path = Path(directory) / CALIBRATION_FILE
    data: dict[str, Any] = {
        "thresholds": {name: c["threshold"] for name, c in calibration.items()},
        "validation": {name: {"dice": round(c["dice"], 5), "dice_at_default": round(c["dice_at_default"], 5)}
                       for name, c in calibration.items()},
        "grid": list(grid), "volumes": volumes,
        "measured_on": "raw masks (before refinement) of the validation volumes",
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def read_thresholds(directory: str | Path) -> dict[str, float] | None:
    """The calibrated thresholds in ``directory`` (None when it has no calibration file). Raises ``ValueError`` for a
    file that is not a mapping of structure names to thresholds strictly between 0 and 1."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        thresholds = json.loads(path.read_text(encoding="utf-8"))["thresholds"]
        out = {str(name): float(value) for name, value in thresholds.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a calibration file ({exc}); expected {{\"thresholds\": {{name: value}}}}"
                         ) from None
    bad = {name: value for name, value in out.items() if not 0.0 < value < 1.0}
    if bad:
        raise ValueError(f"{path}: thresholds must lie strictly between 0 and 1, got {bad}")
    return out

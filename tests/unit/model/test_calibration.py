"""Per-structure threshold calibration: the Dice curve, the choice of threshold, the file and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.calibration import (
    CALIBRATION_FILE,
    THRESHOLD_GRID,
    calibrate,
    dice_curve,
    read_thresholds,
    thresholds_for,
    write_calibration,
)


def _disc_probability(scale: float) -> np.ndarray:
    """(1, 64, 64) probability falling linearly with the distance from the centre: ``≥ t`` is a disc of radius
    ``scale · (1 − t)``."""
    y, x = np.mgrid[:64, :64]
    r = np.hypot(y - 32, x - 32)
    return np.clip(1.0 - r / scale, 0.0, 1.0)[None].astype(np.float32)


def test_dice_curve_peaks_where_the_thresholded_disc_matches_the_truth() -> None:
    y, x = np.mgrid[:64, :64]
    truth = (np.hypot(y - 32, x - 32) <= 12.0)[None]
    # ≥ t is the disc of radius 20 (1 − t): the truth's radius 12 at t = 0.4, so an over-segmenting model
    curve = dice_curve(_disc_probability(20.0), truth)
    assert len(curve) == len(THRESHOLD_GRID)
    assert THRESHOLD_GRID[int(np.argmax(curve))] == 0.4
    assert curve[THRESHOLD_GRID.index(0.4)] == pytest.approx(1.0)
    assert curve[THRESHOLD_GRID.index(0.5)] < 0.9


def test_calibrate_takes_the_best_mean_and_breaks_ties_towards_one_half() -> None:
    grid = (0.3, 0.4, 0.5, 0.6)
    curves = {"Heart": [np.array([0.7, 0.8, 0.85, 0.9]), np.array([0.7, 0.8, 0.85, 0.88])],
              "Flat": [np.array([0.6, 0.9, 0.9, 0.9])]}
    result = calibrate(curves, grid)
    assert result["Heart"] == {"threshold": 0.6, "dice": pytest.approx(0.89), "dice_at_default": pytest.approx(0.85)}
    assert result["Flat"]["threshold"] == 0.5


def test_calibration_file_round_trip_and_refusals(tmp_path: Path) -> None:
    assert read_thresholds(tmp_path) is None
    path = write_calibration(tmp_path, {"GTV": {"threshold": 0.45, "dice": 0.8, "dice_at_default": 0.78}}, 2)
    assert path.name == CALIBRATION_FILE
    assert read_thresholds(tmp_path) == {"GTV": 0.45}
    assert json.loads(path.read_text())["validation"]["GTV"] == {"dice": 0.8, "dice_at_default": 0.78}
    path.write_text(json.dumps({"thresholds": {"GTV": 1.2}}))
    with pytest.raises(ValueError, match=r"strictly between 0 and 1, got \{'GTV': 1.2\}"):
        read_thresholds(tmp_path)
    path.write_text("[]")
    with pytest.raises(ValueError, match="not a calibration file"):
        read_thresholds(tmp_path)


def test_thresholds_for_override_then_calibrated_then_default() -> None:
    assert thresholds_for(["GTV", "Heart"], {"GTV": 0.4}) == {"GTV": 0.4, "Heart": 0.5}
    assert thresholds_for(["GTV", "Heart"], {"GTV": 0.4}, 0.6) == {"GTV": 0.6, "Heart": 0.6}
    assert thresholds_for(["GTV"], None) == {"GTV": 0.5}

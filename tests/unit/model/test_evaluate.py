"""``model.evaluate`` against numbers computed by hand on a toy case (a stub predictor, no model)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dicomrt.structures import RoiType, StructureSpec
from model.datasets import AnnotatedVolume
from model.evaluate import evaluate, summarise, write_report
from tests.unit.model.conftest import make_geometry

TEMPLATE = (StructureSpec("GTV", ("tumour",), (255, 0, 0), RoiType.GTV, itv=True),)
GEOMETRY = make_geometry((6, 10, 10), (2.0, 1.0, 1.0))  # voxel 2 mm³ = 0.002 ml


@dataclass(frozen=True)
class _Prediction:
    probability: np.ndarray


class _Stub:
    """Predicts a fixed probability volume per call, in order."""

    def __init__(self, volumes: list[np.ndarray]) -> None:
        self.volumes = list(volumes)

    def predict_volumes(self, volumes_hu, structures, progress=None):
        for k, _ in enumerate(volumes_hu):
            yield k, {"GTV": _Prediction(self.volumes.pop(0))}


def _box(z: slice, y: slice, x: slice) -> np.ndarray:
    mask = np.zeros(GEOMETRY.shape, dtype=bool)
    mask[z, y, x] = True
    return mask


def test_eval_numbers_match_a_hand_computed_case(tmp_path: Path) -> None:
    truth = [_box(slice(1, 3), slice(2, 4), slice(2, 4)), _box(slice(2, 4), slice(2, 4), slice(2, 4))]  # 8 voxels
    predicted = [_box(slice(1, 4), slice(2, 4), slice(2, 4)),  # 12 voxels, 8 shared; slice 3 has no truth
                 _box(slice(2, 4), slice(2, 4), slice(3, 5))]  # 8 voxels, 4 shared
    volumes = [AnnotatedVolume(np.zeros(GEOMETRY.shape, np.int16), {"GTV": t}, GEOMETRY, "toy", k, 2)
               for k, t in enumerate(truth)]
    rows = evaluate(_Stub([p.astype(np.float32) for p in predicted]), volumes, TEMPLATE, refine=False)
    assert [(r.structure, r.phase) for r in rows] == [("GTV", "0"), ("GTV", "1"), ("GTV", "ITV")]
    phase0, phase1, itv = rows
    assert phase0.dice == pytest.approx(2 * 8 / (12 + 8))  # 0.8
    assert phase1.dice == pytest.approx(2 * 4 / (8 + 8))  # 0.5
    assert phase0.volume_ml == pytest.approx(12 * 0.002) and phase0.truth_ml == pytest.approx(8 * 0.002)
    assert phase0.volume_error_pct == pytest.approx(50.0) and phase1.volume_error_pct == pytest.approx(0.0)
    assert phase0.fp_slices == 1 and phase1.fp_slices == 0
    assert phase1.hd95_mm == pytest.approx(1.0)  # shifted by one 1 mm voxel along x
    # ITV: the union of the predictions (z 1: x 2-3, z 2-3: x 2-4, y 2-3: 4 + 12 voxels) holds the union of the
    # truth (z 1-3, x 2-3, y 2-3: 12 voxels)
    assert itv.dice == pytest.approx(2 * 12 / (16 + 12))
    summary = summarise(rows)
    assert summary[0]["structure"] == "GTV" and summary[0]["dice"] == pytest.approx(0.65)
    assert summary[1]["structure"] == "GTV ITV" and summary[0]["fp_slices"] == 1
    csv_path, json_path = write_report(rows, tmp_path, {"model": "stub"})
    with csv_path.open() as handle:
        lines = list(csv.DictReader(handle))
    assert float(lines[0]["dice"]) == pytest.approx(0.8) and lines[2]["phase"] == "ITV"
    data = json.loads(json_path.read_text())
    assert data["meta"] == {"model": "stub"} and data["rows"][1]["dice"] == pytest.approx(0.5)


def test_empty_masks_give_nan_hd95_and_no_volume_error() -> None:
    volume = AnnotatedVolume(np.zeros(GEOMETRY.shape, np.int16), {"GTV": np.zeros(GEOMETRY.shape, bool)}, GEOMETRY,
                             "empty")
    stub = _Stub([_box(slice(0, 1), slice(0, 2), slice(0, 2)).astype(np.float32)])
    (row,) = evaluate(stub, [volume], TEMPLATE, refine=False)
    assert row.dice == 0.0 and math.isnan(row.hd95_mm) and math.isnan(row.volume_error_pct) and row.fp_slices == 1


def test_refined_evaluation_drops_specks_like_the_pipeline() -> None:
    truth = _box(slice(1, 4), slice(2, 6), slice(2, 6))
    speck = truth.copy()
    speck[5, 9, 9] = True  # 0.002 ml, under the spec's 0.05 ml minimum
    volume = AnnotatedVolume(np.zeros(GEOMETRY.shape, np.int16), {"GTV": truth}, GEOMETRY, "3d")
    (raw,) = evaluate(_Stub([speck.astype(np.float32)]), [volume], TEMPLATE, refine=False)
    (refined,) = evaluate(_Stub([speck.astype(np.float32)]), [volume], TEMPLATE, refine=True)
    assert raw.fp_slices == 1 and refined.fp_slices == 0 and refined.dice == 1.0

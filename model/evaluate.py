"""Evaluation against truth: per study, structure and phase, Dice, HD95, volume error and false-positive slices.

``evaluate`` predicts every phase of every study through the pipeline's own path (``model.segment.predict_phases``:
each structure's probability ≥ its calibrated threshold, ``model.calibration``; else 0.5), refines the masks unless
``refine=False`` (``model.refine.refine_from_spec``, as ``workers.pipeline`` does), and scores them. For a 4DCT,
structures whose spec has ``itv`` also get a row for their ITV (``dicomrt.itv.build_itv``, phase ``ITV``) against the
union of the truth.

Definitions (per phase, (z, y, x) masks on the CT grid): Dice and HD95 from ``model.metrics`` (HD95 NaN when one mask
is empty, 0 when both are); ``volume_error_pct`` = 100 · (predicted − true volume) / true volume (NaN when the truth
is empty); ``fp_slices``: axial slices where the prediction has voxels and the truth has none.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dicomrt.geometry import Geometry
from dicomrt.itv import build_itv
from dicomrt.structures import StructureSpec, TemporalSettings
from model.calibration import thresholds_for
from model.datasets import AnnotatedVolume
from model.metrics import dice, hd95
from model.refine import EVIDENCE_THRESHOLD, refine_from_spec
from model.segment import Predictor, predict_phases

COLUMNS = ("study", "structure", "phase", "dice", "hd95_mm", "volume_ml", "truth_ml", "volume_error_pct", "fp_slices")


@dataclass(frozen=True)
class EvalRow:
    """One structure in one phase of one study (``phase``: its index as text, or ``ITV`` for the union)."""

    study: str
    structure: str
    phase: str
    dice: float
    hd95_mm: float
    volume_ml: float
    truth_ml: float
    volume_error_pct: float
    fp_slices: int


def score(study: str, structure: str, phase: str, predicted: np.ndarray, truth: np.ndarray, geometry: Geometry
          ) -> EvalRow:
    """The row of one (z, y, x) prediction against its truth."""
    spacing = tuple(float(s) for s in geometry.spacing_mm)
    voxel_ml = geometry.voxel_volume_ml
    volume, truth_volume = float(predicted.sum()) * voxel_ml, float(truth.sum()) * voxel_ml
    error = 100.0 * (volume - truth_volume) / truth_volume if truth_volume > 0 else float("nan")
    fp = int((predicted.any(axis=(1, 2)) & ~truth.any(axis=(1, 2))).sum())
    return EvalRow(study, structure, phase, dice(predicted, truth), hd95(predicted, truth, spacing), volume,
                   truth_volume, error, fp)


def group_studies(volumes: Sequence[AnnotatedVolume]) -> dict[str, list[AnnotatedVolume]]:
    """Volumes by study, phases in order."""
    studies: dict[str, list[AnnotatedVolume]] = defaultdict(list)
    for volume in volumes:
        studies[volume.study].append(volume)
    return {k: sorted(v, key=lambda x: x.phase) for k, v in studies.items()}


def evaluate(predictor: Predictor, volumes: Sequence[AnnotatedVolume], template: Sequence[StructureSpec], *,
             refine: bool = True, temporal: TemporalSettings | None = None,
             thresholds: Mapping[str, float] | None = None) -> list[EvalRow]:
    """Rows for every study, structure and phase (plus ITV rows, see the module docstring). ``thresholds``: the
    model's calibrated ones (a structure they do not name takes 0.5)."""
    temporal = TemporalSettings() if temporal is None else temporal
    threshold = thresholds_for([s.name for s in template], thresholds)
    rows: list[EvalRow] = []
    for study, phases in group_studies(volumes).items():
        predicted = predict_phases(predictor, [v.hu for v in phases], template, threshold)
        geometry = phases[0].geometry
        for spec in template:
            if refine:
                masks = refine_from_spec(spec, predicted[spec.name], geometry, temporal).refined
            else:
                masks = predicted[spec.name] >= EVIDENCE_THRESHOLD
            truth = np.stack([v.masks[spec.name] for v in phases])
            for k, volume in enumerate(phases):
                rows.append(score(study, spec.name, str(volume.phase), masks[k], truth[k], geometry))
            if spec.itv and len(phases) > 1:
                rows.append(score(study, spec.name, "ITV", build_itv(masks, geometry), truth.any(axis=0), geometry))
    return rows


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarise(rows: Sequence[EvalRow]) -> list[dict[str, Any]]:
    """Per structure (and ``ITV`` rows apart): mean Dice, HD95 (over defined values), |volume error|, total false-
    positive slices, and the number of phase rows."""
    groups: dict[str, list[EvalRow]] = defaultdict(list)
    for row in rows:
        groups[f"{row.structure} ITV" if row.phase == "ITV" else row.structure].append(row)
    return [{"structure": name, "dice": _mean([r.dice for r in group]), "hd95_mm": _mean([r.hd95_mm for r in group]),
             "abs_volume_error_pct": _mean([abs(r.volume_error_pct) for r in group]),
             "fp_slices": sum(r.fp_slices for r in group), "n": len(group)} for name, group in groups.items()]


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def write_report(rows: Sequence[EvalRow], out_dir: Path, meta: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """``eval.csv`` (one line per row, ``COLUMNS``) and ``eval.json`` (rows, summary, ``meta``) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / "eval.csv", out_dir / "eval.json"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if _clean(v) is None else v) for k, v in asdict(row).items()})
    data = {"meta": dict(meta or {}), "summary": [{k: _clean(v) for k, v in s.items()} for s in summarise(rows)],
            "rows": [{k: _clean(v) for k, v in asdict(r).items()} for r in rows]}
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return csv_path, json_path

"""``run_job`` with a stub predictor whose probabilities are built from a phantom's truth: the calibrated thresholds
are the ones used, each flag appears when its condition is built in, the ITV and the expanded ITV are in the
reference RTSTRUCT, and the expansion is the one computed by hand (a k-d tree over voxel centres in patient mm)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial import cKDTree

from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from dicomrt.reader import scan_study
from dicomrt.rtstruct_read import rasterise_roi, read_rtstruct
from dicomrt.structures import thoracic_template
from jobs.options import JobOptions
from model.identity import ModelIdentity
from workers.pipeline import Engine, run_job

GTV, LUNG_L, _, HEART = thoracic_template()
CALIBRATED = {"GTV": 0.5, "Lung_L": 0.4, "Heart": 0.6}
DROPPED_PHASE, TRANSIENT_PHASE = 3, 6


class TruthPredictor:
    """Probabilities from the phantom's truth, phase by phase (the pipeline predicts the phases in order): the GTV
    at 0.9 except in one dropped phase, plus a small persistent blob (a second object) and a one-phase blob (a
    transient); Lung_L at 0.45 (kept only at its calibrated 0.4); the heart at 0.55 (below its calibrated 0.6)."""

    def __init__(self, truth: dict[str, np.ndarray]) -> None:
        self.truth = truth

    def predict_volumes(self, volumes_hu, prompts, progress=None):
        total = sum(len(v) for v in volumes_hu)
        for k, volume in enumerate(volumes_hu):
            yield k, self.predict(k, volume, prompts)
            if progress is not None:
                progress(sum(len(v) for v in volumes_hu[:k + 1]), total)

    def predict(self, k, volume_hu, prompts):
        gtv = np.where(self.truth["GTV"][k], 0.9, 0.0).astype(np.float32)
        if k == DROPPED_PHASE:
            gtv[:] = 0.0
        gtv[4:7, 10:13, 10:13] = 0.9  # persistent, far from the tumour: a second object in every phase
        if k == TRANSIENT_PHASE:
            gtv[30:33, 110:113, 110:113] = 0.9
        probabilities = {"GTV": gtv, "Lung_L": np.where(self.truth["Lung_L"][k], 0.45, 0.0),
                         "Heart": np.where(self.truth["Heart"][k], 0.55, 0.0)}
        return {name: SimpleNamespace(probability=probabilities[name]) for name in prompts}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    phantom = generate_phantom(PhantomConfig(seed=3))
    files = write_phantom(phantom, root / "study", vendor="desc-t")
    identity = ModelIdentity("0" * 64, "1" * 64, label="PHANTOM MODEL: test stub", thresholds=CALIBRATED)
    options = JobOptions(template=(GTV, LUNG_L, HEART), mode="reference", seg=False, projections=False,
                         itv_margin_mm=5.0)
    result = run_job(files.dicom_dir, root / "out", Engine(TruthPredictor(phantom.truth), identity), options)
    return phantom, files, result, root / "out"


def test_the_calibrated_thresholds_are_the_ones_used(job):
    _, _, result, out = job
    assert {r.spec.name: r.threshold for r in result.structures} == CALIBRATED
    assert result.structure("Lung_L").motion.volumes_ml.min() > 0  # 0.45 ≥ 0.4: kept (at 0.5 it would be empty)
    assert not result.structure("Heart").refined.any()  # 0.55 < 0.6
    summary = json.loads((out / "summary.json").read_text())
    assert {name: s["threshold"] for name, s in summary["structures"].items()} == CALIBRATED
    assert summary == json.loads(json.dumps(result.summary()))  # one summary, written as returned


def test_each_flag_appears_when_its_condition_is_built_in(job):
    _, _, result, out = job
    phases = ", ".join(f"{10 * k}%" for k in range(10))
    assert result.flags() == [
        f"GTV: missing in phase(s) {10 * DROPPED_PHASE}%, refilled at the position of the periodic motion model (the "
        "neighbouring phases' shape)",
        "GTV: 1 component(s) present in too few phases removed",
        "GTV: 10 smaller component(s) in 10 phase(s) removed beyond the template's 1 object(s): check for another "
        "lesion",
        f"Heart: empty in 10 of 10 phase(s) ({phases})",
    ]
    assert json.loads((out / "summary.json").read_text())["flags"] == result.flags()
    gtv = result.structure("GTV")
    report = gtv.masks.report
    assert report.filled_phases == (DROPPED_PHASE,) and report.removed_temporal[TRANSIENT_PHASE] == 1
    assert report.refills[0].source == "motion" and not report.refills[0].at_extreme
    itv = json.loads((out / "summary.json").read_text())["structures"]["GTV"]["itv"]
    assert itv["refilled_phases"] == [f"{10 * DROPPED_PHASE}%"]
    assert itv["observed_phases"] == [f"{10 * k}%" for k in range(10) if k != DROPPED_PHASE]
    without = np.delete(gtv.refined, DROPPED_PHASE, axis=0).any(axis=0)
    voxel_ml = result.study.phases[0].geometry.voxel_volume_ml
    assert itv["volume_observed_ml"] == round(float(without.sum()) * voxel_ml, 4) <= itv["volume_ml"]


def test_the_reference_rtstruct_holds_the_itv_and_its_hand_computed_expansion(job):
    _, files, result, out = job
    gtv = result.structure("GTV")
    assert np.array_equal(gtv.itv, gtv.refined.any(axis=0))
    assert not gtv.refined[:, 4:7, 10:13, 10:13].any()  # the second object is gone from every phase
    content = read_rtstruct(out / "RS_reference.dcm")
    assert content.names[:2] == ["ITV", "ITV+5mm"]
    assert [n for n in content.names if n.startswith("GTV_T")] == [f"GTV_T{10 * k:02d}" for k in range(10)]
    geometry = scan_study(files.dicom_dir).reference.geometry
    itv = rasterise_roi(content.roi("ITV"), geometry).mask
    expanded = rasterise_roi(content.roi("ITV+5mm"), geometry).mask
    assert np.array_equal(itv, gtv.itv)

    # by hand: every voxel whose centre lies within 5 mm of an ITV voxel centre, in patient coordinates
    grid = np.indices(geometry.shape).reshape(3, -1).T
    centres = geometry.index_to_patient(grid.astype(float))
    distance, _ = cKDTree(geometry.index_to_patient(np.argwhere(gtv.itv).astype(float))).query(centres)
    by_hand = (distance <= 5.0 + 1e-6).reshape(geometry.shape)
    assert np.array_equal(expanded, by_hand)
    assert np.array_equal(gtv.itv_expanded, by_hand)
    assert by_hand.sum() > 1.5 * gtv.itv.sum() and not (gtv.itv & ~by_hand).any()  # grows, contains the ITV
    voxel_ml = geometry.voxel_volume_ml
    itv_summary = result.summary()["structures"]["GTV"]["itv"]
    assert itv_summary["expanded"] == {"name": "ITV+5mm", "margin_mm": 5.0,
                                       "volume_ml": round(float(by_hand.sum()) * voxel_ml, 4)}


class CountingPredictor(TruthPredictor):
    """TruthPredictor that records the phases it has been given (each as soon as it is read)."""

    def __init__(self, truth):
        super().__init__(truth)
        self.seen = []

    def predict_volumes(self, volumes_hu, prompts, progress=None):
        for k, volume in enumerate(volumes_hu):
            slices = np.asarray(volume[:])  # waits until the phase is read; raises when it was refused
            self.seen.append(k)
            yield k, self.predict(k, slices, prompts)


def test_a_phase_refused_while_the_model_runs_refuses_the_job_and_nothing_is_left_running(tmp_path):
    """The phases are read in the background while the model segments those already read: a slice of phase 60 %
    that cannot be read (HU beyond int16) refuses the job with the reader's message once the model reaches it, the
    phases before it having been segmented, and the job's background thread is gone when ``run_job`` returns."""
    import threading

    import pydicom

    from dicomrt.errors import ImplausiblePixelDataError

    phantom = generate_phantom(PhantomConfig(seed=3))
    files = write_phantom(phantom, tmp_path / "study", vendor="desc-t")
    bad = scan_study(files.dicom_dir).phases[6].instances[10].path
    ds = pydicom.dcmread(bad)
    ds.RescaleIntercept = 40000
    ds.save_as(bad)
    predictor = CountingPredictor(phantom.truth)
    identity = ModelIdentity("0" * 64, "1" * 64, label="PHANTOM MODEL: test stub", thresholds=CALIBRATED)
    options = JobOptions(template=(GTV, LUNG_L, HEART), seg=False)
    with pytest.raises(ImplausiblePixelDataError, match=r"T=60%.*slice 10 has HU values outside the int16 range"):
        run_job(files.dicom_dir, tmp_path / "out", Engine(predictor, identity), options)
    assert predictor.seen == [0, 1, 2, 3, 4, 5]
    assert not [t for t in threading.enumerate() if t.name.startswith("itvsam-job")]

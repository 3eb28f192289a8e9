"""The RTSTRUCT writer on the real totalseg CT grid (and a 4DCT index made of it): headers, refusals, modes, and
our own reader back (Dice >= 0.99; in fact exact)."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomrt import rt_outputs
from dicomrt.contours import MaskPolygons
from dicomrt.geometry import Geometry
from dicomrt.provenance import Provenance
from dicomrt.rt_errors import GridMismatchError, MaskShapeError, RTError, TemplateError
from dicomrt.rt_outputs import check_masks, write_rtstructs
from dicomrt.rtstruct import RoiMask, RTStructureSet, _contour_data
from dicomrt.rtstruct_read import match_series, rasterise_roi, read_rtstruct
from dicomrt.structures import COLOURS, RoiType, thoracic_template
from tests.support.fake_study import fake_4d_index
from tests.support.nrrd import dice
from tests.support.rt_data import totalseg_index, totalseg_masks, totalseg_specs

PROVENANCE = Provenance("sam3-test-model")
PERCENTS = (0, 20, 40, 60, 80)


@pytest.fixture(scope="module")
def index(shared_data):
    return totalseg_index(shared_data)


@pytest.fixture(scope="module")
def index4d(index):
    return fake_4d_index(index, PERCENTS, reference_percent=40)


@pytest.fixture(scope="module")
def tumour(index):
    """(phase, z, y, x): a ~1 cm³-scale box moving 2 voxels per phase along y, plus a one-voxel speck in phase 0."""
    masks = np.zeros((len(PERCENTS), *index.reference.geometry.shape), bool)
    for k in range(len(PERCENTS)):
        masks[k, 8:13, 200 + 2 * k:212 + 2 * k, 300:311] = True
    masks[0, 3, 50, 60] = True
    return masks


def write_one(index, rois, tmp_path, **kwargs) -> Path:
    rtss = RTStructureSet(index.attributes, [index.reference], rois, label="itvsam test", description="test",
                          provenance=PROVENANCE, **kwargs)
    return rtss.save(tmp_path / "rtss.dcm")


def test_totalseg_structures_come_back_from_our_reader(index, shared_data, tmp_path):
    masks = totalseg_masks(shared_data)
    rois = [RoiMask(s.name, s.colour, s.interpreted_type, masks[s.name]) for s in totalseg_specs()]
    path = write_one(index, rois, tmp_path)
    content = read_rtstruct(path)
    series, warnings = match_series(content, [index.reference])
    assert warnings == ()
    for spec in totalseg_specs():
        back = rasterise_roi(content.roi(spec.name), series.geometry)
        assert back.skipped == 0
        assert dice(back.mask, masks[spec.name]) >= 0.99
        np.testing.assert_array_equal(back.mask, masks[spec.name])  # exact, in fact


def test_headers(index, shared_data, tmp_path):
    masks = totalseg_masks(shared_data)
    one = np.zeros(index.reference.geometry.shape, bool)
    one[5, 100, 100] = True
    rois = [RoiMask("Liver", (150, 75, 0), RoiType.ORGAN, masks["Liver"]),
            RoiMask("Speck", (1, 2, 3), RoiType.AVOIDANCE, one),
            RoiMask("Empty", (4, 5, 6), RoiType.CONTROL, np.zeros_like(one))]
    ds = pydicom.dcmread(write_one(index, rois, tmp_path))
    assert ds.Modality == "RTSTRUCT" and ds.Manufacturer == "itvsam" and ds.SoftwareVersions
    assert ds.StructureSetLabel == "itvsam test" and "sam3-test-model" in ds.StructureSetDescription
    assert ds.StudyInstanceUID == index.attributes.study_instance_uid
    assert ds.PatientID == index.attributes.patient_id
    assert ds.SOPInstanceUID != ds.SeriesInstanceUID and ds.FrameOfReferenceUID == index.frame_of_reference_uid
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Liver", "Speck", "Empty"]
    assert [r.ROINumber for r in ds.StructureSetROISequence] == [1, 2, 3]
    assert {r.ROIGenerationDescription for r in ds.StructureSetROISequence} == {"sam3-test-model"}
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == ["ORGAN", "AVOIDANCE", "CONTROL"]
    assert [list(c.ROIDisplayColor) for c in ds.ROIContourSequence] == [[150, 75, 0], [1, 2, 3], [4, 5, 6]]
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == index.reference.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == list(
        index.reference.geometry.sop_instance_uids)
    uids = index.reference.geometry.sop_instance_uids
    for roi in ds.ROIContourSequence[:2]:
        for contour in roi.ContourSequence:
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert contour.NumberOfContourPoints == len(points) >= 3
            assert not np.allclose(points[0], points[-1])
            (image,) = contour.ContourImageSequence
            k = uids.index(image.ReferencedSOPInstanceUID)  # the slice the contour lies on
            assert abs(points[0, 2] - index.reference.geometry.slice_positions[k, 2]) < 1e-3
    speck = ds.ROIContourSequence[1].ContourSequence
    assert len(speck) == 1 and speck[0].NumberOfContourPoints == 4
    assert "ContourSequence" not in ds.ROIContourSequence[2]


def test_contour_data_values_fit_ds(index, shared_data, tmp_path):
    path = write_one(index, [RoiMask("Liver", (1, 1, 1), RoiType.ORGAN, totalseg_masks(shared_data)["Liver"])],
                     tmp_path)
    raw = pydicom.dcmread(path, defer_size=None)
    for contour in raw.ROIContourSequence[0].ContourSequence:
        element = contour["ContourData"]
        assert all(len(str(v)) <= 16 for v in element.value)


def test_contour_data_is_the_text_of_each_value_rounded_to_4_decimals():
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.normal(0, 300, 3000), rng.integers(-2**16, 2**16, 3000) / 32,  # ties at 4 decimals
                             rng.integers(-10**6, 10**6, 3000) * 5e-5, rng.normal(0, 1e-4, 3000), [0.0, -0.0, 99999.5]])
    points = values[: len(values) // 3 * 3].reshape(-1, 3)
    bounds = np.array([0, 1, 500, 1700, len(points)])
    for (a, b), text in zip(pairwise(bounds), _contour_data(points, bounds), strict=True):
        rounded = np.round(points[a:b].ravel(), 4) + 0.0  # + 0.0: no "-0.0000"
        assert text == "\\".join(f"{v:.4f}" for v in rounded).encode()


@pytest.mark.parametrize(("rois", "kwargs", "error", "message"), [
    ([RoiMask("Liver", (1, 2, 3), RoiType.ORGAN, np.zeros((20, 512, 511), bool))], {}, MaskShapeError,
     r"rois\[0\] \('Liver'\): mask shape \(z, y, x\) must be \(20, 512, 512\).*got \(20, 512, 511\)"),
    ([RoiMask("Liver", (1, 2, 3), RoiType.ORGAN, np.zeros((20, 512, 512), np.uint8))], {}, MaskShapeError,
     "must be boolean"),
    ([RoiMask("Esophagus_Cervical_Upper", (1, 2, 3), RoiType.ORGAN, np.zeros((20, 512, 512), bool))], {}, RTError,
     "at most 16 characters"),
    ([RoiMask("Liver", (1, 2, 3), RoiType.ORGAN, np.zeros((20, 512, 512), bool))] * 2, {}, RTError,
     "ROI names must be unique"),
    ([RoiMask("Liver", (1, 2, 300), RoiType.ORGAN, np.zeros((20, 512, 512), bool))], {}, RTError,
     "colour must be three integers 0-255"),
    ([RoiMask("Liver", (1, 2, 3), "ORGAN", np.zeros((20, 512, 512), bool))], {}, RTError, "must be a RoiType"),
    ([RoiMask("Liver", (1, 2, 3), RoiType.ORGAN, np.zeros((20, 512, 512), bool), 1)], {}, RTError,
     r"series_index must be in 0\.\.0, got 1"),
    ([], {"label": "a label longer than sixteen"}, RTError, "label must be at most 16"),
])
def test_constructor_refusals(index, rois, kwargs, error, message):
    arguments = {"label": "itvsam", "description": "test", "provenance": PROVENANCE, **kwargs}
    with pytest.raises(error, match=message):
        RTStructureSet(index.attributes, [index.reference], rois, **arguments)


def test_provenance_refusals():
    with pytest.raises(RTError, match="model_identity must be at most 64"):
        Provenance("m" * 65)
    with pytest.raises(RTError, match="must name the model"):
        Provenance(" ")


def test_modes_on_a_4dct(index4d, tumour, tmp_path):
    heart = np.zeros(index4d.reference.geometry.shape, bool)
    heart[4:9, 300:340, 200:260] = True
    lung = np.repeat(heart[None], len(PERCENTS), axis=0)
    paths = write_rtstructs(index4d, {"GTV": tumour, "Lung_L": lung, "Heart": heart}, thoracic_template(),
                            tmp_path, "all", PROVENANCE)
    assert [p.name for p in paths] == [f"RS_phase{k:02d}.dcm" for k in range(5)] + ["RS_reference.dcm",
                                                                                     "RS_combined.dcm"]
    phase1 = pydicom.dcmread(paths[1])
    assert [r.ROIName for r in phase1.StructureSetROISequence] == ["GTV", "Lung_L"]
    assert phase1.StructureSetLabel == "itvsam T20"
    (series,) = phase1.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == index4d.phases[1].series_instance_uid
    reference = pydicom.dcmread(paths[5])
    names = [r.ROIName for r in reference.StructureSetROISequence]
    assert names == ["ITV", "GTV_T00", "GTV_T20", "GTV_T40", "GTV_T60", "GTV_T80", "Lung_L", "Heart"]
    types = [o.RTROIInterpretedType for o in reference.RTROIObservationsSequence]
    assert types[:2] == ["CTV", "GTV"]
    assert list(reference.ROIContourSequence[0].ROIDisplayColor) == list(COLOURS["ITV"])
    combined = pydicom.dcmread(paths[6])
    referenced = combined.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert [s.SeriesInstanceUID for s in referenced.RTReferencedSeriesSequence] == [
        p.series_instance_uid for p in index4d.phases]
    assert "Lung_L_T60" in [r.ROIName for r in combined.StructureSetROISequence]


def test_mode_all_traces_each_mask_and_builds_each_itv_once(index4d, tumour, tmp_path, monkeypatch):
    traced, built = [], []
    trace, build_itv = MaskPolygons.trace, rt_outputs.build_itv
    monkeypatch.setattr(MaskPolygons, "trace", staticmethod(lambda mask: traced.append(mask) or trace(mask)))
    monkeypatch.setattr(rt_outputs, "build_itv", lambda *args: built.append(args) or build_itv(*args))
    heart = np.zeros(index4d.reference.geometry.shape, bool)
    heart[4:9, 300:340, 200:260] = True
    lung = np.repeat(heart[None], len(PERCENTS), axis=0)
    paths = write_rtstructs(index4d, {"GTV": tumour, "Lung_L": lung, "Heart": heart}, thoracic_template(),
                            tmp_path, "all", PROVENANCE, itv_margin_mm=5.0)
    assert len(paths) == len(PERCENTS) + 2
    assert len(built) == 2  # the ITV and the expanded ITV
    assert len(traced) == 2 * len(PERCENTS) + 1 + 2  # GTV and Lung_L per phase, Heart, the two ITVs


def test_itv_contains_every_phase_contour(index4d, tumour, tmp_path):
    (path,) = write_rtstructs(index4d, {"GTV": tumour}, thoracic_template(), tmp_path, "reference", PROVENANCE)
    content = read_rtstruct(path)
    series, _ = match_series(content, [index4d.reference])
    itv = rasterise_roi(content.roi("ITV"), series.geometry).mask
    np.testing.assert_array_equal(itv, tumour.any(axis=0))
    for k, percent in enumerate(PERCENTS):
        phase = rasterise_roi(content.roi(f"GTV_T{percent:02d}"), series.geometry).mask
        np.testing.assert_array_equal(phase, tumour[k])
        assert not (phase & ~itv).any()


def test_per_phase_objects_round_trip_on_their_series(index4d, tumour, tmp_path):
    paths = write_rtstructs(index4d, {"GTV": tumour}, thoracic_template(), tmp_path, "per-phase", PROVENANCE)
    for k, path in enumerate(paths):
        content = read_rtstruct(path)
        series, _ = match_series(content, index4d.phases)
        assert series.series_instance_uid == index4d.phases[k].series_instance_uid
        np.testing.assert_array_equal(rasterise_roi(content.roi("GTV"), series.geometry).mask, tumour[k])


def test_reference_on_another_grid_is_refused(index4d, tumour, tmp_path):
    shifted = index4d.reference.geometry.affine.copy()
    shifted[2, 3] += 1.0  # slices 1 mm higher: positions differ
    geometry = Geometry(shifted, index4d.reference.geometry.shape, index4d.frame_of_reference_uid,
                        index4d.reference.geometry.sop_instance_uids)
    other = replace(index4d.reference, geometry=geometry)
    with pytest.raises(GridMismatchError, match="phase 0% is not on the slices of the reference series"):
        write_rtstructs(index4d, {"GTV": tumour}, thoracic_template(), tmp_path, "reference", PROVENANCE,
                        reference=other)


@pytest.mark.parametrize(("masks", "error", "message"), [
    ({"GTV": np.zeros((4, 20, 512, 512), bool)}, MaskShapeError,
     r"expected shape \(phase, z, y, x\) \(5, 20, 512, 512\) or \(z, y, x\) \(20, 512, 512\).*got \(4, 20, 512, 512\)"),
    ({"GTV": np.zeros((20, 512, 512), np.float32)}, MaskShapeError, "must be boolean"),
    ({"Liver": np.zeros((20, 512, 512), bool)}, TemplateError, r"masks \['Liver'\] have no structure"),
    ({}, MaskShapeError, "at least one"),
])
def test_check_masks_refusals(index4d, masks, error, message):
    with pytest.raises(error, match=message):
        check_masks(index4d, masks, thoracic_template())


def test_check_masks_accepts_integer_zero_one(index4d):
    checked = check_masks(index4d, {"Heart": np.zeros((20, 512, 512), np.uint8)}, thoracic_template())
    assert checked.single["Heart"].dtype == bool


def test_unknown_mode_is_refused(index4d, tumour, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of"):
        write_rtstructs(index4d, {"GTV": tumour}, thoracic_template(), tmp_path, "everything", PROVENANCE)


def test_masks_from_npz(index4d, tumour, tmp_path):
    from dicomrt.rt_outputs import load_masks_npz

    np.savez_compressed(tmp_path / "masks.npz", GTV=tumour)
    checked = check_masks(index4d, load_masks_npz(tmp_path / "masks.npz"), thoracic_template())
    np.testing.assert_array_equal(checked.per_phase["GTV"], tumour)
    (tmp_path / "bad.npz").write_text("not an archive")
    with pytest.raises(MaskShapeError, match="bad.npz: cannot read masks"):
        load_masks_npz(tmp_path / "bad.npz")

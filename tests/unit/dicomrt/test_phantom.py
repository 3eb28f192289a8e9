"""The synthetic 4DCT phantom: determinism, anatomy and truth, breathing, artefacts, and its DICOM files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from scipy import ndimage
from typer.testing import CliRunner

from dicomrt.phantom import (
    STRUCTURES,
    Artifact,
    Breathing,
    Compression,
    Phantom4D,
    PhantomConfig,
    PhantomFiles,
    VendorStyle,
    generate_phantom,
    pixel_encoding,
    series_description,
    slab,
    write_phantom,
)
from dicomrt.phantom.breathing import BreathingTrace, breathing_curve
from dicomrt.phantom.generate import anatomy_of
from itvsam.cli import app

PERCENTS = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0)


@pytest.fixture(scope="module")
def phantom() -> Phantom4D:
    return generate_phantom(PhantomConfig(seed=0, size="small"))


@pytest.fixture(scope="module")
def phantoms() -> list[Phantom4D]:
    return [generate_phantom(PhantomConfig(seed=seed, size="small")) for seed in range(1, 4)]


# ----- configuration -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"seed": 1.5}, "seed must be a non-negative integer"),
    ({"seed": 1, "size": "huge"}, r"size must be one of \['small', 'medium', 'full'\], got 'huge'"),
    ({"seed": 1, "amplitude_si_mm": -2}, "amplitude_si_mm must be between 0 and 40"),
    ({"seed": 1, "tumour_diameter_mm": 80}, "tumour_diameter_mm must be between 5.0 and 60.0 mm, got 80"),
    ({"seed": 1, "artifacts": ("smear",)}, "artifacts must be among"),
    ({"seed": 1, "artifacts": ("sorting", "sorting")}, "each artifact may be asked for once"),
    ({"seed": 1, "n_phases": 1}, "n_phases must be between 2 and 40"),
    ({"seed": 1, "breathing": "deep"}, r"breathing must be one of \['regular', 'irregular'\], got 'deep'"),
])
def test_config_refuses_bad_values(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        PhantomConfig(**kwargs)


def test_config_converts_strings_once() -> None:
    config = PhantomConfig(seed=3, size="full", artifacts=("sorting", Artifact.DUPLICATE), breathing="irregular")
    assert config.size.value == "full"
    assert config.artifacts == (Artifact.SORTING, Artifact.DUPLICATE)
    assert config.breathing is Breathing.IRREGULAR
    assert config.percents == PERCENTS
    assert json.loads(json.dumps(config.to_json()))["artifacts"] == ["sorting", "duplicate"]
    assert config.to_json()["breathing"] == "irregular"
    assert PhantomConfig(seed=3).breathing is Breathing.REGULAR
    assert config.digest != PhantomConfig(seed=3, size="full", artifacts=("sorting", "duplicate")).digest


# ----- determinism ---------------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_arrays(phantom) -> None:
    again = generate_phantom(PhantomConfig(seed=0, size="small"))
    np.testing.assert_array_equal(again.hu, phantom.hu)
    for name in STRUCTURES:
        np.testing.assert_array_equal(again.truth[name], phantom.truth[name])
    np.testing.assert_array_equal(again.itv, phantom.itv)
    assert again.geometry.frame_of_reference_uid == phantom.geometry.frame_of_reference_uid
    assert again.geometry.sop_instance_uids == phantom.geometry.sop_instance_uids
    assert again.tumour == phantom.tumour


def test_different_seeds_give_different_anatomy(phantom, phantoms) -> None:
    everyone = [phantom, *phantoms]
    sites = {p.tumour.site for p in everyone}
    assert len(sites) >= 3, sites
    assert len({p.geometry.frame_of_reference_uid for p in everyone}) == len(everyone)
    lung_volumes = {int(p.truth["Lung_R"][5].sum()) for p in everyone}
    assert len(lung_volumes) == len(everyone)
    diameters = [p.tumour.diameter_mm for p in everyone]
    assert all(15.0 <= d <= 40.0 for d in diameters) and len(set(diameters)) == len(everyone)
    assert not np.array_equal(phantom.hu[0], phantoms[0].hu[0])


def test_the_same_seed_is_the_same_anatomy_at_both_sizes() -> None:
    """The anatomy is drawn in millimetres, independently of the grid."""
    assert anatomy_of(PhantomConfig(seed=4, size="small")) == anatomy_of(PhantomConfig(seed=4, size="full"))


# ----- grid, types, truth --------------------------------------------------------------------------------------------
def test_arrays_grid_and_types(phantom) -> None:
    assert phantom.percents == PERCENTS
    assert phantom.hu.dtype == np.int16 and phantom.hu.shape == (10, 44, 128, 128)
    assert set(phantom.truth) == set(STRUCTURES)
    for mask in phantom.truth.values():
        assert mask.dtype == bool and mask.shape == phantom.hu.shape
    assert phantom.itv.shape == phantom.hu.shape[1:]
    geometry = phantom.geometry
    assert geometry.shape == (44, 128, 128)
    assert geometry.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    assert geometry.spacing_mm == (5.0, 3.0, 3.0)
    z = geometry.slice_positions[:, 2]
    assert np.all(np.diff(z) > 0)  # z index increases towards the head
    assert not phantom.hu.flags.writeable
    assert phantom.hu.min() >= -1024 and phantom.hu.max() <= 3071


def test_masks_are_disjoint_and_inside_the_body(phantom) -> None:
    total = sum(phantom.truth[name].astype(np.uint8) for name in STRUCTURES)
    assert total.max() == 1
    for p in range(len(phantom.percents)):
        body = np.stack([ndimage.binary_fill_holes(s) for s in phantom.hu[p] > -500])
        for name in STRUCTURES:
            outside = phantom.truth[name][p] & ~body
            assert not outside.any(), f"{name} phase {p}: {int(outside.sum())} voxels outside the body"


def test_masks_match_what_the_image_shows(phantom) -> None:
    """Deep inside each mask the image has that tissue's HU (edges are partial-volume blends)."""
    p = 5
    hu = phantom.hu[p].astype(np.float64)
    core = {name: ndimage.binary_erosion(phantom.truth[name][p]) for name in STRUCTURES}
    assert -900 < np.median(hu[core["Lung_L"]]) < -750
    assert -900 < np.median(hu[core["Lung_R"]]) < -750
    assert 20 <= np.mean(hu[core["Heart"]]) <= 65
    assert 10 <= np.mean(hu[core["GTV"]]) <= 50
    assert 10 <= np.std(hu[core["Heart"]]) <= 35  # realistic noise
    ring = ndimage.binary_dilation(phantom.truth["GTV"][p], iterations=2) & ~ndimage.binary_dilation(
        phantom.truth["GTV"][p])
    assert np.median(hu[ring]) < -600  # the tumour stands out from the lung around it


def test_lungs_are_on_the_correct_side_in_lps(phantom) -> None:
    geometry = phantom.geometry
    for p in range(len(phantom.percents)):
        centroids = {}
        for name in ("Lung_L", "Lung_R"):
            index = np.argwhere(phantom.truth[name][p]).mean(axis=0)
            centroids[name] = (index, geometry.index_to_patient(index[None])[0])
        assert centroids["Lung_L"][1][0] > 20.0  # the patient's left is +x
        assert centroids["Lung_R"][1][0] < -20.0
        assert centroids["Lung_L"][0][2] > centroids["Lung_R"][0][2]  # larger column index
    left = np.argwhere(phantom.truth["Lung_L"].any(axis=(0, 1, 2)))
    right = np.argwhere(phantom.truth["Lung_R"].any(axis=(0, 1, 2)))
    assert left.min() > right.max()


def test_tumour_is_inside_its_lung(phantom, phantoms) -> None:
    """Every voxel touching the GTV is lung of the tumour's side; GTV voxels are not lung."""
    for ph in (phantom, *phantoms):
        lung = ph.truth["Lung_L" if ph.tumour.side == "left" else "Lung_R"]
        for p in range(len(ph.percents)):
            gtv = ph.truth["GTV"][p]
            assert gtv.sum() > 20
            shell = ndimage.binary_dilation(gtv) & ~gtv
            assert lung[p][shell].all(), f"seed {ph.config.seed} phase {p}: {int((~lung[p][shell]).sum())} " \
                                         f"voxels around the GTV are not {ph.tumour.side} lung"
            assert not (lung[p] & gtv).any()


def test_tumour_motion_follows_the_configured_amplitude(phantom, phantoms) -> None:
    for ph in (phantom, *phantoms):
        dz = ph.geometry.spacing_mm[0]
        x, y, z = (ph.tumour_centroids_mm[:, axis] for axis in range(3))
        assert abs(np.ptp(z) - 15.0) <= dz, (ph.config.seed, np.ptp(z))
        assert np.argmin(z) == 0  # end-inhale: the tumour is lowest
        assert np.argmax(z) == 5  # end-exhale: highest
        assert np.ptp(y) <= 4.0 + 3.0 and np.ptp(x) <= 2.0 + 3.0


def test_larger_amplitude_and_fixed_diameter() -> None:
    ph = generate_phantom(PhantomConfig(seed=2, amplitude_si_mm=25.0, tumour_diameter_mm=30.0))
    assert abs(np.ptp(ph.tumour_centroids_mm[:, 2]) - 25.0) <= 5.0
    assert ph.tumour.diameter_mm == 30.0
    assert abs(ph.tumour.measured_diameter_mm - 30.0) < 3.0


def test_without_motion_every_phase_has_the_same_anatomy() -> None:
    ph = generate_phantom(PhantomConfig(seed=1, amplitude_si_mm=0, amplitude_ap_mm=0, amplitude_lr_mm=0))
    for name in STRUCTURES:
        assert (ph.truth[name] == ph.truth[name][:1]).all(), name
    assert not np.array_equal(ph.hu[0], ph.hu[1])  # the noise differs


def test_trajectory_is_a_loop_not_a_line(phantom) -> None:
    motion = phantom.motion
    at_10, at_90 = motion.tumour_displacement(0.1), motion.tumour_displacement(0.9)
    assert at_10[2] == pytest.approx(at_90[2])  # the SI curve is symmetric about end-inhale...
    assert abs(at_10[1] - at_90[1]) > 0.5  # ...the AP component lags: exhale and inhale paths differ
    assert breathing_curve(0.0) == 1.0 and breathing_curve(0.5) == pytest.approx(0.0)


def test_the_default_trace_is_the_regular_curve() -> None:
    t = np.linspace(-1.0, 2.0, 3001)
    np.testing.assert_array_equal(BreathingTrace()(t), breathing_curve(t))
    trace = BreathingTrace(warp=0.3, skew=-0.4, shift_cycles=0.03)
    np.testing.assert_allclose(trace(t + 1.0), trace(t), atol=1e-12)  # still one cycle
    assert trace(0.03) == pytest.approx(1.0)  # end-inhale moved to t = shift_cycles
    values = trace(t)
    assert values.min() >= 0.0 and values.max() <= 1.0


@pytest.mark.parametrize(("warp", "skew"), [(0.6, -0.4), (1.0, 0.0), (0.0, -1.2)])
def test_a_trace_that_would_run_backwards_is_refused(warp, skew) -> None:
    with pytest.raises(ValueError, match=rf"\|warp\| \+ \|skew\| must be below 1 .*got warp={warp}, skew={skew}"):
        BreathingTrace(warp=warp, skew=skew)
    with pytest.raises(ValueError, match="must be finite"):
        BreathingTrace(shift_cycles=float("nan"))


@pytest.fixture(scope="module")
def irregular() -> Phantom4D:
    """The issue's case: a small tumour moving fast, breathing irregularly."""
    return generate_phantom(PhantomConfig(seed=4, amplitude_si_mm=22.0, amplitude_lr_mm=7.0, tumour_diameter_mm=20.0,
                                          breathing="irregular"))


def test_irregular_breathing_has_a_plateau_a_fast_inhale_and_an_unsampled_peak(irregular) -> None:
    centroids = irregular.tumour_centroids_mm
    z = centroids[:, 2]
    n = len(z)
    inhale, exhale = int(np.argmin(z)), int(np.argmax(z))  # end-inhale is lowest, end-exhale highest
    assert (inhale - exhale) % n < (exhale - inhale) % n, z  # fewer phases from end-exhale to end-inhale than back
    run = longest = 0
    for near_exhale in np.tile(np.abs(z - z[exhale]) <= 1.5, 2):  # twice round: runs may wrap past phase 0
        run = run + 1 if near_exhale else 0
        longest = max(longest, run)
    assert longest >= 3, z  # an end-exhale plateau
    midpoints = (np.roll(centroids, 1, axis=0) + np.roll(centroids, -1, axis=0)) / 2.0
    assert np.abs(centroids - midpoints).max() >= 3.0, centroids  # a phase its neighbours do not predict
    assert abs(np.ptp(z) - 22.0) <= 3.0, z
    described = irregular.describe()["breathing"]
    assert described["pattern"] == "irregular" and "w(t - shift_cycles)" in described["curve"]
    trace = irregular.motion.trace
    assert described["trace"] == {"warp": trace.warp, "skew": trace.skew, "shift_cycles": trace.shift_cycles}
    assert 0.15 <= trace.warp <= 0.35 and -0.45 <= trace.skew <= -0.25 and 0.015 <= abs(trace.shift_cycles) <= 0.04


def test_breathing_moves_diaphragm_lungs_and_heart(phantom) -> None:
    lungs = phantom.truth["Lung_L"] | phantom.truth["Lung_R"]
    volumes = lungs.sum(axis=(1, 2, 3))
    assert volumes[0] > 1.05 * volumes[5]  # inhaled lungs are larger
    assert np.argmax(volumes) == 0 and np.argmin(volumes) == 5
    # the lung bases follow the diaphragm: along the vertical line through the right lung's centre, the lowest lung
    # voxel is lower at inhale by about the diaphragm's excursion
    _, y, x = np.argwhere(phantom.truth["Lung_R"][5]).mean(axis=0).round().astype(int)
    lowest = [np.nonzero(lungs[p, :, y, x])[0].min() for p in (0, 5)]
    drop_mm = (lowest[1] - lowest[0]) * phantom.geometry.spacing_mm[0]
    assert abs(drop_mm - phantom.motion.diaphragm_mm) <= 2 * phantom.geometry.spacing_mm[0]
    heart = [np.argwhere(phantom.truth["Heart"][p]).mean(axis=0) for p in (0, 5)]
    shift_mm = np.abs(heart[0] - heart[1]) * phantom.geometry.spacing_mm
    assert 1.0 < np.linalg.norm(shift_mm) < 8.0  # the heart moves a few mm


def test_itv_is_the_union_of_the_gtv(phantom) -> None:
    np.testing.assert_array_equal(phantom.itv, phantom.truth["GTV"].any(axis=0))
    assert phantom.itv.sum() > phantom.truth["GTV"][5].sum()


# ----- artefacts -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kinds", [("sorting",), ("duplicate",), ("sorting", "duplicate")])
def test_artifacts_alter_exactly_the_described_slab(phantom, kinds) -> None:
    altered = generate_phantom(PhantomConfig(seed=0, artifacts=kinds))
    assert [a.kind.value for a in altered.artifacts] == list(kinds)
    expected_hu = np.array(phantom.hu)
    expected_truth = {name: np.array(mask) for name, mask in phantom.truth.items()}
    for record in altered.artifacts:
        start, stop = record.slices
        assert 3 <= stop - start <= 5
        assert record.percent == PERCENTS[record.phase_index]
        if record.kind is Artifact.SORTING:
            assert record.source_slices == record.slices
            assert abs(record.source_phase_index - record.phase_index) == 5
        else:
            assert record.source_phase_index == record.phase_index
            assert record.source_slices == (stop, stop + (stop - start))  # the slab above (towards the head)
        assert phantom.truth["GTV"][record.phase_index, start:stop].any()  # through the tumour
        source = (record.source_phase_index, slice(*record.source_slices))
        expected_hu[record.phase_index, start:stop] = phantom.hu[source]
        for name in STRUCTURES:
            expected_truth[name][record.phase_index, start:stop] = phantom.truth[name][source]
        assert not np.array_equal(phantom.hu[record.phase_index, start:stop], phantom.hu[source])
        assert f"{record.percent:g}%" in record.describe()
    np.testing.assert_array_equal(altered.hu, expected_hu)
    for name in STRUCTURES:
        np.testing.assert_array_equal(altered.truth[name], expected_truth[name])
    np.testing.assert_array_equal(altered.itv, altered.truth["GTV"].any(axis=0))
    if len(kinds) == 2:
        assert altered.artifacts[0].phase_index != altered.artifacts[1].phase_index


# ----- DICOM ---------------------------------------------------------------------------------------------------------
EXPECTED_DESCRIPTIONS = {
    VendorStyle.DESC_T: [f"4D Thorax T={p:g}%" for p in PERCENTS],
    VendorStyle.DESC_CT: [f"CT {p:.1f}%" for p in PERCENTS],
    VendorStyle.DESC_GATED: [f"Gated {p:g}%" for p in PERCENTS],
    VendorStyle.DESC_PHASE: [f"Phase {p:g}%" for p in PERCENTS],
    VendorStyle.DESC_EXIN: ["0% In", "10% Ex", "20% Ex", "30% Ex", "40% Ex", "50% Ex", "60% In", "70% In", "80% In",
                            "90% In"],
    VendorStyle.NOMINAL: ["4DCT Thorax"] * 10,
    VendorStyle.SINGLE_TEMPORAL: ["4DCT all phases"] * 10,
    VendorStyle.SINGLE_POSITIONS: ["4DCT Thorax"] * 10,
}
PHASE_TAGS = ("NominalPercentageOfRespiratoryPhase", "TemporalPositionIdentifier", "NumberOfTemporalPositions",
              "RespiratoryCyclePosition", "TemporalPositionIndex")


@pytest.fixture(scope="module")
def written(phantom, tmp_path_factory) -> dict[VendorStyle, PhantomFiles]:
    root = tmp_path_factory.mktemp("phantom_styles")
    return {style: write_phantom(phantom, root / style.value, vendor=style, aip=style is VendorStyle.NOMINAL)
            for style in VendorStyle}


def _read(files: PhantomFiles) -> dict[Path, pydicom.Dataset]:
    return {path: pydicom.dcmread(path) for path in sorted(files.dicom_dir.iterdir())}


def _where(files: PhantomFiles) -> dict[Path, tuple[int | None, int]]:
    """Each written file → (phase index or None for the AIP, z slice)."""
    return {path: (volume.phase_index, k) for volume in files.volumes for k, path in enumerate(volume.paths)}


def test_series_descriptions_are_formatted_per_style() -> None:
    for style, expected in EXPECTED_DESCRIPTIONS.items():
        assert [series_description(style, p) for p in PERCENTS] == expected
    assert series_description("desc-ct", 12.5) == "CT 12.5%"
    assert series_description("desc-t", 12.5) == "4D Thorax T=12.5%"


@pytest.mark.parametrize("style", list(VendorStyle))
def test_every_style_writes_valid_files_with_its_phase_tags(style, phantom, written) -> None:
    files = written[style]
    datasets = _read(files)
    where = _where(files)
    nz = phantom.geometry.shape[0]
    with_aip = style is VendorStyle.NOMINAL
    assert len(datasets) == 10 * nz + (nz if with_aip else 0) == len(files.paths)
    assert set(datasets) == set(where)
    assert len({ds.SOPInstanceUID for ds in datasets.values()}) == len(datasets)
    assert {ds.StudyInstanceUID for ds in datasets.values()} == {files.study_instance_uid}
    assert {ds.FrameOfReferenceUID for ds in datasets.values()} == {phantom.geometry.frame_of_reference_uid}
    assert {str(ds.PatientName) for ds in datasets.values()} == {"PHANTOM^ITVSAM"}
    assert {ds.PatientID for ds in datasets.values()} == {"PHANTOM-0"}
    assert {ds.Manufacturer for ds in datasets.values()} == {"itvsam phantom"}
    assert {ds.SOPClassUID for ds in datasets.values()} == {pydicom.uid.CTImageStorage}
    assert {ds.file_meta.TransferSyntaxUID for ds in datasets.values()} == {pydicom.uid.ExplicitVRLittleEndian}

    series = {}
    for path, ds in datasets.items():
        phase, k = where[path]
        series.setdefault(ds.SeriesInstanceUID, set()).add(phase)
        if phase is None:
            assert ds.SeriesDescription == "AIP" and "%" not in ds.SeriesDescription
            assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL", "AVERAGE"]
            assert len(ds.SourceImageSequence) == 10
            continue
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert ds.SeriesDescription == EXPECTED_DESCRIPTIONS[style][phase]
        present = {tag for tag in PHASE_TAGS if tag in ds}
        if style is VendorStyle.NOMINAL:
            assert present == {"NominalPercentageOfRespiratoryPhase"}
            assert ds.NominalPercentageOfRespiratoryPhase == PERCENTS[phase]
        elif style is VendorStyle.SINGLE_TEMPORAL:
            assert present == {"TemporalPositionIdentifier", "NumberOfTemporalPositions"}
            assert (ds.TemporalPositionIdentifier, ds.NumberOfTemporalPositions) == (phase + 1, 10)
        else:
            assert present == set()
        expected_instance = nz - k + (phase * nz if style.value.startswith("single") else 0)
        assert ds.InstanceNumber == expected_instance
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                   phantom.geometry.slice_positions[k], atol=1e-4)
        assert float(ds.SliceLocation) == pytest.approx(phantom.geometry.slice_positions[k][2])
        assert [float(v) for v in ds.PixelSpacing] == [3.0, 3.0]
        assert float(ds.SliceThickness) == 5.0
    single = style in (VendorStyle.SINGLE_TEMPORAL, VendorStyle.SINGLE_POSITIONS)
    phase_series = [v for v in series.values() if v != {None}]
    assert len(phase_series) == (1 if single else 10)
    assert len(series) == len(phase_series) + (1 if with_aip else 0)
    assert len({ds.SeriesNumber for ds in datasets.values()}) == len(series)


@pytest.mark.parametrize("style", list(VendorStyle))
def test_pixels_read_back_as_the_generated_hu(style, phantom, written) -> None:
    files = written[style]
    where = _where(files)
    encoding = pixel_encoding(style)
    for path, ds in _read(files).items():
        phase, k = where[path]
        assert ds.PixelRepresentation == int(encoding.signed) and ds.BitsStored == encoding.bits_stored
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        expected = phantom.hu[phase, k] if phase is not None else np.rint(phantom.hu[:, k].mean(axis=0))
        np.testing.assert_array_equal(hu, expected)
        assert ds.RescaleType == "HU"


def test_single_positions_orders_phases_by_instance_number_and_time(phantom, written) -> None:
    files = written[VendorStyle.SINGLE_POSITIONS]
    where = _where(files)
    rows = sorted((int(ds.InstanceNumber), float(ds.AcquisitionTime), float(ds.ContentTime), where[path][0])
                  for path, ds in _read(files).items())
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    phases = [r[3] for r in rows]
    assert phases == sorted(phases)  # phase-major
    for column in (1, 2):
        latest = {p: max(r[column] for r in rows if r[3] == p) for p in range(10)}
        earliest = {p: min(r[column] for r in rows if r[3] == p) for p in range(10)}
        assert all(latest[p] < earliest[p + 1] for p in range(9))


def test_files_do_not_reveal_their_order(written) -> None:
    files = written[VendorStyle.DESC_T]
    volume = files.phases[0]
    by_name = sorted(volume.paths, key=lambda p: p.name)
    assert by_name != list(volume.paths) and by_name != list(reversed(volume.paths))
    assert all(len(p.stem) == 20 and all(c in "0123456789abcdef" for c in p.stem) for p in files.paths)


def test_written_geometry_matches_the_files(phantom, written) -> None:
    files = written[VendorStyle.SINGLE_TEMPORAL]
    for volume in files.volumes:
        assert volume.geometry.mismatch(phantom.geometry) is None
        uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in volume.paths]
        assert tuple(uids) == volume.geometry.sop_instance_uids


def test_uids_are_deterministic_and_vendor_specific(phantom, written, tmp_path) -> None:
    again = write_phantom(phantom, tmp_path / "again", vendor="desc-t")
    first = written[VendorStyle.DESC_T]
    assert again.study_instance_uid == first.study_instance_uid
    assert [v.geometry.sop_instance_uids for v in again.volumes] == [v.geometry.sop_instance_uids
                                                                     for v in first.volumes]
    assert [p.name for p in again.paths] == [p.name for p in first.paths]
    other = written[VendorStyle.DESC_CT]
    assert other.study_instance_uid != first.study_instance_uid
    assert not set(other.phases[0].geometry.sop_instance_uids) & set(first.phases[0].geometry.sop_instance_uids)


def test_truth_files(phantom, written) -> None:
    files = written[VendorStyle.NOMINAL]
    with np.load(files.truth_npz) as truth:
        assert set(truth.files) == {*STRUCTURES, "ITV", "percents", "affine"}
        for name in STRUCTURES:
            np.testing.assert_array_equal(truth[name], phantom.truth[name])
        np.testing.assert_array_equal(truth["ITV"], phantom.itv)
        np.testing.assert_array_equal(truth["percents"], PERCENTS)
        np.testing.assert_array_equal(truth["affine"], phantom.geometry.affine)
    described = json.loads(files.truth_json.read_text())
    assert described["statement"] == "synthetic phantom, not patient data"
    assert described["seed"] == 0 and described["config"]["size"] == "small"
    assert described["structures"]["names"] == list(STRUCTURES)
    assert described["tumour"]["site"] == phantom.tumour.site
    assert described["tumour"]["diameter_mm"] == pytest.approx(phantom.tumour.diameter_mm)
    centroids = described["tumour"]["centroid_per_phase_mm"]
    assert list(centroids) == [f"{p:g}" for p in PERCENTS]
    np.testing.assert_allclose(list(centroids.values()), phantom.tumour_centroids_mm, atol=1e-3)
    assert described["motion_amplitude_mm"]["superior_inferior"] == 15.0
    assert described["artifacts"] == "none"
    assert described["dicom"]["vendor_style"] == "nominal" and described["dicom"]["files"] == len(files.paths)


def test_truth_json_describes_artifacts(tmp_path) -> None:
    altered = generate_phantom(PhantomConfig(seed=0, artifacts=("sorting",)))
    files = write_phantom(altered, tmp_path, vendor="desc-phase")
    (record,) = json.loads(files.truth_json.read_text())["artifacts"]
    assert record["kind"] == "sorting"
    assert record["phase_index"] == altered.artifacts[0].phase_index
    assert record["slices"] == {"start": altered.artifacts[0].slices[0], "stop": altered.artifacts[0].slices[1]}
    assert "sorting artifact" in record["description"]


def test_the_phantom_command_writes_an_irregular_small_fast_tumour(tmp_path) -> None:
    result = CliRunner().invoke(app, ["phantom", str(tmp_path / "out"), "--seed", "4", "--breathing", "irregular",
                                      "--tumour-diameter-mm", "15", "--amplitude-mm", "22", "--amplitude-lr-mm", "7",
                                      "--amplitude-ap-mm", "5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    described = json.loads((tmp_path / "out" / "truth.json").read_text())
    expected = {"seed": 4, "breathing": "irregular", "tumour_diameter_mm": 15.0, "amplitude_si_mm": 22.0,
                "amplitude_ap_mm": 5.0, "amplitude_lr_mm": 7.0}
    assert {key: described["config"][key] for key in expected} == expected
    assert described["breathing"]["pattern"] == "irregular"


@pytest.mark.parametrize(("args", "message"), [
    (["--tumour-diameter-mm", "80"], "tumour_diameter_mm must be between 5.0 and 60.0 mm, got 80.0"),
    (["--amplitude-lr-mm", "-1"], "amplitude_lr_mm must be between 0 and 40"),
    (["--tumour-diameter-mm", "60", "--amplitude-mm", "40", "--amplitude-ap-mm", "40", "--amplitude-lr-mm", "40"],
     "cannot place a tumour of"),
])
def test_the_phantom_command_refuses_bad_values_before_writing(tmp_path, args, message) -> None:
    result = CliRunner().invoke(app, ["phantom", str(tmp_path / "out"), *args], env={"COLUMNS": "500"})
    assert result.exit_code == 2, result.output
    assert "error [invalid_phantom]: " in result.output and message in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("compression", [Compression.RLE, Compression.JPEG2000])
def test_compressed_files_round_trip_exactly(compression, phantom, tmp_path) -> None:
    files = write_phantom(phantom, tmp_path, vendor="desc-gated", aip=True, compression=compression)
    where = _where(files)
    expected_syntax = {Compression.RLE: pydicom.uid.RLELossless, Compression.JPEG2000: pydicom.uid.JPEG2000Lossless}
    for path in files.paths[::7]:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == expected_syntax[compression]
        phase, k = where[path]
        expected = phantom.hu[phase, k] if phase is not None else np.rint(phantom.hu[:, k].mean(axis=0))
        np.testing.assert_array_equal(apply_modality_lut(ds.pixel_array, ds), expected)


def test_refuses_a_non_empty_output_folder(phantom, tmp_path) -> None:
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom" / "existing.dcm").write_bytes(b"not ours")
    with pytest.raises(ValueError, match=r"refusing to write into .*dicom: the folder is not empty"):
        write_phantom(phantom, tmp_path, vendor="desc-t")
    assert [p.name for p in (tmp_path / "dicom").iterdir()] == ["existing.dcm"]


def test_refuses_to_overwrite_truth_and_bad_choices(phantom, tmp_path) -> None:
    (tmp_path / "truth.json").write_text("{}")
    with pytest.raises(ValueError, match="refusing to overwrite existing truth files"):
        write_phantom(phantom, tmp_path, vendor="desc-t")
    with pytest.raises(ValueError, match=r"vendor must be one of \['desc-t'"):
        write_phantom(phantom, tmp_path / "x", vendor="siemens")
    with pytest.raises(ValueError, match="compression must be one of"):
        write_phantom(phantom, tmp_path / "y", vendor="desc-t", compression="zip")


def test_a_slab_keeps_patient_space_and_the_truth(phantom) -> None:
    thin = slab(phantom, slices=4, step=2)
    assert thin.hu.shape == (phantom.hu.shape[0], 4, 64, 64) and thin.geometry.shape == (4, 64, 64)
    z0 = int(np.argmin(np.abs(phantom.geometry.slice_positions[:, 2] - thin.geometry.slice_positions[0, 2])))
    np.testing.assert_array_equal(thin.hu, phantom.hu[:, z0:z0 + 4, ::2, ::2])
    for name, mask in thin.truth.items():
        np.testing.assert_array_equal(mask, phantom.truth[name][:, z0:z0 + 4, ::2, ::2])
    corner = np.array([[3, 5, 7]])  # a voxel of the slab lies where the phantom's voxel (z0 + 3, 10, 14) lies
    np.testing.assert_allclose(thin.geometry.index_to_patient(corner),
                               phantom.geometry.index_to_patient(np.array([[z0 + 3, 10, 14]])))
    assert thin.geometry.sop_instance_uids == phantom.geometry.sop_instance_uids[z0:z0 + 4]
    assert thin.itv.any() and np.array_equal(thin.itv, thin.truth["GTV"].any(axis=0))
    with pytest.raises(ValueError, match="slices must be 1..44"):
        slab(phantom, slices=0)

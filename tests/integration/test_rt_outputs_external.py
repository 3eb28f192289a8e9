"""Every object we write passes dciodvfy; RTSTRUCTs come back from an independent rasteriser (plastimatch).

plastimatch is run with ``--xor-contours``: nested contours on a slice are holes (the even-odd rule of planning
systems); by default plastimatch ORs them and fills every hole. Its NRRD outputs are read through their header's
space directions and origin and sampled at our voxel centres (``tests.support.nrrd``), never by assuming an axis
order.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dicomrt.derived import write_projections
from dicomrt.provenance import Provenance
from dicomrt.reader import read_study, scan_study
from dicomrt.rt_outputs import check_masks, write_rtstructs
from dicomrt.rtstruct import RoiMask, RTStructureSet
from dicomrt.seg import write_segs
from dicomrt.structures import RoiType, thoracic_template
from dicomrt.study import Phase, SeriesInfo, Study4D
from tests.conftest import dciodvfy_errors, require_tool
from tests.support.fake_study import fake_4d_index
from tests.support.nrrd import dice, nrrd_on_grid
from tests.support.rt_data import native_copy, totalseg_index, totalseg_masks, totalseg_specs

pytestmark = pytest.mark.integration
PROVENANCE = Provenance("sam3-test-model")
PERCENTS = (0, 25, 50, 75)


@pytest.fixture(scope="module")
def native_ct(shared_data, tmp_path_factory) -> Path:
    return native_copy(shared_data / "totalseg_ct", tmp_path_factory.mktemp("native_ct"))


def plastimatch_masks(rtss: Path, ct_dir: Path, series: SeriesInfo, out: Path) -> dict[str, np.ndarray]:
    """Structure name → (z, y, x) bool on ``series``' grid, as plastimatch rasterises ``rtss`` on ``ct_dir``."""
    subprocess.run([require_tool("plastimatch"), "convert", "--input", str(rtss), "--referenced-ct", str(ct_dir),
                    "--output-prefix", str(out), "--prefix-format", "nrrd", "--xor-contours"],
                   check=True, capture_output=True, timeout=300)
    return {p.stem: nrrd_on_grid(p, series.geometry) > 0 for p in sorted(out.glob("*.nrrd"))}


def volume_cm3(mask: np.ndarray, series: SeriesInfo) -> float:
    return float(mask.sum() * np.prod(series.geometry.spacing_mm) / 1000)


@pytest.mark.slow
def test_totalseg_structures_round_trip_through_plastimatch(shared_data, native_ct, tmp_path):
    index = totalseg_index(shared_data)
    masks = totalseg_masks(shared_data)
    rois = [RoiMask(s.name, s.colour, s.interpreted_type, masks[s.name]) for s in totalseg_specs()]
    rtss = RTStructureSet(index.attributes, [index.reference], rois, label="itvsam", description="totalseg",
                          provenance=PROVENANCE).save(tmp_path / "rtss.dcm")
    assert dciodvfy_errors(rtss) == []
    back = plastimatch_masks(rtss, native_ct, index.reference, tmp_path / "out")
    for name, mask in masks.items():
        score, cm3 = dice(back[name], mask), volume_cm3(mask, index.reference)
        assert score >= (0.98 if cm3 > 10 else 0.95), f"{name} ({cm3:.1f} cm³): plastimatch Dice {score:.4f}"


def test_small_shapes_round_trip_through_plastimatch(shared_data, native_ct, tmp_path):
    """A 1 cm³ cube (Dice 0.895 when written by rt-utils), a ring, two islands on one slice, one voxel."""
    index = totalseg_index(shared_data)
    shape = index.reference.geometry.shape
    cube = np.zeros(shape, bool)
    cube[8:13, 200:210, 200:210] = True  # 5 x 10 x 10 voxels of 2 x 0.98 x 0.98 mm: 0.95 cm³
    yy, xx = np.mgrid[:shape[1], :shape[2]]
    radius = np.hypot(yy - 300, xx - 300)
    ring = np.zeros(shape, bool)
    ring[5] = (radius < 20) & (radius >= 9)
    islands = np.zeros(shape, bool)
    islands[6, 100:110, 100:110] = True
    islands[6, 130:140, 150:170] = True
    speck = np.zeros(shape, bool)
    speck[10, 400, 400] = True
    shapes = {"Cube": cube, "Ring": ring, "Islands": islands, "Speck": speck}
    rois = [RoiMask(name, (255, 0, 0), RoiType.CONTROL, mask) for name, mask in shapes.items()]
    rtss = RTStructureSet(index.attributes, [index.reference], rois, label="itvsam", description="shapes",
                          provenance=PROVENANCE).save(tmp_path / "rtss.dcm")
    assert dciodvfy_errors(rtss) == []
    back = plastimatch_masks(rtss, native_ct, index.reference, tmp_path / "out")
    for name, mask in shapes.items():
        np.testing.assert_array_equal(back[name], mask, err_msg=name)


@pytest.fixture(scope="module")
def study4d(shared_data) -> Study4D:
    """A 4-phase study on the real CT grid: the real volume, shifted in HU per phase (headers only differ)."""
    base = read_study(shared_data / "totalseg_ct")
    index = fake_4d_index(base.index, PERCENTS, reference_percent=50)
    volume = base.phases[0].volume
    return Study4D(index, tuple(Phase(s, (volume + 10 * k).astype(np.int16)) for k, s in enumerate(index.phases)))


@pytest.fixture(scope="module")
def masks4d(study4d) -> dict[str, np.ndarray]:
    shape = (len(PERCENTS), *study4d.index.reference.geometry.shape)
    gtv = np.zeros(shape, bool)
    lung = np.zeros(shape, bool)
    for k in range(len(PERCENTS)):
        gtv[k, 6:14, 250 + 3 * k:270 + 3 * k, 300:318] = True
        lung[k, 2:18, 100:300 - 2 * k, 80:220] = True
    return {"GTV": gtv, "Lung_L": lung}


def test_every_rtstruct_mode_passes_dciodvfy(study4d, masks4d, tmp_path):
    paths = write_rtstructs(study4d.index, masks4d, thoracic_template(), tmp_path, "all", PROVENANCE)
    assert len(paths) == len(PERCENTS) + 2
    for path in paths:
        assert dciodvfy_errors(path) == [], path.name


def test_seg_and_projections_pass_dciodvfy(study4d, masks4d, tmp_path):
    segs = write_segs(check_masks(study4d.index, masks4d, thoracic_template()), tmp_path / "seg", PROVENANCE)
    assert len(segs) == len(PERCENTS)
    for path in segs[:2]:
        assert dciodvfy_errors(path) == [], path.name
    aip, mip = write_projections(study4d, tmp_path / "derived", PROVENANCE)
    for series in (aip, mip):
        for header in (series.instances[0], series.instances[-1]):
            assert dciodvfy_errors(header.path) == [], header.path.name
    # the reference RTSTRUCT on our AIP
    (path,) = write_rtstructs(study4d.index, masks4d, thoracic_template(), tmp_path, "reference", PROVENANCE,
                              reference=aip)
    assert dciodvfy_errors(path) == []


def _phantom_api():
    from dicomrt import phantom

    if not all(hasattr(phantom, n) for n in ("generate_phantom", "write_phantom", "PhantomConfig")):
        pytest.skip("the synthetic phantom writer (dicomrt.phantom.write_phantom) is not available yet")
    return phantom


@pytest.mark.slow
def test_phantom_round_trip_through_plastimatch(tmp_path):
    phantom = _phantom_api()
    generated = phantom.generate_phantom(phantom.PhantomConfig(seed=7, size="small"))
    phantom.write_phantom(generated, tmp_path / "study", vendor="nominal", aip=False)
    index = scan_study(tmp_path / "study" / "dicom")
    truth = {name: np.asarray(mask, bool) for name, mask in np.load(tmp_path / "study" / "truth.npz").items()}
    masks = {s.name: truth[s.name] for s in thoracic_template()}  # the phantom's truth uses the TG-263 names
    paths = write_rtstructs(index, masks, thoracic_template(), tmp_path / "out", "per-phase", PROVENANCE)
    for k in (0, len(paths) // 2):
        series = index.phases[k]
        ct = tmp_path / f"ct{k}"
        ct.mkdir()
        for header in series.instances:
            shutil.copy(header.path, ct / header.path.name)
        native = native_copy(ct, tmp_path / f"native{k}")
        back = plastimatch_masks(paths[k], native, series, tmp_path / f"pm{k}")
        for name, mask in masks.items():
            score = dice(back[name], mask[k])
            assert score >= (0.95 if name == "GTV" else 0.98), f"{name} {series.label}: plastimatch Dice {score:.4f}"

"""The reader on the synthetic 4DCT in every vendor style, and the 4D-specific refusals (phases, derived series)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomrt.errors import AmbiguousPhasesError, IncompleteStudyError, InconsistentSeriesError
from dicomrt.phantom import Compression, PhantomConfig, VendorStyle, generate_phantom, write_phantom
from dicomrt.phases import SeriesKind
from dicomrt.reader import load_study, scan_study


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomConfig(seed=3, size="small"))


@pytest.fixture(scope="module")
def written(phantom, tmp_path_factory):
    """Every vendor style written once (module scope: the files are only read)."""
    root = tmp_path_factory.mktemp("styles")
    return {style: write_phantom(phantom, root / style.value, vendor=style, aip=style is VendorStyle.DESC_T)
            for style in VendorStyle}


@pytest.mark.parametrize("style", list(VendorStyle))
def test_every_vendor_style_reads_back_to_the_same_phases_and_geometry(style, phantom, written):
    files = written[style]
    index = scan_study(files.dicom_dir)
    assert index.is_4d
    assert [p.percent for p in index.phases] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
    for series, expected in zip(index.phases, files.phases, strict=True):
        assert series.kind is SeriesKind.PHASE
        assert series.geometry.mismatch(phantom.geometry) is None
        np.testing.assert_allclose(series.geometry.affine, phantom.geometry.affine, atol=1e-6)
        assert series.geometry.sop_instance_uids == expected.geometry.sop_instance_uids
        assert series.series_instance_uid == expected.series_instance_uid
    study = load_study(index)
    for k, phase in enumerate(study.phases):
        np.testing.assert_array_equal(phase.volume, phantom.hu[k])
    if style is VendorStyle.DESC_T:
        assert [d.kind for d in index.derived] == [SeriesKind.AVERAGE]
        assert index.reference is index.derived[0]
    else:
        assert index.reference.percent == 50.0
    inferred = style in (VendorStyle.SINGLE_TEMPORAL, VendorStyle.SINGLE_POSITIONS)
    assert any("assuming evenly spaced phases" in w for w in index.warnings) is inferred


@pytest.mark.parametrize("compression", [Compression.RLE, Compression.JPEG2000])
def test_compressed_phantom_reads_identically(compression, phantom, tmp_path):
    files = write_phantom(phantom, tmp_path, vendor=VendorStyle.NOMINAL, compression=compression)
    study = load_study(scan_study(files.dicom_dir))
    np.testing.assert_array_equal(np.stack([p.volume for p in study.phases]), phantom.hu)


def copy_study(files, dst: Path, skip_phases=(), edit=None) -> Path:
    """A copy of a written phantom, without some phases, with ``edit(ds, volume)`` applied to every file."""
    for volume in files.volumes:
        if volume.percent in skip_phases:
            continue
        for path in volume.paths:
            target = dst / path.name
            if edit is None:
                shutil.copy(path, target)
            else:
                ds = pydicom.dcmread(path)
                edit(ds, volume)
                ds.save_as(target)
    return dst


def test_missing_phase_is_refused(written, tmp_path):
    with pytest.raises(IncompleteStudyError, match=r"respiratory phases missing: 40% \(found 0%, 10%, 20%, 30%, "
                                                   r"50%"):
        scan_study(copy_study(written[VendorStyle.DESC_CT], tmp_path, skip_phases={40.0}))


def test_single_phase_of_a_4dct_is_refused(written, tmp_path):
    keep = {v.percent for v in written[VendorStyle.DESC_GATED].volumes} - {30.0}
    with pytest.raises(IncompleteStudyError, match=r"only one respiratory phase found .*'Gated 30%'"):
        scan_study(copy_study(written[VendorStyle.DESC_GATED], tmp_path, skip_phases=keep))


def test_phase_with_another_frame_of_reference_is_refused(written, tmp_path):
    def other_frame(ds, volume):
        if volume.percent == 60.0:
            ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.99"
    with pytest.raises(InconsistentSeriesError, match="phases 0% and 60% are not on the same grid \\(different "
                                                      "FrameOfReferenceUID\\)"):
        scan_study(copy_study(written[VendorStyle.DESC_PHASE], tmp_path, edit=other_frame))


def test_phase_on_a_shifted_grid_is_refused(written, tmp_path):
    def shift(ds, volume):
        if volume.percent == 20.0:
            ds.ImagePositionPatient[0] = float(ds.ImagePositionPatient[0]) + 1.5
    with pytest.raises(InconsistentSeriesError, match=r"phases 0% and 20% are not on the same grid \(voxel "
                                                      r"positions differ by up to 1.50 mm\)"):
        scan_study(copy_study(written[VendorStyle.DESC_T], tmp_path, edit=shift))


def test_two_series_claiming_one_phase_are_refused(written, tmp_path):
    def relabel(ds, volume):
        if volume.percent == 70.0:
            ds.SeriesDescription = "4D Thorax T=80%"
    with pytest.raises(AmbiguousPhasesError, match=r"phase 80% is given by 2 series"):
        scan_study(copy_study(written[VendorStyle.DESC_T], tmp_path, edit=relabel))


def test_description_contradicting_the_nominal_tag_is_refused(written, tmp_path):
    def contradict(ds, volume):
        if volume.percent == 10.0:
            ds.SeriesDescription = "T=20%"
    with pytest.raises(AmbiguousPhasesError, match=r"SeriesDescription says 20% but NominalPercentageOfRespiratory"
                                                   r"Phase says \[10.0\]"):
        scan_study(copy_study(written[VendorStyle.NOMINAL], tmp_path, edit=contradict))


def test_uneven_repetition_in_a_single_series_is_refused(written, tmp_path):
    study = copy_study(written[VendorStyle.SINGLE_POSITIONS], tmp_path)
    next(study.iterdir()).unlink()
    with pytest.raises(AmbiguousPhasesError, match=r"slice positions occur unevenly \(9 to 10 times\)"):
        scan_study(study)


def test_aip_is_the_reference_and_is_not_a_phase(written):
    index = scan_study(written[VendorStyle.DESC_T].dicom_dir)
    assert len(index.phases) == 10
    assert index.reference.kind is SeriesKind.AVERAGE
    assert index.reference.label == "AVERAGE"
    assert index.reference.geometry.mismatch(index.phases[0].geometry) is None


def test_reference_falls_back_to_the_nearest_phase_with_a_warning(written):
    index = scan_study(written[VendorStyle.DESC_EXIN].dicom_dir, reference_percent=45.0)
    assert index.reference.percent == 40.0
    assert "no AIP and no 45% phase: the reference is the nearest phase, 40%" in index.warnings

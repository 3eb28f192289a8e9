"""Training data as clinics export it (CT + RTSTRUCT with their own structure names) and as our phantom writes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomrt.phantom import PhantomConfig, generate_phantom, write_phantom
from dicomrt.provenance import Provenance
from dicomrt.reader import scan_study
from dicomrt.rt_outputs import OutputMode, write_rtstructs
from dicomrt.structures import thoracic_template
from model.datasets import AnnotationError, NameMapping, load_annotated
from model.metrics import dice

pytestmark = pytest.mark.integration
CLINIC_NAMES = {"GTV": "GTVp", "Lung_L": "Lt Lung", "Lung_R": "Rt Lung", "Heart": "HEART"}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory):
    """A 2-phase phantom written as DICOM, plus a copy holding per-phase RTSTRUCTs named the clinic's way."""
    root = tmp_path_factory.mktemp("exports")
    phantom = generate_phantom(PhantomConfig(seed=11, n_phases=2))
    files = write_phantom(phantom, root / "phantom" / "p11", vendor="desc-t")
    clinic = root / "clinic" / "patient1"
    written = write_rtstructs(scan_study(files.dicom_dir), dict(phantom.truth), thoracic_template(), clinic,
                              OutputMode.PER_PHASE, Provenance(model_identity="test"))
    for path in written:  # rename the ROIs as a planning system export might
        ds = pydicom.dcmread(path)
        for item in ds.StructureSetROISequence:
            item.ROIName = CLINIC_NAMES[item.ROIName]
        ds.save_as(path)
    for path in files.dicom_dir.iterdir():
        (clinic / path.name).write_bytes(path.read_bytes())
    return phantom, root


def test_clinic_export_with_a_name_mapping_gives_the_truth(exports, tmp_path: Path) -> None:
    phantom, root = exports
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text("map:\n  GTVp: GTV\n  Lt Lung: Lung_L\n  Rt Lung: Lung_R\n")
    volumes = load_annotated([root / "clinic"], thoracic_template(), NameMapping.from_file(mapping_file))
    assert [(v.study, v.phase, v.n_phases) for v in volumes] == [("patient1", 0, 2), ("patient1", 1, 2)]
    for k, volume in enumerate(volumes):
        assert np.array_equal(volume.hu, phantom.hu[k])
        for name in ("Lung_L", "Heart", "GTV"):
            assert dice(volume.masks[name], phantom.truth[name][k]) > 0.97, name


def test_clinic_export_refuses_unmapped_names(exports) -> None:
    _, root = exports
    with pytest.raises(AnnotationError, match=r"unmapped structure\(s\) \['GTVp', 'Lt Lung', 'Rt Lung'\]"):
        load_annotated([root / "clinic"], thoracic_template())
    with pytest.raises(AnnotationError, match=r"template structure\(s\) \['GTV'\] are missing"):
        load_annotated([root / "clinic"], thoracic_template(),
                       NameMapping({"Lt Lung": "Lung_L", "Rt Lung": "Lung_R"}, ignore=("GTVp",)))


def test_phantom_study_folder_reads_ct_and_truth(exports) -> None:
    phantom, root = exports
    volumes = load_annotated([root / "phantom"], thoracic_template())
    assert len(volumes) == 2 and volumes[1].study == "p11"
    assert np.array_equal(volumes[1].masks["GTV"], phantom.truth["GTV"][1])
    assert np.array_equal(volumes[1].hu, phantom.hu[1])

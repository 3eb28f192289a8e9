import pytest

from dicomrt.phases import SeriesKind, derived_kind, percent_from_description


@pytest.mark.parametrize(("description", "percent"), [
    ("4D Thorax T=10%", 10.0), ("CT 10.0%", 10.0), ("Gated 10%", 10.0), ("Phase 10%", 10.0), ("50% Ex", 50.0),
    ("0% In", 0.0), ("Thorax 4D  3.0  B30f  90 %", 90.0), ("T=0%", 0.0), ("CT 12.5%", 12.5),
    ("CT Thorax", None), ("", None), ("Ph 3.0 mm", None),
])
def test_percent_in_vendor_descriptions(description, percent):
    assert percent_from_description(description) == percent


def test_two_percentages_are_not_guessed():
    with pytest.raises(ValueError, match=r"several percentages in SeriesDescription '4D 10% 20%': \[10.0, 20.0\]"):
        percent_from_description("4D 10% 20%")


def test_percent_out_of_range():
    with pytest.raises(ValueError, match="must be in"):
        percent_from_description("T=100%")


@pytest.mark.parametrize(("description", "image_type", "kind"), [
    ("AIP", (), SeriesKind.AVERAGE), ("4D Avg", (), SeriesKind.AVERAGE), ("Ave-IP 0-90%", (), SeriesKind.AVERAGE),
    ("Average CT", (), SeriesKind.AVERAGE), ("MIP", (), SeriesKind.MIP), ("MaxIP 4D", (), SeriesKind.MIP),
    ("MinIP", (), SeriesKind.MINIP), ("Min-IP lungs", (), SeriesKind.MINIP),
    ("4DCT", ("DERIVED", "SECONDARY", "AXIAL", "AVERAGE"), SeriesKind.AVERAGE),
    ("4DCT", ("DERIVED", "SECONDARY", "AXIAL", "MAXIMUM"), SeriesKind.MIP),
    ("T=10%", ("ORIGINAL", "PRIMARY", "AXIAL"), None), ("Thorax Mipmap", (), None), ("Aveiro", (), None),
])
def test_derived_series_recognised(description, image_type, kind):
    assert derived_kind(description, image_type) is kind

import json

from typer.testing import CliRunner

from itvsam.cli import app
from itvsam.common import EXIT_PATH, EXIT_REFUSED

runner = CliRunner()


def test_inspect_real_ct_as_json(shared_data):
    result = runner.invoke(app, ["inspect", str(shared_data / "totalseg_ct"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["is_4d"] is False
    assert summary["geometry"]["shape_zyx"] == [20, 512, 512]
    assert summary["geometry"]["spacing_mm_zyx"] == [2.0, 0.976562, 0.976562]
    assert summary["geometry"]["origin_mm"] == [-249.5117, -437.5117, -804.5]
    assert summary["phases"][0]["z_range_mm"] == [-804.5, -766.5]
    assert summary["patient"]["id"] == "TS-EXAMPLE"


def test_inspect_tables_show_patient_and_warnings(shared_data):
    result = runner.invoke(app, ["inspect", str(shared_data / "totalseg_ct")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Example^TotalSegmentator (ID TS-EXAMPLE)" in result.stdout
    assert "512 x 512 pixels x 20 slices" in result.stdout
    assert "warning: no respiratory phase information" in result.stdout


def test_refused_study_exits_3_with_code_and_message(shared_data):
    result = runner.invoke(app, ["inspect", str(shared_data / "totalseg_ct_original"), "--json"])
    assert result.exit_code == EXIT_REFUSED
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "missing_uid"
    assert "required UIDs are empty in 20 of 20 CT files" in error["message"]

    result = runner.invoke(app, ["inspect", str(shared_data / "totalseg_ct_original")], env={"COLUMNS": "200"})
    assert result.exit_code == EXIT_REFUSED
    assert "error [missing_uid]: required UIDs are empty" in result.stderr


def test_missing_folder_exits_4(tmp_path):
    result = runner.invoke(app, ["inspect", str(tmp_path / "nowhere")])
    assert result.exit_code == EXIT_PATH
    assert "no such folder" in result.stderr

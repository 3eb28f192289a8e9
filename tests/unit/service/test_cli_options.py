from typer.testing import CliRunner

from itvsam.cli import app


def test_missing_template_is_a_usage_error_before_anything_is_written(tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "masks.npz").write_bytes(b"")
    result = CliRunner().invoke(app, ["contour", str(tmp_path / "study"), str(tmp_path / "masks.npz"), "-o",
                                      str(tmp_path / "out"), "--template", str(tmp_path / "nope.yaml")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "'--template': file" in result.output
    assert "does not exist" in result.output
    assert not (tmp_path / "out").exists()

"""Usage errors of the command line: missing files, invalid job options and invalid settings, each one line and
exit 2 before anything is written, whichever process it is."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from itvsam.cli import app
from service.settings import get_gateway_settings, get_listener_settings
from workers.settings import get_worker_settings


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


@pytest.fixture
def fresh_settings():
    """Each process's settings are read once (cached getters): read them again for every invocation here."""
    getters = (get_gateway_settings, get_listener_settings, get_worker_settings)
    for getter in getters:
        getter.cache_clear()
    yield
    for getter in getters:
        getter.cache_clear()


@pytest.mark.parametrize(("args", "env", "named"), [
    (["serve"], {"ITVSAM_API_KEY_HASHES": "plain-key"}, "ITVSAM_API_KEY_HASHES: api_key_hashes must be SHA-256"),
    (["worker"], {"ITVSAM_JOB_TIME_LIMIT_S": "10"}, "job_soft_time_limit_s < job_time_limit_s"),
    (["scp"], {"ITVSAM_SCP_PORT": "70000"}, "ITVSAM_SCP_PORT: Input should be less than 65536"),
    (["echo", "tps"], {"ITVSAM_SCP_OPTIONS": '{"mode": "sideways"}'}, "ITVSAM_SCP_OPTIONS: invalid job options: mode"),
])
def test_an_invalid_setting_is_one_line_and_exit_2_in_every_entry_point(fresh_settings, args, env, named):
    result = CliRunner().invoke(app, args, env={"COLUMNS": "500", **env})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error [invalid_settings]: ") and named in lines[0], lines


def test_bad_job_options_in_a_file_are_a_usage_error_naming_the_field(tmp_path):
    options = tmp_path / "options.json"
    options.write_text('{"threshold": 2}')
    (tmp_path / "study").mkdir()
    result = CliRunner().invoke(app, ["submit-dir", str(tmp_path / "study"), "--direct", "--options", str(options)],
                                env={"COLUMNS": "500"})
    assert result.exit_code == 2
    assert "error [invalid_options]" in result.output and "threshold: Input should be less than 1" in result.output
    options.write_text("{not json")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "study"), "-o", str(tmp_path / "out"), "--model",
                                      str(tmp_path), "--options", str(options)], env={"COLUMNS": "500"})
    assert result.exit_code == 2 and "cannot read job options as JSON" in result.output
    assert not (tmp_path / "out").exists()

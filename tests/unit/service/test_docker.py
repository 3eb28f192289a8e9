"""docker-compose.yml is valid for ``docker-compose config`` and keeps the deployment rules: Redis persistent and
never evicting, non-root services with healthchecks, workers reserving a GPU and mounting the model read-only."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from tests.conftest import require_tool
from tests.support.service import REPO

COMPOSE = REPO / "docker-compose.yml"


def test_compose_config_passes():
    binary = require_tool("docker-compose")
    env = {**os.environ, "ITVSAM_API_KEY_HASHES": "0" * 64, "SAM3_DIR": str(REPO)}
    result = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    missing = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                             env={k: v for k, v in env.items() if k != "SAM3_DIR"}, cwd=REPO, timeout=60, check=False)
    assert missing.returncode != 0 and "set SAM3_DIR" in missing.stderr


def test_compose_keeps_the_deployment_rules():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    redis_command = services["redis"]["command"]
    assert "--appendonly" in redis_command and "noeviction" in redis_command
    for name in ("redis", "gateway", "worker"):  # the worker's healthcheck is in its Dockerfile (heartbeat)
        assert name == "worker" or services[name]["healthcheck"]["test"]
        assert not str(services[name]["user"]).startswith("0")
    worker = services["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert any(v.endswith(":/models/sam3:ro") for v in worker["volumes"])
    assert "container_name" not in worker  # --scale worker=N needs unnamed containers
    for dockerfile in ("gateway", "worker"):
        text = (REPO / "docker" / f"{dockerfile}.Dockerfile").read_text()
        assert "USER itvsam" in text and "HEALTHCHECK" in text
    gateway = (REPO / "docker" / "gateway.Dockerfile").read_text()
    assert "FROM python:3.11-slim" in gateway and "nvidia" not in gateway and ".[engine" not in gateway


def _copied(dockerfile: str) -> set[str]:
    text = (REPO / "docker" / f"{dockerfile}.Dockerfile").read_text()
    return {line.split()[1] for line in text.splitlines() if line.startswith("COPY ") and "/" not in line.split()[1]}


def test_each_image_copies_only_its_packages_and_runs_without_the_others():
    assert _copied("gateway") == {"pyproject.toml", "dicomrt", "jobs", "service", "itvsam"}
    assert _copied("worker") == {"pyproject.toml", "dicomrt", "jobs", "model", "workers", "itvsam"}
    # what the images run, with the packages they lack made unimportable (as in the image)
    for missing, code in ((("model", "workers", "torch", "transformers", "peft"),
                           "from service.api.app import create_app; from itvsam.cli import app; "
                           "app(['serve', '--help'], standalone_mode=False)"),
                          (("service", "fastapi", "uvicorn"),
                           "import workers.tasks, workers.pipeline; from itvsam.cli import app; "
                           "app(['worker', '--help'], standalone_mode=False)")):
        block = (f"import sys, importlib.abc\nclass Block(importlib.abc.MetaPathFinder):\n"
                 f"    def find_spec(self, name, path=None, target=None):\n"
                 f"        if name.split('.')[0] in {missing!r}: raise ImportError('not in this image: ' + name)\n"
                 f"sys.meta_path.insert(0, Block())\n{code}\n")
        result = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=REPO, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr[-2000:]

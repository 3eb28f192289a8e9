#!/usr/bin/env bash
# Run the whole test suite after setting everything up: ruff, the import-layering contracts (import-linter), then pytest
# (unit, integration and slow tests). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# As root, setup.sh installed the Debian tools: a test that cannot find one must fail, not skip.
if [ "$(id -u)" = 0 ]; then export ITVSAM_REQUIRE_TOOLS=1; fi
.venv/bin/ruff check .
.venv/bin/lint-imports  # the layering contracts of pyproject.toml ([tool.importlinter])
.venv/bin/python -m pytest "$@"

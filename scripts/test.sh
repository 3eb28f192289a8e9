#!/usr/bin/env bash
# Run the whole test suite (unit, integration and slow tests) after setting everything up. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# As root, setup.sh installed the Debian tools: a test that cannot find one must fail, not skip.
if [ "$(id -u)" = 0 ]; then export ITVSAM_REQUIRE_TOOLS=1; fi
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"

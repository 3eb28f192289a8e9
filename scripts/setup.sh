#!/usr/bin/env bash
# Set up itvsam on a fresh Debian machine: the Debian DICOM tools the tests use (installed when running as root),
# and a virtual environment .venv with itvsam and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# (dcmcjpeg, not storescu, tells dcmtk apart: pynetdicom installs its own storescu into the venv)
declare -A tool_package=([dcmcjpeg]=dcmtk [dciodvfy]=dicom3tools [plastimatch]=plastimatch [redis-server]=redis-server
                        [docker-compose]=docker-compose)
missing=()
for tool in "${!tool_package[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${tool_package[$tool]}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
    else
        echo "setup: not root, cannot install ${missing[*]}; tests that need them will be skipped" >&2
    fi
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[engine,gateway,worker,test]"
# fail here, not in the tests, if the install is broken
.venv/bin/python -c "import dicomrt, jobs.options, itvsam.cli, model.sam3, workers.pipeline, service.api.app, workers.tasks"

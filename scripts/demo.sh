#!/usr/bin/env bash
# The main job on a fresh machine: set up, generate a synthetic 4DCT phantom study, and read it back.
# Usage: scripts/demo.sh [OUT_DIR]   (default: out/demo; an existing result there is replaced)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
out=${1:-out/demo}
rm -rf "$out"
.venv/bin/itvsam phantom "$out" --seed 7 --vendor desc-t --aip
.venv/bin/itvsam inspect "$out/dicom"

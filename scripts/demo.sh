#!/usr/bin/env bash
# The main job on a fresh machine: set up, then `itvsam demo`: a phantom 4DCT (a seed the phantom model never saw)
# through the whole pipeline with the shipped phantom model, printing Dice/HD95 against the phantom's truth.
# Usage: scripts/demo.sh [OUT_DIR]   (default: out/demo; an existing result there is replaced)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
out=${1:-out/demo}
rm -rf "$out"
.venv/bin/itvsam demo -o "$out"

#!/usr/bin/env bash
# Quick start: sets up .venv (tools/setup.sh), then runs the main job on the
# default experiment: generated data -> training -> evaluation -> SavedModel
# export -> prediction PNGs (tools/main_job.py). Arguments go to main_job.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
exec .venv/bin/python tools/main_job.py "$@"

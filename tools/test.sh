#!/usr/bin/env bash
# Sets up .venv (see tools/setup.sh) and runs the whole test suite.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -m "not slow"` or
# `bash tools/test.sh tests/model`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"

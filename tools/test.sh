#!/usr/bin/env bash
# Sets up .venv (see tools/setup.sh) and runs the whole test suite, one
# pytest-xdist worker per core, each test file on one worker (its
# module-scoped fixtures, e.g. a trained checkpoint, are made once).
# Extra arguments go to pytest, e.g. `bash tools/test.sh -m "not slow"`,
# `bash tools/test.sh tests/model`, or `-n 0` for one process (a
# debugger, or output as the tests run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
exec .venv/bin/python -m pytest -n auto --dist loadfile "$@"

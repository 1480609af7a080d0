#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv/ in the repository root,
# installs deeplab_sp into it in editable mode with its test, cityscapes (the
# official Cityscapes evaluation, which a test compares with ours) and
# interop (ONNX and TFLite export) extras, and generates the protobuf
# modules. A second run skips what is already done.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python_bin="${PYTHON:-}"
if [[ -z "$python_bin" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python_bin="$candidate"; break; fi
  done
fi
if [[ -z "$python_bin" ]]; then
  echo "setup: no python3 found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $("$python_bin" --version)"
  "$python_bin" -m venv .venv
fi

# Reinstall only when pyproject.toml changed since the last install.
stamp=.venv/.deeplab_sp_install_stamp
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]]; then
  echo "setup: installing deeplab_sp and its dependencies into .venv (takes a minute or two the first time)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test,cityscapes,interop]"
  echo "$wanted" > "$stamp"
fi

.venv/bin/python tools/build_protos.py

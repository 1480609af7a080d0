"""Shared pytest fixtures and settings."""

import os
import pathlib
import sys

# Quieter TensorFlow logs in test output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def python_executable() -> str:
  """The interpreter running the tests (the .venv one under tools/test.sh)."""
  return sys.executable

# Lets test modules `import tiny_experiment` (the shared tiny config).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

"""deeplab_sp.utils.tf_startup: TensorFlow's start-up noise hidden by default.

Each case runs a fresh interpreter: the module acts when it is imported,
before TensorFlow loads. A last test checks that every entry point imports
it before anything else.
"""

import ast
import os
import pathlib
import subprocess
import sys

# The source tree (under Bazel too: the resolved path of this file).
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
NO_GPU_LINE = 'failed call to cuInit'
# Where TensorFlow's CUDA platform finds no GPU, it logs NO_GPU_LINE.
NO_GPU = not any(pathlib.Path('/dev').glob('nvidia[0-9]*'))

_PROGRAM = '''
from deeplab_sp.utils import tf_startup
import tensorflow as tf
tf.constant(1.0) + 1.0  # Starts the runtime (its start-up lines).
tf.get_logger().warning('a line of the tensorflow logger')
print('level', tf_startup.os.environ['TF_CPP_MIN_LOG_LEVEL'])
print('quiet child', tf_startup.child_environment(False).get(
    'TF_CPP_MIN_LOG_LEVEL'))
print('verbose child', tf_startup.child_environment(True)[
    'TF_CPP_MIN_LOG_LEVEL'])
'''


def _run(level=None):
  env = {key: value for key, value in os.environ.items()
         if key != 'TF_CPP_MIN_LOG_LEVEL'}
  if level is not None:
    env['TF_CPP_MIN_LOG_LEVEL'] = level
  result = subprocess.run([sys.executable, '-c', _PROGRAM], env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout, result.stderr


def test_quiet_by_default_and_verbose_for_children():
  stdout, stderr = _run()
  assert 'level 2' in stdout
  # A quiet child (an entry point) hides the noise itself.
  assert 'quiet child None' in stdout and 'verbose child 0' in stdout
  # No INFO or WARNING line of TensorFlow's C++ runtime.
  runtime_lines = [line for line in stderr.splitlines()
                   if ' I tensorflow/' in line or ' W tensorflow/' in line]
  assert not runtime_lines, runtime_lines
  # A line of the tensorflow logger is printed once (absl's handler only).
  assert stderr.count('a line of the tensorflow logger') == 1, stderr
  assert 'WARNING:tensorflow:' not in stderr
  # Nor the ERROR line of a machine without a GPU.
  assert NO_GPU_LINE not in stderr, stderr


def test_the_users_level_wins():
  stdout, stderr = _run('2')
  assert 'level 2' in stdout
  assert 'quiet child 2' in stdout and 'verbose child 2' in stdout
  # The user's level shows what TensorFlow shows at that level.
  if NO_GPU:
    assert stderr.count(NO_GPU_LINE) == 1, stderr


def _entry_points():
  # build_protos.py does not load TensorFlow; __init__.py (the console
  # scripts) runs each tool as __main__, whose first import is tf_startup.
  tools = [path for path in sorted((REPO_ROOT / 'tools').glob('*.py'))
           if path.name not in ('build_protos.py', '__init__.py')]
  return tools + [REPO_ROOT / 'deeplab_sp/trainer/train.py']


def test_every_entry_point_imports_it_first():
  for path in _entry_points():
    tree = ast.parse(path.read_text())
    statements = [node for node in tree.body
                  if not (isinstance(node, ast.Expr) and
                          isinstance(node.value, ast.Constant))]
    first = ast.unparse(statements[0])
    assert first == 'from deeplab_sp.utils import tf_startup', (
        f'{path}: the first statement is {first!r}')

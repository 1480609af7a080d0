"""Tests of trainer/tpu_compat.py and tools/check_tpu_compat.py."""

import json
import os
import subprocess
import sys

from google.protobuf import text_format
import pytest
import tensorflow as tf
import tf_keras

from deeplab_sp import experiment as experiment_lib
from deeplab_sp.trainer import tpu_compat
from deeplab_sp.trainer import trainer as trainer_lib
from tests import tiny_experiment

# Small and narrow, but every stage of the model and of the step is there;
# 64x64 keeps the hypercolumn's bilinear resizes (the stride-32 endpoint is
# upsampled), whose bfloat16 gradient once failed to compile.
_OVERRIDES = {
    'train_dataset_options.crop_size': [64, 64],
    'eval_dataset_options.crop_size': [64, 64],
    'model_options.superpixel_tokenization.grid_height': 4,
    'model_options.superpixel_tokenization.grid_width': 4,
}


def _experiment():
  return experiment_lib.experiment_from_options(
      tiny_experiment.options(_OVERRIDES, fast=True), mode='train')


@pytest.mark.slow
def test_bfloat16_step_compiles_and_policy_is_restored():
  before = tf_keras.mixed_precision.global_policy().name
  report = tpu_compat.compile_training_step(_experiment(), batch_size=2,
                                            precision='bfloat16')
  assert report.precision == 'bfloat16'
  assert report.batch_size == 2
  assert report.crop_size == (64, 64)
  assert report.compile_seconds > 0
  # The whole step, not a fragment: thousands of instructions.
  assert report.hlo_instructions > 1000
  assert report.memory is None  # No dump directory was given.
  assert tf_keras.mixed_precision.global_policy().name == before


def test_step_that_xla_cannot_compile_is_reported(monkeypatch):
  original = trainer_lib.Trainer.replica_step

  def with_host_python(self, batch):
    original(self, batch)
    # Host-side Python: what a TPU step cannot contain.
    tf.numpy_function(lambda x: x, [batch['label']], tf.int32)

  monkeypatch.setattr(trainer_lib.Trainer, 'replica_step', with_host_python)
  with pytest.raises(tpu_compat.CompileError,
                     match='does not compile with XLA.*PyFunc'):
    tpu_compat.compile_training_step(_experiment(), precision='float32')


def test_bad_arguments_are_explained():
  with pytest.raises(ValueError, match='--batch must be at least 1'):
    tpu_compat.compile_training_step(_experiment(), batch_size=0)
  with pytest.raises(ValueError, match='Unknown precision'):
    tpu_compat.compile_training_step(_experiment(), precision='int8')


def test_program_memory_is_read_from_the_buffer_assignment(tmp_path):
  # The lines XLA writes (one per allocation), with the module name of the
  # compiled step; other modules' files are ignored.
  (tmp_path / 'module_0007.a_inference_tpu_compat_training_step_12__.34.'
   'cpu_after_optimizations-buffer-assignment.txt').write_text(
       'BufferAssignment:\n'
       'allocation 0: size 4096, parameter 3, shape |f32[32,32]| at '
       'ShapeIndex {}, maybe-live-out:\n'
       ' value: <1 arg3.4 @0> (size=4096,offset=0): f32[32,32]{1,0}\n'
       'allocation 1: size 1000, preallocated-temp:\n'
       'allocation 2: size 24, constant:\n'
       'allocation 3: size 8, output shape is |(f32[])|, maybe-live-out:\n'
       '\nTotal bytes used: 5128 (5.0KiB)\n')
  (tmp_path / 'module_0001.a_inference_other_1__.2.'
   'cpu_after_optimizations-buffer-assignment.txt').write_text(
       'allocation 0: size 999999, preallocated-temp:\n')
  memory = tpu_compat.read_program_memory(str(tmp_path))
  assert memory == tpu_compat.ProgramMemory(total=5128, arguments=4096,
                                            temporaries=1000)
  assert tpu_compat.read_program_memory(str(tmp_path / 'missing')) is None


@pytest.mark.slow
def test_tool_prints_the_compile_time_and_memory(tmp_path):
  config = tmp_path / 'tiny.textproto'
  config.write_text(text_format.MessageToString(
      tiny_experiment.options(_OVERRIDES, fast=True)))
  temp = tmp_path / 'tmp'
  temp.mkdir()
  env = dict(os.environ, PYTHONPATH=str(tiny_experiment.REPO_ROOT),
             TMPDIR=str(temp))
  env.pop('XLA_FLAGS', None)
  result = subprocess.run(
      [sys.executable, str(tiny_experiment.REPO_ROOT / 'tools' /
                           'check_tpu_compat.py'),
       f'--config_file={config}', '--precision=bfloat16', '--format=json'],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout[result.stdout.index('{'):])
  assert report['precision'] == 'bfloat16'
  assert report['compile_seconds'] > 0
  memory = report['memory']
  # The variables and AdamW's two slots per variable are arguments.
  assert memory['arguments'] > 0
  assert memory['temporaries'] > 0
  assert memory['total'] >= memory['arguments'] + memory['temporaries']
  # XLA's dump went to the tool's own temporary directory, now removed.
  assert not os.listdir(temp)

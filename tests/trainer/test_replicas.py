"""One global batch gives the same training step on 1 and on 2 replicas.

The paper trains with one image per core on 32 cores; the loss (top-k per
image) and the synchronized BatchNorm must not depend on the split. Each
run is a subprocess of tests/trainer/replica_runner.py (MirroredStrategy
over 2 logical CPUs, or one device with the concatenated batch).
"""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

RUNNER = str(pathlib.Path(__file__).with_name('replica_runner.py'))
# Seconds a runner may take before the test fails.
RUNNER_TIMEOUT = 240


def _run(check, strategy, tmp_path):
  out = tmp_path / f'{check}_{strategy}.npz'
  try:
    result = subprocess.run(
        [sys.executable, RUNNER, check, strategy, str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=RUNNER_TIMEOUT, check=False)
  except subprocess.TimeoutExpired as error:
    pytest.fail(f'runner timed out:\n{error.output}')
  assert result.returncode == 0 and 'DONE' in result.stdout, (
      result.stdout[-3000:])
  with np.load(out) as values:
    return dict(values)


def _assert_same(check, tmp_path, rtol=1e-5, atol=1e-5):
  single = _run(check, 'single', tmp_path)
  mirrored = _run(check, 'mirrored', tmp_path)
  assert single.keys() == mirrored.keys() and len(single) > 1
  for key in single:
    np.testing.assert_allclose(mirrored[key], single[key], rtol=rtol,
                               atol=atol, err_msg=key)
  return single


def test_top_k_loss_and_gradients_do_not_depend_on_replicas(tmp_path):
  values = _assert_same('loss', tmp_path)
  assert values['loss'] > 0
  assert any(np.abs(v).max() > 1e-4 for k, v in values.items()
             if k.startswith('grad/'))


@pytest.mark.slow
def test_synchronized_batch_norm_step_does_not_depend_on_replicas(tmp_path):
  single = _assert_same('batchnorm', tmp_path)
  assert any(k.startswith('stat/') for k in single)
  # Without synchronization each replica normalises with its own two images:
  # the check above would fail. (Moving means, not variances: the fused
  # unsynchronized kernel also corrects the variance's bias. The first
  # layer's mean of replica means is the global mean; deeper layers see
  # differently normalised inputs.)
  unsynced = _run('batchnorm_unsynced', 'mirrored', tmp_path)
  means = [k for k in single if 'moving_mean' in k]
  assert means and not all(
      np.allclose(unsynced[k], single[k], rtol=1e-5, atol=1e-5)
      for k in means)

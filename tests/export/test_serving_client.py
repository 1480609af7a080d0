"""The TF Serving clients (deeplab_sp/export/serving_client.py).

The REST request is built exactly as tools/serving_client.py builds it, sent
through JSON text (the wire) and run through the exported SavedModel's
signature in process, as TF Serving would run it.
"""

from concurrent import futures
import json
import re
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.export import export_lib
from deeplab_sp.export import serving_client
from deeplab_sp.utils import cli
import export_testing
from export_testing import png_bytes
from export_testing import random_image
from export_testing import SIZE

REPO_ROOT = export_testing.tiny_experiment.REPO_ROOT


@pytest.fixture(scope='module', name='exported')
def fixture_exported(tmp_path_factory):
  """(serving module, version directory) of the tiny model, random weights."""
  tf.keras.utils.set_random_seed(3)
  module = export_lib.build_serving_module(export_testing.tiny())
  base = tmp_path_factory.mktemp('serving') / 'saved'
  return module, export_lib.export_saved_model(module, str(base), version=1)


def test_rest_request_runs_through_the_signature(exported):
  module, export_dir = exported
  images = [png_bytes(random_image(SIZE, SIZE, seed=1)),
            png_bytes(random_image(SIZE, SIZE, seed=2))]
  wire = json.dumps(serving_client.rest_request(images))
  request = json.loads(wire)
  assert request['signature_name'] == 'serving_default'
  assert list(request['inputs']) == ['encoded_images']
  signature = tf.saved_model.load(export_dir).signatures['serving_default']
  outputs = serving_client.run_rest_request(signature, request)
  expected = module.serve_encoded(tf.constant(images))
  np.testing.assert_array_equal(outputs['semantic'],
                                expected['semantic'].numpy())
  assert outputs['image_size'] == [[SIZE, SIZE], [SIZE, SIZE]]


def test_the_tool_writes_the_request_the_library_builds(tmp_path):
  image = tmp_path / 'a.png'
  image.write_bytes(png_bytes(random_image(8, 12)))
  request_file = tmp_path / 'request.json'
  result = subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools/serving_client.py'),
       f'--images={image}', f'--write_request={request_file}'],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(request_file.read_text()) == serving_client.rest_request(
      [image.read_bytes()])


def test_bad_requests_are_clear_errors():
  with pytest.raises(ValueError, match='b64'):
    serving_client.decode_rest_request(
        {'inputs': {'encoded_images': ['not base64 object']}})
  with pytest.raises(ValueError, match='inputs'):
    serving_client.decode_rest_request({'instances': []})


def test_rest_url():
  assert serving_client.rest_url('localhost:8501', 'm') == (
      'http://localhost:8501/v1/models/m:predict')
  assert serving_client.rest_url('https://h/', 'm', 3) == (
      'https://h/v1/models/m/versions/3:predict')


def test_grpc_request_carries_the_same_tensor():
  pytest.importorskip(
      'tensorflow_serving.apis',
      reason='tensorflow-serving-api (the optional [serving] extra) is not '
      'installed')
  images = [png_bytes(random_image(4, 4))]
  request = serving_client.grpc_request('m', images, version=2)
  assert request.model_spec.signature_name == 'serving_default'
  assert request.model_spec.version.value == 2
  assert tf.make_ndarray(request.inputs['encoded_images']).tolist() == images


def test_grpc_predict_against_an_in_process_prediction_service(exported):
  pytest.importorskip(
      'tensorflow_serving.apis',
      reason='tensorflow-serving-api (the optional [serving] extra) is not '
      'installed')
  from concurrent import futures  # pylint: disable=g-import-not-at-top
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  module, export_dir = exported
  signature = tf.saved_model.load(export_dir).signatures['serving_default']

  class Service(prediction_service_pb2_grpc.PredictionServiceServicer):
    """What TF Serving does with a Predict call, on the SavedModel."""

    def Predict(self, request, context):  # pylint: disable=invalid-name
      assert request.model_spec.signature_name == 'serving_default'
      inputs = {name: tf.make_ndarray(proto)
                for name, proto in request.inputs.items()}
      outputs = signature(**{name: tf.constant(value)
                             for name, value in inputs.items()})
      answer = predict_pb2.PredictResponse()
      for name, value in outputs.items():
        answer.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
      return answer

  server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      Service(), server)
  port = server.add_insecure_port('localhost:0')
  server.start()
  try:
    images = [png_bytes(random_image(SIZE, SIZE, seed=4))]
    outputs = serving_client.grpc_predict(f'localhost:{port}', 'm', images)
  finally:
    server.stop(None)
  np.testing.assert_array_equal(
      outputs['semantic'],
      module.serve_encoded(tf.constant(images))['semantic'].numpy())


def _free_port():
  """A localhost port nothing listens on (bound, then released)."""
  with socket.socket() as probe:
    probe.bind(('localhost', 0))
    return probe.getsockname()[1]


def _echo_size_server(answer_bytes):
  """A gRPC server whose /test.Big/Get answers `answer_bytes` zero bytes."""
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
  server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
      'test.Big', {'Get': grpc.unary_unary_rpc_method_handler(
          lambda request, context: b'\0' * answer_bytes)}),))
  port = server.add_insecure_port('localhost:0')
  server.start()
  return server, f'localhost:{port}'


def _get(channel):
  # No serializers: the request and the answer are bytes.
  return channel.unary_unary('/test.Big/Get')


def test_grpc_channel_options_set_the_receive_limit():
  assert serving_client.grpc_channel_options(
      serving_client.DEFAULT_GRPC_MAX_RECEIVE_MB) == [
          ('grpc.max_receive_message_length', 64 * 2**20)]
  assert serving_client.grpc_channel_options(2047) == [
      ('grpc.max_receive_message_length', 2047 * 2**20)]
  for bad in (0, -1, 2048):
    with pytest.raises(ValueError,
                       match=r'--grpc_max_receive_mb must be in \[1, 2047\]'):
      serving_client.grpc_channel_options(bad)


def test_grpc_answers_above_4_mib_arrive_and_the_limit_is_named():
  """One 1024x2048 answer is 24 MiB; gRPC's own limit is 4 MiB."""
  size = 5 * 2**20
  server, address = _echo_size_server(size)
  try:
    answer = serving_client.grpc_call(address, _get, b'', timeout=30)
    assert len(answer) == size
    with pytest.raises(ValueError) as raised:
      serving_client.grpc_call(address, _get, b'', timeout=30,
                               max_receive_mb=4)
  finally:
    server.stop(None)
  message = cli.user_error_message(raised.value)
  assert message.startswith(
      f'the answer of {address} is larger than --grpc_max_receive_mb=4 MiB '
      '(')
  assert 'raise --grpc_max_receive_mb' in message


def test_grpc_refused_connection_is_one_line():
  address = f'localhost:{_free_port()}'
  with pytest.raises(ConnectionError) as raised:
    serving_client.grpc_call(address, _get, b'', timeout=30)
  message = cli.user_error_message(raised.value)
  assert re.fullmatch(
      rf'cannot connect to {address} \([^\n]+\); is TF Serving running\? '
      r'Start tensorflow_model_server with --port or pass --server\.',
      message), message
  assert isinstance(raised.value.__cause__, grpc.RpcError)


class _FakeRpcError(grpc.RpcError):
  """A failed call's error as grpc raises it: code() and details()."""

  def __init__(self, code, details):
    super().__init__()
    self._code, self._details = code, details

  def code(self):
    return self._code

  def details(self):
    return self._details


def test_grpc_user_error_keeps_other_errors():
  assert serving_client.grpc_user_error(
      _FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, 'image too large'),
      'h:1', 64) is None
  # The server's own RESOURCE_EXHAUSTED (e.g. out of memory) is not the
  # client's receive limit.
  assert serving_client.grpc_user_error(
      _FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, 'OOM allocating'),
      'h:1', 64) is None
  error = serving_client.grpc_user_error(
      _FakeRpcError(grpc.StatusCode.UNAVAILABLE, 'failed to connect\n to all'),
      'h:1', 64)
  assert str(error).startswith(
      'cannot connect to h:1 (failed to connect to all); is TF Serving')


def _run_tool(*args):
  return subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools/serving_client.py'), *args],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
      check=False)


def test_the_tool_refuses_the_grpc_limit_with_rest(tmp_path):
  image = tmp_path / 'a.png'
  image.write_bytes(png_bytes(random_image(8, 12)))
  result = _run_tool(f'--images={image}', '--grpc_max_receive_mb=128')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      'serving_client: --grpc_max_receive_mb: used by --protocol=grpc only '
      '(REST answers have no size limit); remove it.')


def test_the_tool_says_in_one_line_that_grpc_is_not_served(tmp_path):
  pytest.importorskip(
      'tensorflow_serving.apis',
      reason='tensorflow-serving-api (the optional [serving] extra) is not '
      'installed')
  image = tmp_path / 'a.png'
  image.write_bytes(png_bytes(random_image(8, 12)))
  port = _free_port()
  result = _run_tool(f'--images={image}', '--protocol=grpc',
                     f'--server=localhost:{port}')
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert re.search(rf'^serving_client: cannot connect to localhost:{port} '
                   r'\(.+\); is TF Serving running\?', result.stderr,
                   re.MULTILINE), result.stderr

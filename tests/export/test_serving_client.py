"""The TF Serving clients (deeplab_sp/export/serving_client.py).

The REST request is built exactly as tools/serving_client.py builds it, sent
through JSON text (the wire) and run through the exported SavedModel's
signature in process, as TF Serving would run it.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplab_sp.export import export_lib
from deeplab_sp.export import serving_client
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

"""Clients of a SavedModel served by TF Serving: REST (JSON) and gRPC.

The REST request of the `serving_default` signature, in TF Serving's
columnar format, with each image file's bytes in base64 (TF Serving decodes
an object {"b64": ...} into the bytes of a string tensor):

  POST http://HOST:8501/v1/models/MODEL[/versions/N]:predict
  {"signature_name": "serving_default",
   "inputs": {"encoded_images": [{"b64": "<base64 of image 1>"}, ...]}}

The answer is {"outputs": {"semantic": [[[...]]], "image_size": [[h, w]],
"superpixel_ids": ..., "semantic_pred": ...}}: the signature's outputs as
nested lists (see deeplab_sp/export/export_lib.py; 'semantic_pred' is
DeepLab2's name of 'semantic', unless exported with
--nodeeplab2_output_names). `decode_rest_request` and
`run_rest_request` do in process what TF Serving does with the JSON, so a
request can be checked against the SavedModel without a server.

gRPC (port 8500) sends the same tensor as a PredictRequest; it needs the
optional `tensorflow-serving-api` package (`pip install -e .[serving]`), and
only `grpc_predict` imports it. gRPC refuses an answer above the channel's
receive limit (4 MiB unless set); one 1024x2048 image answers 24 MiB
('semantic', 'semantic_pred' and 'superpixel_ids', int32; 16 MiB without
DeepLab2's names), so the channel is opened with
`max_receive_mb` (DEFAULT_GRPC_MAX_RECEIVE_MB). A server that does not
answer (UNAVAILABLE) or an answer above the limit is a one-line
ConnectionError / ValueError saying the fix.
"""

import base64
import json
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from deeplab_sp.export import export_lib

SIGNATURE_NAME = export_lib.SERVING_DEFAULT
INPUT_NAME = 'encoded_images'
DEFAULT_REST_PORT = 8501
DEFAULT_GRPC_PORT = 8500
# Receive limit of the gRPC channel, MiB. An answer without 'probabilities'
# is 12 bytes per pixel (3 int32 outputs, 'semantic_pred' being DeepLab2's
# name of 'semantic'): 24 MiB for a 1024x2048 image, so 64 MiB holds a
# batch of two (three without DeepLab2's names). 'probabilities' adds 4
# bytes per pixel and class, twice with its alias 'semantic_probs' (152 MiB
# per image and name for Cityscapes' 19 classes).
DEFAULT_GRPC_MAX_RECEIVE_MB = 64
# gRPC's limit is a signed 32-bit count of bytes.
MAX_GRPC_RECEIVE_MB = 2047
_SERVING_API_HINT = (
    'gRPC needs the optional tensorflow-serving-api package: pip install '
    '-e .[serving] (or use --protocol=rest).')


def rest_request(images: Sequence[bytes]) -> dict:
  """The JSON body (a dict) of a REST predict request for encoded images."""
  return {
      'signature_name': SIGNATURE_NAME,
      'inputs': {INPUT_NAME: [
          {'b64': base64.b64encode(data).decode('ascii')} for data in images]},
  }


def rest_url(server: str, model_name: str,
             version: Optional[int] = None) -> str:
  """`http://server/v1/models/<model>[/versions/<n>]:predict`."""
  if '://' not in server:
    server = f'http://{server}'
  path = f'/v1/models/{model_name}'
  if version:
    path += f'/versions/{version}'
  return f'{server.rstrip("/")}{path}:predict'


def send_rest(url: str, request: dict, timeout: float = 60.0) -> dict:
  """POSTs `request` to TF Serving; returns the answer's 'outputs'."""
  body = json.dumps(request).encode('utf-8')
  http_request = urllib.request.Request(
      url, data=body, headers={'Content-Type': 'application/json'})
  with urllib.request.urlopen(http_request, timeout=timeout) as answer:
    return json.loads(answer.read().decode('utf-8'))['outputs']


def decode_rest_request(request: dict) -> Dict[str, tf.Tensor]:
  """The signature's inputs from the JSON body, as TF Serving makes them.

  Raises:
    ValueError: the body is not a columnar request of this signature.
  """
  if request.get('signature_name', SIGNATURE_NAME) != SIGNATURE_NAME:
    raise ValueError(f'The request names signature '
                     f'{request.get("signature_name")!r}; this client builds '
                     f'{SIGNATURE_NAME!r} requests.')
  values = request.get('inputs', {}).get(INPUT_NAME)
  if not isinstance(values, list):
    raise ValueError(f'The request has no "inputs": {{"{INPUT_NAME}": '
                     '[...]}.')
  images = []
  for value in values:
    if not (isinstance(value, dict) and set(value) == {'b64'}):
      raise ValueError('Each image must be an object {"b64": "<base64>"}.')
    images.append(base64.b64decode(value['b64']))
  return {INPUT_NAME: tf.constant(images, tf.string)}


def run_rest_request(signature, request: dict) -> dict:
  """Runs the JSON body through a loaded signature; the answer's 'outputs'.

  Args:
    signature: e.g. tf.saved_model.load(dir).signatures['serving_default'].
    request: the JSON body (a dict, as json.loads gives it).
  """
  outputs = signature(**decode_rest_request(request))
  return {name: value.numpy().tolist() for name, value in outputs.items()}


def grpc_request(model_name: str, images: Sequence[bytes],
                 version: Optional[int] = None):
  """A tensorflow_serving PredictRequest of `images` (needs the package)."""
  try:
    from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(_SERVING_API_HINT) from e
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = SIGNATURE_NAME
  if version:
    request.model_spec.version.value = version
  request.inputs[INPUT_NAME].CopyFrom(
      tf.make_tensor_proto(list(images), dtype=tf.string))
  return request


def grpc_channel_options(max_receive_mb: int) -> List[Tuple[str, int]]:
  """The options of a gRPC channel that accepts answers of that many MiB.

  Raises:
    ValueError: `max_receive_mb` outside [1, MAX_GRPC_RECEIVE_MB].
  """
  if not 1 <= max_receive_mb <= MAX_GRPC_RECEIVE_MB:
    raise ValueError(
        f'--grpc_max_receive_mb must be in [1, {MAX_GRPC_RECEIVE_MB}] (MiB; '
        f'gRPC counts bytes in 32 bits), got {max_receive_mb}.')
  return [('grpc.max_receive_message_length', int(max_receive_mb) * 2**20)]


def grpc_user_error(error: Exception, server: str,
                    max_receive_mb: int) -> Optional[Exception]:
  """The one-line error to raise for a gRPC error of the user's, or None.

  UNAVAILABLE: nothing answers at `server` (a ConnectionError, an OSError
  as the REST path's). RESOURCE_EXHAUSTED with gRPC's `larger than max`:
  the answer is above the channel's receive limit (a ValueError naming the
  flag). Anything else is left to the caller.
  """
  import grpc  # pylint: disable=g-import-not-at-top
  code = error.code() if hasattr(error, 'code') else None
  details = (error.details() if hasattr(error, 'details') else '') or ''
  details = ' '.join(details.split())
  if code == grpc.StatusCode.UNAVAILABLE:
    return ConnectionError(f'cannot connect to {server} ({details}); is TF '
                           'Serving running? Start tensorflow_model_server '
                           'with --port or pass --server.')
  if code == grpc.StatusCode.RESOURCE_EXHAUSTED and 'larger than max' in (
      details):
    return ValueError(
        f'the answer of {server} is larger than --grpc_max_receive_mb='
        f'{max_receive_mb} MiB ({details}); raise --grpc_max_receive_mb, or '
        'send fewer images per request (probabilities, when exported, add '
        '4 bytes per pixel and class, twice with their DeepLab2 name).')
  return None


def grpc_call(server: str, method: Callable[[Any], Callable[..., Any]],
              request: Any, timeout: float = 60.0,
              max_receive_mb: int = DEFAULT_GRPC_MAX_RECEIVE_MB) -> Any:
  """Calls `method(channel)(request)` on an insecure channel to `server`.

  Args:
    server: host:port.
    method: gives the unary method to call on a channel, e.g. a stub's
      `Predict`.
    request: the request message.
    timeout: seconds to wait for the answer.
    max_receive_mb: the channel's receive limit, MiB.

  Raises:
    ConnectionError, ValueError: see grpc_user_error.
    grpc.RpcError: any other error of the call.
  """
  import grpc  # pylint: disable=g-import-not-at-top
  options = grpc_channel_options(max_receive_mb)
  try:
    with grpc.insecure_channel(server, options=options) as channel:
      return method(channel)(request, timeout=timeout)
  except grpc.RpcError as e:
    user_error = grpc_user_error(e, server, max_receive_mb)
    if user_error is None:
      raise
    raise user_error from e


def grpc_predict(server: str, model_name: str, images: Sequence[bytes],
                 version: Optional[int] = None,
                 timeout: float = 60.0,
                 max_receive_mb: int = DEFAULT_GRPC_MAX_RECEIVE_MB
                ) -> Dict[str, np.ndarray]:
  """Sends a PredictRequest over gRPC; returns the outputs as arrays.

  Raises:
    ImportError: tensorflow-serving-api is not installed.
    ConnectionError, ValueError: see grpc_user_error.
  """
  request = grpc_request(model_name, images, version)
  # The optional package, only here (the REST path does not need it).
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  answer = grpc_call(
      server,
      lambda channel: prediction_service_pb2_grpc.PredictionServiceStub(
          channel).Predict,
      request, timeout, max_receive_mb)
  return {name: tf.make_ndarray(proto) for name, proto in
          answer.outputs.items()}

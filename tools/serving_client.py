r"""Sends images to a SavedModel served by TF Serving (REST or gRPC).

Start the server on an export of tools/export_model.py:

  tensorflow_model_server --port=8500 --rest_api_port=8501 \
    --model_name=sp_transformer \
    --model_base_path=$PWD/work_dirs/export/synthetic_sp_transformer_tiny

then, REST (JSON, images in base64; nothing beyond TensorFlow needed):

  python tools/serving_client.py --images=a.png,b.jpg
  python tools/serving_client.py --images=a.png --write_request=request.json
  curl -X POST -d @request.json \
    http://localhost:8501/v1/models/sp_transformer:predict

or gRPC (needs `pip install -e .[serving]`):

  python tools/serving_client.py --images=a.png --protocol=grpc

gRPC accepts answers up to --grpc_max_receive_mb MiB (default 64: three
1024x2048 images without probabilities); raise it for larger batches or an
export with --include_probabilities.

For each image it prints its size and the classes (train ids) in its label
map. The request format is in deeplab_sp/export/serving_client.py.
"""

# First, before anything loads TensorFlow: hides its start-up log lines
# unless TF_CPP_MIN_LOG_LEVEL is set (deeplab_sp/utils/tf_startup.py).
from deeplab_sp.utils import tf_startup  # pylint: disable=g-bad-import-order,unused-import

import json

from absl import app
from absl import flags
import numpy as np

from deeplab_sp.export import predict_lib
from deeplab_sp.export import serving_client
from deeplab_sp.utils import cli
from deeplab_sp.utils import io

_IMAGES = flags.DEFINE_list(
    'images', None, 'Comma-separated image files or globs (JPEG, PNG, BMP, '
    'GIF).', required=True)
_PROTOCOL = flags.DEFINE_enum('protocol', 'rest', ['rest', 'grpc'],
                              'REST (JSON over HTTP) or gRPC.')
_SERVER = flags.DEFINE_string(
    'server', None, 'host:port of TF Serving (default localhost:8501 for '
    'REST, localhost:8500 for gRPC).')
_MODEL_NAME = flags.DEFINE_string(
    'model_name', 'sp_transformer', "TF Serving's --model_name.")
_VERSION = flags.DEFINE_integer(
    'version', 0, 'Model version to ask for (0: the newest served).')
_WRITE_REQUEST = flags.DEFINE_string(
    'write_request', None, 'Write the REST request JSON to this file (for '
    'curl) instead of sending it.')
_TIMEOUT = flags.DEFINE_float('timeout', 60.0, 'Seconds to wait for an answer.')
_GRPC_MAX_RECEIVE_MB = flags.DEFINE_integer(
    'grpc_max_receive_mb', serving_client.DEFAULT_GRPC_MAX_RECEIVE_MB,
    '--protocol=grpc only. Largest answer accepted, MiB (gRPC\'s own default '
    'is 4). An answer is 12 bytes per pixel (24 MiB for a 1024x2048 image; '
    '8 bytes, 16 MiB, for an export with --nodeeplab2_output_names), plus 4 '
    'bytes per pixel and class with probabilities exported (twice with '
    'their DeepLab2 name); the default holds two 1024x2048 images without '
    'probabilities.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if (flags.FLAGS[_GRPC_MAX_RECEIVE_MB.name].present and
      (_PROTOCOL.value != 'grpc' or _WRITE_REQUEST.value)):
    raise ValueError('--grpc_max_receive_mb: used by --protocol=grpc only '
                     '(REST answers have no size limit); remove it.')
  # Checked before the images are read.
  serving_client.grpc_channel_options(_GRPC_MAX_RECEIVE_MB.value)
  files = predict_lib.expand_images(_IMAGES.value)
  images = []
  for path in files:
    with open(path, 'rb') as f:
      images.append(f.read())
  if _WRITE_REQUEST.value:
    io.write_atomically(_WRITE_REQUEST.value,
                        json.dumps(serving_client.rest_request(images)))
    print(f'Wrote the request of {len(files)} image(s) to '
          f'{_WRITE_REQUEST.value}')
    return 0
  if _PROTOCOL.value == 'rest':
    server = _SERVER.value or f'localhost:{serving_client.DEFAULT_REST_PORT}'
    url = serving_client.rest_url(server, _MODEL_NAME.value, _VERSION.value)
    try:
      outputs = serving_client.send_rest(
          url, serving_client.rest_request(images), _TIMEOUT.value)
    except OSError as e:
      raise ConnectionError(
          f'No answer from {url} ({e}); start tensorflow_model_server with '
          '--rest_api_port or pass --server.') from e
  else:
    server = _SERVER.value or f'localhost:{serving_client.DEFAULT_GRPC_PORT}'
    outputs = serving_client.grpc_predict(server, _MODEL_NAME.value, images,
                                          _VERSION.value, _TIMEOUT.value,
                                          _GRPC_MAX_RECEIVE_MB.value)
  semantic = np.asarray(outputs['semantic'])
  sizes = np.asarray(outputs['image_size'])
  for path, labels, (height, width) in zip(files, semantic, sizes):
    classes = np.unique(labels[:height, :width]).tolist()
    print(f'{path}: {height}x{width}, classes {classes}')
  return 0


if __name__ == '__main__':
  app.run(cli.main_with_clear_errors('serving_client', main,
                                     extra_errors=(ImportError,)))

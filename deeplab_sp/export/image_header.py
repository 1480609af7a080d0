"""An encoded image's size, read from its header before it is decoded.

A decoder allocates height * width * channels bytes for whatever size the
header claims, and a PNG of 20000x20000 zeros compresses to a few hundred
kilobytes: one small request can take a serving process's memory. The
serving signatures and tools/predict.py therefore read the size from the
header (a few bytes, no decoding) and refuse an image with more than
`max_input_pixels` pixels before decoding it.

Formats (those tf.io.decode_image reads):
  JPEG: tf.image.extract_jpeg_shape (the SOF marker; the decoder uses the
    same).
  PNG: IHDR width and height, big-endian uint32 at bytes 16-24.
  GIF: the logical screen size, little-endian uint16 at bytes 6-10 (the
    size TensorFlow's GIF decoder allocates per frame).
  BMP: width and height, little-endian int32 at bytes 18-26 (a negative
    height is a top-down bitmap).
Anything else (e.g. WebP) has no size we read, and is refused as an
unsupported format rather than decoded unchecked.

Works in graph mode (the SavedModel's signatures) and eagerly (predict).
"""

from typing import List, Tuple

import tensorflow as tf

# Default of --max_input_pixels: 4096 * 4096 (16.8 megapixels). Decoding
# such an image takes 48 MiB (uint8 RGB) and its float32 copy 192 MiB; the
# outputs at the image's size (logits resized back, labels, superpixel ids)
# scale with it too, so a few GiB bound one request.
DEFAULT_MAX_INPUT_PIXELS = 4096 * 4096
SUPPORTED_FORMATS = 'JPEG, PNG, GIF or BMP'
_HEADER_BYTES = 32


def _header(encoded: tf.Tensor) -> tf.Tensor:
  """The first 32 bytes (zero-padded), int64 [32]."""
  head = tf.strings.substr(encoded, 0, _HEADER_BYTES)
  padded = tf.strings.join([head, tf.constant(b'\0' * _HEADER_BYTES)])
  padded = tf.strings.substr(padded, 0, _HEADER_BYTES)
  return tf.cast(tf.io.decode_raw(padded, tf.uint8), tf.int64)


def _starts_with(header: tf.Tensor, prefix: bytes) -> tf.Tensor:
  return tf.reduce_all(tf.equal(header[:len(prefix)],
                                tf.constant(list(prefix), tf.int64)))


def _big_endian(header: tf.Tensor, start: int, count: int) -> tf.Tensor:
  value = tf.constant(0, tf.int64)
  for i in range(count):
    value = value * 256 + header[start + i]
  return value


def _little_endian(header: tf.Tensor, start: int, count: int) -> tf.Tensor:
  return _big_endian(tf.reverse(header[start:start + count], [0]), 0, count)


def encoded_image_size(encoded: tf.Tensor
                      ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(height, width) int64 scalars and a bool: the format is known.

  Args:
    encoded: string scalar, the encoded image.

  Raises (when run):
    InvalidArgumentError: a JPEG whose header cannot be read.
  """
  header = _header(encoded)
  zero = tf.constant(0, tf.int64)
  is_jpeg = tf.io.is_jpeg(encoded)
  is_png = _starts_with(header, b'\x89PNG\r\n\x1a\n')
  is_gif = _starts_with(header, b'GIF8')
  is_bmp = _starts_with(header, b'BM')

  def jpeg_size():
    shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
    return shape[0], shape[1]

  def signed32(value):
    return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

  height, width = tf.cond(is_jpeg, jpeg_size, lambda: (zero, zero))
  height = tf.case([(is_png, lambda: _big_endian(header, 20, 4)),
                    (is_gif, lambda: _little_endian(header, 8, 2)),
                    (is_bmp, lambda: signed32(_little_endian(header, 22, 4)))],
                   default=lambda: height)
  width = tf.case([(is_png, lambda: _big_endian(header, 16, 4)),
                   (is_gif, lambda: _little_endian(header, 6, 2)),
                   (is_bmp, lambda: signed32(_little_endian(header, 18, 4)))],
                  default=lambda: width)
  known = is_jpeg | is_png | is_gif | is_bmp
  return height, width, known


def size_checks(height: tf.Tensor, width: tf.Tensor,
                max_pixels: int) -> List[tf.Operation]:
  """Assertions: height * width <= max_pixels (InvalidArgumentError)."""
  height = tf.cast(height, tf.int64)
  width = tf.cast(width, tf.int64)
  message = tf.strings.format(
      'Image of {}x{} (height x width) pixels exceeds the limit of '
      f'{max_pixels} pixels (max_input_pixels); resize it, or export with a '
      'larger --max_input_pixels.', (height, width))
  return [tf.debugging.Assert(height * width <= max_pixels, [message])]


def encoded_size_checks(encoded: tf.Tensor,
                        max_pixels: int) -> List[tf.Operation]:
  """Assertions that `encoded` is a known format within the pixel limit.

  Run them (tf.control_dependencies) before decoding `encoded`.
  """
  height, width, known = encoded_image_size(encoded)
  known_check = tf.debugging.Assert(known, [
      f'Unsupported image format: send {SUPPORTED_FORMATS} bytes (the size '
      'is read from the header and checked before decoding).'])
  with tf.control_dependencies([known_check]):
    return [known_check] + size_checks(height, width, max_pixels)

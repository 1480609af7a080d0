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
  GIF: the size of every frame, from the image descriptor of each frame
    (the blocks are walked from the header to the trailer, skipping each
    block's data sub-blocks without decoding them). The logical screen size
    at bytes 6-10 says nothing: TensorFlow's decoder returns the largest
    frame width x the largest frame height, and giflib decodes every frame
    first (a 1x1 screen may hold a 8000x8000 frame). Both are bounded: the
    largest height x largest width by the pixel limit, like any image, and
    the pixels of all frames together by the same limit. A GIF of more
    than MAX_GIF_BLOCKS blocks (frames and extensions) is refused, which
    bounds the time of the walk.
  BMP: width and height, little-endian int32 at bytes 18-26 (a negative
    height is a top-down bitmap).
Anything else (e.g. WebP) has no size we read, and is refused as an
unsupported format rather than decoded unchecked.

A batch is bounded too: the outputs of a batch are padded to its largest
height and width, so two images within the limit (1024x16384 and
16384x1024) would need outputs of 2 x 16384 x 16384 pixels. `batch_checks`
refuses a batch whose size x largest height x largest width exceeds
`max_batch_pixels` (default 4 x max_input_pixels).

Works in graph mode (the SavedModel's signatures) and eagerly (predict).
"""

from typing import List, NamedTuple, Optional, Tuple

import tensorflow as tf

# Default of --max_input_pixels: 4096 * 4096 (16.8 megapixels). Decoding
# such an image takes 48 MiB (uint8 RGB) and its float32 copy 192 MiB; the
# outputs at the image's size (logits resized back, labels, superpixel ids)
# scale with it too, so a few GiB bound one request.
DEFAULT_MAX_INPUT_PIXELS = 4096 * 4096
# Default of --max_batch_pixels, as a multiple of max_input_pixels: a batch
# of four images at the limit, or more smaller ones.
DEFAULT_BATCH_FACTOR = 4
SUPPORTED_FORMATS = 'JPEG, PNG, GIF or BMP'
# Most blocks (frames and extensions) of a GIF that are walked; one with
# more is refused. Each is a step of a loop of graph ops, so this bounds the
# time of the check; an animation has about two blocks per frame.
MAX_GIF_BLOCKS = 1024
# The fix said when an image is over the limit (serving; predict says its
# own flag).
SERVING_FIX = 'resize it, or export with a larger --max_input_pixels'
_HEADER_BYTES = 32
# GIF block introducers (GIF89a specification, section 15 on).
_GIF_EXTENSION, _GIF_IMAGE, _GIF_TRAILER = 0x21, 0x2C, 0x3B


class HeaderSize(NamedTuple):
  """What the header of an encoded image says (int64 / bool scalars).

  Attributes:
    height, width: the size of the decoded image (for a GIF the largest
      frame height and width).
    known: a format whose header is read.
    decoded_pixels: the pixels the decoder holds at once: height * width,
      for a GIF the pixels of all its frames together.
    frames: 1, for a GIF its number of frames.
    complete: false for a GIF of more than MAX_GIF_BLOCKS blocks (then
      frames and pixels are those of the blocks walked).
  """
  height: tf.Tensor
  width: tf.Tensor
  known: tf.Tensor
  decoded_pixels: tf.Tensor
  frames: tf.Tensor
  complete: tf.Tensor


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


def _gif_frames(encoded: tf.Tensor) -> Tuple[tf.Tensor, ...]:
  """(frames, largest height, largest width, pixels, complete) of a GIF.

  Walks the blocks after the header and global colour table: an image
  descriptor (0x2C: position, width, height, flags, a local colour table)
  counts a frame; it and an extension (0x21) are followed by data
  sub-blocks, skipped; the trailer (0x3B), anything else or the end of the
  data ends the walk (the decoder stops there too, or fails).
  """
  data = tf.cast(tf.io.decode_raw(encoded, tf.uint8), tf.int32)
  n = tf.size(data)
  # Position n stands for past the end: byte -1, a sub-block of size 0.
  padded = tf.concat([data, [-1]], 0)

  def byte(position):
    return tf.gather(padded, tf.clip_by_value(position, 0, n))

  # Data sub-blocks form a chain `size, <size bytes>, size, ..., 0`. For
  # every position at once, the position of the 0 that ends the chain
  # starting there (n if it runs past the end): pointer jumping doubles
  # the sub-blocks skipped per step, so log2(n) gathers, not a loop of up
  # to n / 2 steps.
  positions = tf.range(n + 1)
  sizes = tf.concat([data, [0]], 0)
  jump = tf.where(sizes > 0, tf.minimum(positions + 1 + sizes, n), positions)

  def double(jump, unused_changed):
    jumped = tf.gather(jump, jump)
    return jumped, tf.reduce_any(jumped != jump)

  chain_end, _ = tf.while_loop(lambda _, changed: changed, double,
                               (jump, tf.constant(True)))

  def color_table_bytes(flags):
    # Present when bit 7 is set; 3 * 2^(size + 1) bytes.
    present = (flags >= 0) & (tf.bitwise.bitwise_and(flags, 0x80) > 0)
    size = tf.bitwise.bitwise_and(tf.maximum(flags, 0), 7)
    return tf.where(present, 3 * tf.bitwise.left_shift(2, size), 0)

  def walk(position, blocks, frames, height, width, pixels, ended):
    del ended  # Only the loop's condition reads it.
    kind = byte(position)
    is_image = tf.equal(kind, _GIF_IMAGE)
    is_extension = tf.equal(kind, _GIF_EXTENSION)
    frame_width = tf.maximum(byte(position + 5) + 256 * byte(position + 6), 0)
    frame_height = tf.maximum(byte(position + 7) + 256 * byte(position + 8),
                              0)
    # Descriptor (10 bytes), local colour table, LZW code size (1 byte).
    chain = tf.where(
        is_image, position + 11 + color_table_bytes(byte(position + 9)),
        position + 2)
    following = tf.gather(chain_end, tf.minimum(chain, n)) + 1
    frame_pixels = (tf.cast(frame_height, tf.int64) *
                    tf.cast(frame_width, tf.int64))
    return (tf.where(is_image | is_extension, following, position),
            blocks + 1,
            frames + tf.cast(is_image, tf.int64),
            tf.where(is_image, tf.maximum(height, frame_height), height),
            tf.where(is_image, tf.maximum(width, frame_width), width),
            pixels + tf.where(is_image, frame_pixels,
                              tf.zeros_like(frame_pixels)),
            tf.logical_not(is_image | is_extension))

  zero = tf.constant(0, tf.int64)
  start = 13 + color_table_bytes(byte(10))
  # One step more than MAX_GIF_BLOCKS, to read the trailer after them.
  _, _, frames, height, width, pixels, ended = tf.while_loop(
      lambda _, blocks, *others: (blocks <= MAX_GIF_BLOCKS) & ~others[-1],
      walk,
      (start, tf.constant(0), zero, tf.constant(0), tf.constant(0), zero,
       tf.constant(False)))
  return (frames, tf.cast(height, tf.int64), tf.cast(width, tf.int64),
          pixels, ended)


# Eagerly (predict) the walk runs as one graph, not op by op.
_gif_frames_function = tf.function(
    _gif_frames, input_signature=[tf.TensorSpec([], tf.string)])


def encoded_image_size(encoded: tf.Tensor) -> HeaderSize:
  """What the header of `encoded` (a string scalar) says; see HeaderSize.

  Raises (when run):
    InvalidArgumentError: a JPEG whose header cannot be read.
  """
  header = _header(encoded)
  zero = tf.constant(0, tf.int64)
  one = tf.constant(1, tf.int64)
  is_jpeg = tf.io.is_jpeg(encoded)
  is_png = _starts_with(header, b'\x89PNG\r\n\x1a\n')
  is_gif = _starts_with(header, b'GIF8')
  is_bmp = _starts_with(header, b'BM')

  def jpeg_size():
    shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.int64)
    return shape[0], shape[1]

  def signed32(value):
    return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

  def gif():
    walk = _gif_frames_function if tf.executing_eagerly() else _gif_frames
    return walk(encoded)

  def not_gif():
    return one, zero, zero, zero, tf.constant(True)

  height, width = tf.cond(is_jpeg, jpeg_size, lambda: (zero, zero))
  frames, gif_height, gif_width, gif_pixels, complete = tf.cond(
      is_gif, gif, not_gif)
  height = tf.case([(is_png, lambda: _big_endian(header, 20, 4)),
                    (is_gif, lambda: gif_height),
                    (is_bmp, lambda: signed32(_little_endian(header, 22, 4)))],
                   default=lambda: height)
  width = tf.case([(is_png, lambda: _big_endian(header, 16, 4)),
                   (is_gif, lambda: gif_width),
                   (is_bmp, lambda: signed32(_little_endian(header, 18, 4)))],
                  default=lambda: width)
  decoded_pixels = tf.where(is_gif, gif_pixels, height * width)
  known = is_jpeg | is_png | is_gif | is_bmp
  return HeaderSize(height, width, known, decoded_pixels, frames, complete)


def _at_most(value: tf.Tensor, limit: int) -> tf.Tensor:
  # In float64: a product of two header fields may overflow int64.
  return tf.cast(value, tf.float64) <= float(limit)


def size_problems(size: HeaderSize, max_pixels: int, fix: str = SERVING_FIX
                 ) -> List[Tuple[tf.Tensor, tf.Tensor]]:
  """(ok, message) of each check of `size` against the pixel limit.

  In order: the format is known; a GIF's blocks were all walked; the
  image's height * width; a GIF's pixels of all frames together.

  Args:
    size: from encoded_image_size.
    max_pixels: the limit (max_input_pixels).
    fix: what the message tells to do about too large an image.
  """
  area = tf.cast(size.height, tf.float64) * tf.cast(size.width, tf.float64)
  return [
      (size.known, tf.constant(
          f'Unsupported image format: send {SUPPORTED_FORMATS} bytes (the '
          'size is read from the header and checked before decoding).')),
      (size.complete, tf.constant(
          f'GIF of more than {MAX_GIF_BLOCKS} blocks (frames and '
          'extensions) is not read: send a single-frame image.')),
      (_at_most(area, max_pixels), tf.strings.format(
          'Image of {}x{} (height x width) pixels exceeds the limit of '
          f'{max_pixels} pixels (max_input_pixels); {fix}.',
          (size.height, size.width))),
      # One frame: its pixels are height * width, checked just above.
      ((size.frames <= 1) | _at_most(size.decoded_pixels, max_pixels),
       tf.strings.format(
           'GIF of {} frames of {} pixels in all exceeds the limit of '
           f'{max_pixels} pixels (max_input_pixels; every frame of a GIF is '
           f'decoded); send its first frame alone, or {fix}.',
           (size.frames, size.decoded_pixels))),
  ]


def first_problem(size: HeaderSize, max_pixels: int,
                  fix: str = SERVING_FIX) -> Optional[str]:
  """Eagerly: the message of the first failed check of `size`, or None."""
  for ok, message in size_problems(size, max_pixels, fix):
    if not bool(ok):
      return message.numpy().decode()
  return None


def _assert_in_order(problems: List[Tuple[tf.Tensor, tf.Tensor]]
                    ) -> List[tf.Operation]:
  """Assertions of `problems`, each run after the one before."""
  checks = []
  for ok, message in problems:
    with tf.control_dependencies(checks[-1:]):
      checks.append(tf.debugging.Assert(ok, [message]))
  return checks


def size_checks(height: tf.Tensor, width: tf.Tensor,
                max_pixels: int) -> List[tf.Operation]:
  """Assertions: height * width <= max_pixels (InvalidArgumentError)."""
  height = tf.cast(height, tf.int64)
  width = tf.cast(width, tf.int64)
  message = tf.strings.format(
      'Image of {}x{} (height x width) pixels exceeds the limit of '
      f'{max_pixels} pixels (max_input_pixels); {SERVING_FIX}.',
      (height, width))
  return [tf.debugging.Assert(
      _at_most(tf.cast(height, tf.float64) * tf.cast(width, tf.float64),
               max_pixels), [message])]


def encoded_size_checks(encoded: tf.Tensor, max_pixels: int,
                        size: Optional[HeaderSize] = None
                       ) -> List[tf.Operation]:
  """Assertions that `encoded` is a known format within the pixel limit.

  Run them (tf.control_dependencies) before decoding `encoded`.

  Args:
    encoded: string scalar.
    max_pixels: the limit.
    size: encoded_image_size(encoded), if already computed.
  """
  if size is None:
    size = encoded_image_size(encoded)
  return _assert_in_order(size_problems(size, max_pixels))


def default_max_batch_pixels(max_input_pixels: int) -> int:
  """The default of max_batch_pixels for a given max_input_pixels."""
  return DEFAULT_BATCH_FACTOR * max_input_pixels


def batch_checks(sizes: tf.Tensor,
                 max_batch_pixels: int) -> List[tf.Operation]:
  """Assertions: batch * largest height * largest width <= the limit.

  Args:
    sizes: int [B, 2], each image's (height, width).
    max_batch_pixels: the limit of the padded batch.
  """
  sizes = tf.cast(sizes, tf.int64)
  batch = tf.shape(sizes, out_type=tf.int64)[0]
  # Zeros for an empty batch (reduce_max of nothing is the lowest int).
  largest = tf.maximum(tf.reduce_max(sizes, axis=0), 0)
  padded = (tf.cast(batch, tf.float64) * tf.cast(largest[0], tf.float64) *
            tf.cast(largest[1], tf.float64))
  message = tf.strings.format(
      'Batch of {} images padded to {}x{} (the largest height x the largest '
      'width; every output is padded to it) is {} pixels, more than the '
      f'limit of {max_batch_pixels} pixels (max_batch_pixels); send images '
      'of similar sizes together, or fewer images per request.',
      (batch, largest[0], largest[1], tf.cast(padded, tf.int64)))
  return [tf.debugging.Assert(_at_most(padded, max_batch_pixels), [message])]

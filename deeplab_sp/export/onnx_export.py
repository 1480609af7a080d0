"""ONNX export of the fixed-size model, through tf2onnx.

`to_onnx` converts FixedSizeModule.serve (fixed_size.py: inputs, outputs,
traced forms) and checks that the graph holds standard ONNX operators only:
tf2onnx keeps an op it cannot convert as a node of a TensorFlow domain,
which no ONNX runtime runs, and only logs it. `run_onnx` runs a model with
onnxruntime; `export_onnx` converts, checks the result against TensorFlow
on a test image, and writes the file.

Needs the optional `interop` extra (tf2onnx, onnx, onnxruntime).
"""

import contextlib
import logging as python_logging
from typing import Dict, List

from absl import logging
import numpy as np

from deeplab_sp.export import fixed_size

# ONNX's standard operator set, opset 17: supported by every recent
# onnxruntime and by the other runtimes that import ONNX.
DEFAULT_OPSET = 17

# The domains of standard ONNX operators.
_STANDARD_DOMAINS = ('', 'ai.onnx')


def _nodes(graph) -> List:
  """The nodes of an ONNX graph and of its subgraphs (If, Loop bodies)."""
  nodes = []
  for node in graph.node:
    nodes.append(node)
    for attribute in node.attribute:
      subgraphs = list(attribute.graphs)
      if attribute.HasField('g'):
        subgraphs.append(attribute.g)
      for subgraph in subgraphs:
        nodes.extend(_nodes(subgraph))
  return nodes


def check_standard_ops(model_proto) -> None:
  """Raises ValueError if an ONNX model is not plain ONNX with one input.

  Checks that every node is a standard ONNX operator (none of tf2onnx's
  TensorFlow fall-backs) and that the graph's only input is the images.
  """
  nonstandard = sorted({f'{node.domain}:{node.op_type}'
                        for node in _nodes(model_proto.graph)
                        if node.domain not in _STANDARD_DOMAINS})
  if nonstandard:
    raise ValueError(
        'tf2onnx left operators that are not standard ONNX in the graph: '
        f'{", ".join(nonstandard)}. No ONNX runtime runs them; nothing was '
        'written. The model needs a portable form of these ops '
        '(deeplab_sp/model/kernels/portable_ops.py).')
  initializers = {tensor.name for tensor in model_proto.graph.initializer}
  inputs = [graph_input.name for graph_input in model_proto.graph.input
            if graph_input.name not in initializers]
  if inputs != [fixed_size.INPUT_NAME]:
    raise ValueError(f'The ONNX graph has the inputs {inputs}, expected only '
                     f'{fixed_size.INPUT_NAME!r}; nothing was written.')


@contextlib.contextmanager
def _without_einsum_search():
  """Skips tf2onnx's einsum optimizer within the block.

  To replace each Einsum node by MatMuls and Transposes, that optimizer
  times every permutation of the equation's letters in onnxruntime: for
  the 7-letter equations of the local attention that is 5040 sessions, over
  half a minute per equation on a small model. Einsum is a standard ONNX
  operator, so the nodes are left as they are. The optimizer list is
  tf2onnx's private table (the version is pinned in pyproject.toml); if it
  moves, the conversion is only slower.
  """
  optimizers = getattr(
      fixed_size.import_interop_package('tf2onnx.optimizer', 'tf2onnx'),
      '_optimizers', None)
  removed = None
  if isinstance(optimizers, dict):
    removed = optimizers.pop('einsum_optimizer', None)
  try:
    yield
  finally:
    if removed is not None:
      # Back at the end of the (ordered) table, where tf2onnx has it.
      optimizers['einsum_optimizer'] = removed


def to_onnx(module: fixed_size.FixedSizeModule,
            opset: int = DEFAULT_OPSET) -> bytes:
  """The serialised ONNX model of `module.serve`, standard operators only.

  Raises:
    ImportError: if tf2onnx is not installed (names the pip command).
    ValueError: if the graph holds non-standard operators.
  """
  tf2onnx = fixed_size.import_interop_package('tf2onnx', 'tf2onnx')
  # tf2onnx logs every step at INFO; what it cannot convert is checked
  # below.
  python_logging.getLogger('tf2onnx').setLevel(python_logging.WARNING)
  logging.info('Converting to ONNX (tf2onnx %s, opset %d)',
               tf2onnx.__version__, opset)
  with _without_einsum_search():
    model_proto, _ = tf2onnx.convert.from_function(
        module.serve, input_signature=module.serve.input_signature,
        opset=opset)
  check_standard_ops(model_proto)
  return model_proto.SerializeToString()


def require_packages(verify: bool = True) -> None:
  """Raises ImportError (naming the pip command) if a package is missing.

  Args:
    verify: onnxruntime is needed too (to check the export).
  """
  fixed_size.import_interop_package('tf2onnx', 'tf2onnx')
  if verify:
    fixed_size.import_interop_package('onnxruntime', 'onnxruntime')


def run_onnx(model: bytes, images: np.ndarray) -> Dict[str, np.ndarray]:
  """Runs a serialised ONNX model with onnxruntime on the CPU.

  Returns:
    The outputs by name.
  """
  onnxruntime = fixed_size.import_interop_package('onnxruntime',
                                                  'onnxruntime')
  session = onnxruntime.InferenceSession(
      model, providers=['CPUExecutionProvider'])
  names = [output.name for output in session.get_outputs()]
  values = session.run(names, {fixed_size.INPUT_NAME: images})
  return dict(zip(names, values))


def export_onnx(module: fixed_size.FixedSizeModule, output_path: str,
                overwrite: bool = False, opset: int = DEFAULT_OPSET,
                verify: bool = True) -> str:
  """Converts `module` to ONNX and writes it to output_path atomically.

  Args:
    module: the FixedSizeModule.
    output_path: the .onnx file.
    overwrite: replace an existing file.
    opset: the ONNX opset.
    verify: run the model with onnxruntime and TensorFlow on a random image
      first, and write nothing if the logits differ beyond round-off.

  Returns:
    output_path.
  """
  fixed_size.check_output_file(output_path, overwrite)
  require_packages(verify)
  model = to_onnx(module, opset)
  if verify:
    fixed_size.check_against_tensorflow(
        module, lambda images: run_onnx(model, images), 'ONNX (onnxruntime)')
  fixed_size.write_model_file(output_path, model, overwrite)
  logging.info('Exported ONNX model to %s', output_path)
  return output_path

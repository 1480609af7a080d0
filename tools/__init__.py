"""The tools as console scripts of an installed deeplab_sp.

In a clone the tools run as scripts (`python tools/validate_config.py`). A
wheel ships this directory as the package deeplab_sp.tools (setup.py maps
it), and pyproject.toml's [project.scripts] names the functions below
(`deeplab_sp_validate_config`, ...). Each runs its tool's module as
`__main__`, i.e. the tool's own `if __name__ == '__main__':` block: the tools
need no entry function of their own, and a console script behaves as the
script does (the same error handling and exit status; --help shows the
tool's docstring and flags, which absl files under the main module).

Not console scripts, as they work in a clone only: build_protos (it compiles
protos/ in place; the wheel holds the generated modules), main_job and
compare_models (they run the trainer and other tools by their path in the
clone and default to its configs/).
"""

import runpy


def _run(tool: str) -> None:
  """Runs the tool `tool` (module deeplab_sp.tools.<tool>) as `__main__`."""
  # alter_sys: sys.argv[0] and sys.modules['__main__'] are the tool's while
  # it runs, as absl's --help and flag registration expect of a script.
  runpy.run_module(f'{__name__}.{tool}', run_name='__main__', alter_sys=True)


def benchmark():
  """deeplab_sp_benchmark: tools/benchmark.py."""
  _run('benchmark')


def benchmark_input_pipeline():
  """deeplab_sp_benchmark_input_pipeline: tools/benchmark_input_pipeline.py."""
  _run('benchmark_input_pipeline')


def build_ade20k_data():
  """deeplab_sp_build_ade20k_data: tools/build_ade20k_data.py."""
  _run('build_ade20k_data')


def build_cityscapes_data():
  """deeplab_sp_build_cityscapes_data: tools/build_cityscapes_data.py."""
  _run('build_cityscapes_data')


def build_folder_data():
  """deeplab_sp_build_folder_data: tools/build_folder_data.py."""
  _run('build_folder_data')


def build_synthetic_data():
  """deeplab_sp_build_synthetic_data: tools/build_synthetic_data.py."""
  _run('build_synthetic_data')


def check_tpu_compat():
  """deeplab_sp_check_tpu_compat: tools/check_tpu_compat.py."""
  _run('check_tpu_compat')


def export_model():
  """deeplab_sp_export_model: tools/export_model.py."""
  _run('export_model')


def inspect_export():
  """deeplab_sp_inspect_export: tools/inspect_export.py."""
  _run('inspect_export')


def model_stats():
  """deeplab_sp_model_stats: tools/model_stats.py."""
  _run('model_stats')


def predict():
  """deeplab_sp_predict: tools/predict.py."""
  _run('predict')


def serving_client():
  """deeplab_sp_serving_client: tools/serving_client.py."""
  _run('serving_client')


def superpixel_quality():
  """deeplab_sp_superpixel_quality: tools/superpixel_quality.py."""
  _run('superpixel_quality')


def validate_config():
  """deeplab_sp_validate_config: tools/validate_config.py."""
  _run('validate_config')

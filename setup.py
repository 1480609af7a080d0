"""The parts of the deeplab_sp build that pyproject.toml cannot declare.

pyproject.toml holds the metadata, the dependencies and the console
scripts. This file adds:

- The package layout: deeplab_sp/ with its subpackages, and the repository's
  tools/ directory shipped as the subpackage deeplab_sp.tools, whose
  functions are the console scripts (see tools/__init__.py).
- `build_protos`, a sub-command of `build` that writes
  deeplab_sp/protos/*_pb2.py from protos/*.proto with grpcio-tools' protoc
  (tools/build_protos.py's generate()). The modules are generated, never
  committed, so without it a wheel built from a clean clone could not
  import deeplab_sp.protos. It writes into the build directory, after
  build_py copied the package: a stale module in the source tree does not
  reach the wheel. Under `pip install -e .` it writes into the source tree
  instead, where the editable install imports from (as
  `python tools/build_protos.py` does). Its get_source_files() puts
  protos/*.proto and the generator into an sdist.
"""

import importlib.util
import os
import pathlib

import setuptools
from setuptools.command import build

ROOT = pathlib.Path(__file__).resolve().parent
PROTO_DIR = 'protos'
GENERATOR = 'tools/build_protos.py'


def _proto_generator():
  """tools/build_protos.py as a module.

  Loaded from its file: tools/ is not on sys.path while setup.py runs.
  """
  spec = importlib.util.spec_from_file_location('_deeplab_sp_build_protos',
                                                ROOT / GENERATOR)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _generated_modules():
  """Paths of the generated modules, relative to a package root."""
  return [f'deeplab_sp/protos/{proto.stem}_pb2.py'
          for proto in sorted((ROOT / PROTO_DIR).glob('*.proto'))]


class BuildProtos(setuptools.Command):
  """Generates deeplab_sp/protos/*_pb2.py from protos/*.proto."""

  description = 'generate deeplab_sp/protos/*_pb2.py from protos/*.proto'
  user_options = []

  def initialize_options(self):
    self.build_lib = None
    # setuptools sets it to True for an editable install.
    self.editable_mode = False

  def finalize_options(self):
    self.set_undefined_options('build_py', ('build_lib', 'build_lib'))

  def run(self):
    generator = _proto_generator()
    if self.editable_mode:
      if generator.out_of_date(ROOT / generator.PACKAGE_PROTO_DIR):
        generator.generate(str(ROOT))
    else:
      generator.generate(self.build_lib)

  def get_source_files(self):
    # Relative to the project directory, as sdist lists its files.
    protos = sorted((ROOT / PROTO_DIR).glob('*.proto'))
    return [f'{PROTO_DIR}/{proto.name}' for proto in protos] + [GENERATOR]

  def get_outputs(self):
    return [os.path.join(self.build_lib, name)
            for name in _generated_modules()]

  def get_output_mapping(self):
    # An editable install's modules are the ones written in place.
    if not self.editable_mode:
      return {}
    return {os.path.join(self.build_lib, name): str(ROOT / name)
            for name in _generated_modules()}


class Build(build.build):
  """`build`, then build_protos (after build_py, which it overwrites)."""

  sub_commands = build.build.sub_commands + [('build_protos', None)]


setuptools.setup(
    packages=setuptools.find_namespace_packages(
        where=str(ROOT), include=['deeplab_sp', 'deeplab_sp.*']) +
    ['deeplab_sp.tools'],
    package_dir={'deeplab_sp.tools': 'tools'},
    cmdclass={'build': Build, 'build_protos': BuildProtos},
)

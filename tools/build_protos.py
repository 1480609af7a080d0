"""Generates the Python modules of protos/*.proto with grpcio-tools' protoc.

The generated modules land in deeplab_sp/protos/ (`<name>_pb2.py`) and are
never edited by hand nor committed. `.proto` files import each other as
`deeplab_sp/protos/<name>.proto`; the protoc path mapping
`deeplab_sp/protos=protos` makes the generated imports
`from deeplab_sp.protos import <name>_pb2`.

Usage:
  python tools/build_protos.py          # regenerate what is out of date
  python tools/build_protos.py --check  # exit 1 if a module differs from
                                        # what its .proto generates
"""

import argparse
import filecmp
import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from deeplab_sp.utils import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

PROTO_DIR = REPO_ROOT / 'protos'
PACKAGE_PROTO_DIR = 'deeplab_sp/protos'


class ProtocError(RuntimeError):
  """protoc could not run or failed; the message says what to fix."""


def proto_files():
  return sorted(PROTO_DIR.glob('*.proto'))


def generated_name(proto_path):
  return proto_path.stem + '_pb2.py'


def generate(output_root):
  """Runs protoc on every .proto; writes `output_root/deeplab_sp/protos/*`.

  protoc runs in a child process: grpc_tools' compiled module and
  TensorFlow's protobuf runtime crash when loaded into one process, and a
  test or tool that already imported TensorFlow calls this function.
  """
  spec = importlib.util.find_spec('grpc_tools')
  if spec is None:
    raise ProtocError('grpcio-tools is not installed; run '
                     '`bash tools/setup.sh` (or `pip install grpcio-tools`).')
  well_known = os.path.join(list(spec.submodule_search_locations)[0],
                            '_proto')
  args = [
      sys.executable, '-m', 'grpc_tools.protoc',
      f'--proto_path={PACKAGE_PROTO_DIR}={PROTO_DIR}',
      f'--proto_path={well_known}',
      f'--python_out={output_root}',
  ] + [str(p) for p in proto_files()]
  status = subprocess.run(args, check=False).returncode
  if status != 0:
    raise ProtocError(f'protoc failed (exit {status}) on '
                     f'{PROTO_DIR}; fix the .proto error printed above.')


def out_of_date(package_dir):
  for proto in proto_files():
    module = package_dir / generated_name(proto)
    if not module.exists() or module.stat().st_mtime < proto.stat().st_mtime:
      return True
  return False


def check(package_dir):
  """Returns the names of generated modules that differ from their .proto."""
  with tempfile.TemporaryDirectory() as tmp:
    generate(tmp)
    fresh_dir = pathlib.Path(tmp) / PACKAGE_PROTO_DIR
    stale = []
    for proto in proto_files():
      name = generated_name(proto)
      current = package_dir / name
      if not current.exists() or not filecmp.cmp(
          current, fresh_dir / name, shallow=False):
        stale.append(name)
    return stale


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--check', action='store_true',
                      help='Only compare the generated modules with the '
                      '.proto files; exit 1 if any is stale.')
  parser.add_argument('--force', action='store_true',
                      help='Regenerate even if up to date.')
  args = parser.parse_args(argv)
  package_dir = REPO_ROOT / PACKAGE_PROTO_DIR
  if args.check:
    stale = check(package_dir)
    if stale:
      print('build_protos: out of date with protos/: ' + ', '.join(stale) +
            '. Run `python tools/build_protos.py`.', file=sys.stderr)
      return 1
    print('build_protos: generated modules match protos/.')
    return 0
  if args.force or out_of_date(package_dir):
    generate(REPO_ROOT)
    print(f'build_protos: generated {len(proto_files())} modules in '
          f'{PACKAGE_PROTO_DIR}/')
  return 0


if __name__ == '__main__':
  sys.exit(cli.main_with_clear_errors(
      'build_protos', main, extra_errors=(ProtocError,))(sys.argv[1:]))

"""The wheel: built from the working tree, installed and run outside it.

`pip install .` builds deeplab_sp with setup.py, which generates
deeplab_sp/protos/*_pb2.py (gitignored, never committed) into the wheel and
ships tools/ as deeplab_sp.tools, whose functions are the console scripts of
pyproject.toml (tools/__init__.py).

The slow tests build the wheel from a copy of the files git tracks or would
track (`git ls-files -co --exclude-standard`: the committed and the new
files, i.e. a fresh clone with the uncommitted work, without the generated
modules), with this interpreter's build requirements and no network. They
install it into a new virtual environment outside the repository, which
borrows only the dependencies (TensorFlow, ...) from this interpreter's
site-packages, and run console scripts from a directory outside the
repository.
"""

import ast
import configparser
import os
import pathlib
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
# Tools that work in a clone only, without a console script (tools/__init__.py
# says why).
CLONE_ONLY_TOOLS = ('build_protos', 'compare_models', 'main_job')
TIMEOUT_S = 300


def _console_scripts():
  with open(REPO_ROOT / 'pyproject.toml', 'rb') as f:
    return tomllib.load(f)['project']['scripts']


def _tools():
  return sorted(path.stem for path in (REPO_ROOT / 'tools').glob('*.py')
                if path.stem != '__init__' and
                path.stem not in CLONE_ONLY_TOOLS)


def _environment():
  """os.environ without what would import deeplab_sp from elsewhere."""
  environment = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK='1')
  for name in ('PYTHONPATH', 'PYTHONHOME', 'PYTHONSTARTUP'):
    environment.pop(name, None)
  environment.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return environment


def _run(command, cwd, expect_status=0):
  result = subprocess.run([str(part) for part in command], cwd=cwd,
                          env=_environment(), capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
  assert result.returncode == expect_status, (
      f'{command}: exit {result.returncode}\n{result.stdout[-3000:]}\n'
      f'{result.stderr[-3000:]}')
  return result


def test_every_tool_has_a_console_script():
  """pyproject.toml names deeplab_sp_<tool> for each tool but the clone-only
  ones, and tools/__init__.py has the function that runs that tool."""
  expected = {f'deeplab_sp_{tool}': f'deeplab_sp.tools:{tool}'
              for tool in _tools()}
  expected['deeplab_sp_train'] = 'deeplab_sp.trainer.train:run'
  assert _console_scripts() == expected, (
      'pyproject.toml [project.scripts] needs deeplab_sp_<tool> = '
      '"deeplab_sp.tools:<tool>" for each tools/<tool>.py except '
      f'{CLONE_ONLY_TOOLS}')
  runs = {}
  module = ast.parse((REPO_ROOT / 'tools' / '__init__.py').read_text())
  for node in module.body:
    if isinstance(node, ast.FunctionDef) and not node.name.startswith('_'):
      runs[node.name] = [call.args[0].value for call in ast.walk(node)
                         if isinstance(call, ast.Call) and
                         getattr(call.func, 'id', None) == '_run']
  assert runs == {tool: [tool] for tool in _tools()}, (
      'tools/__init__.py needs `def <tool>(): _run(\'<tool>\')` per tool')


def _git_files():
  try:
    listing = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
        cwd=REPO_ROOT, capture_output=True, check=True, timeout=60).stdout
  except (OSError, subprocess.CalledProcessError) as e:
    pytest.skip(f'builds from a git checkout of the repository: {e}')
  return [name for name in listing.decode().split('\0') if name]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  """The wheel built from a copy of the tracked and new files."""
  root = tmp_path_factory.mktemp('wheel')
  source = root / 'source'
  for name in _git_files():
    path = REPO_ROOT / name
    if path.is_file():  # Not a file deleted from the working tree.
      (source / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(path, source / name)
  # What a fresh clone lacks: the build must make the modules.
  assert not list(source.rglob('*_pb2.py'))
  dist = root / 'dist'
  _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '--no-index', '--no-cache-dir',
        '--wheel-dir', dist, source], cwd=root)
  wheels = list(dist.glob('deeplab_sp-*.whl'))
  assert len(wheels) == 1, wheels
  return wheels[0]


@pytest.mark.slow
def test_wheel_holds_the_generated_modules_and_the_tools(wheel):
  with zipfile.ZipFile(wheel) as archive:
    names = set(archive.namelist())
    entry_points = archive.read(next(
        name for name in names
        if name.endswith('.dist-info/entry_points.txt'))).decode()
  protos = sorted((REPO_ROOT / 'protos').glob('*.proto'))
  assert protos
  missing = [f'deeplab_sp/protos/{proto.stem}_pb2.py' for proto in protos
             if f'deeplab_sp/protos/{proto.stem}_pb2.py' not in names]
  assert not missing, missing
  parser = configparser.ConfigParser()
  parser.optionxform = str  # Script names keep their case.
  parser.read_string(entry_points)
  scripts = dict(parser['console_scripts'])
  assert scripts == _console_scripts()
  for target in scripts.values():
    module, _, function = target.partition(':')
    if module == 'deeplab_sp.tools':
      assert 'deeplab_sp/tools/__init__.py' in names
      assert f'deeplab_sp/tools/{function}.py' in names, target
    else:
      assert module.replace('.', '/') + '.py' in names, target
  # Only the package: no tests/, configs/ nor a top-level tools/.
  assert {name.split('/')[0] for name in names
          if not name.split('/')[0].endswith('.dist-info')} == {'deeplab_sp'}


@pytest.fixture(scope='module')
def venv(wheel, tmp_path_factory):
  """A new virtual environment with the wheel installed; its bin/."""
  root = tmp_path_factory.mktemp('venv')
  assert REPO_ROOT not in root.parents
  environment = root / 'env'
  _run([sys.executable, '-m', 'venv', '--without-pip', environment],
       cwd=root)
  python = environment / 'bin' / 'python'
  # This interpreter's pip installs into the new environment before it sees
  # other site-packages: nothing else can stand in for the wheel.
  _run([sys.executable, '-m', 'pip', '--python', python, 'install',
        '--no-deps', '--no-index', '--no-cache-dir', wheel], cwd=root)
  purelib = pathlib.Path(_run(
      [python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
      cwd=root).stdout.strip())
  # The dependencies from this interpreter's site-packages, after the
  # environment's own. Plain path lines: the .pth files there (an editable
  # install of deeplab_sp) do not run.
  (purelib / 'test_dependencies.pth').write_text(
      '\n'.join(site.getsitepackages()) + '\n')
  # The package, every console script's module and its function come from
  # the environment.
  check = (
      'import importlib.metadata, importlib.util, sys\n'
      'import deeplab_sp.protos.config_pb2\n'
      'print(deeplab_sp.protos.config_pb2.__file__)\n'
      'for entry in importlib.metadata.distribution("deeplab_sp")'
      '.entry_points.select(group="console_scripts"):\n'
      '  name = entry.module\n'
      '  if name == "deeplab_sp.tools":\n'
      '    assert callable(entry.load()), entry\n'
      '    name += "." + entry.attr\n'
      '  print(importlib.util.find_spec(name).origin)\n')
  origins = _run([python, '-c', check], cwd=root).stdout.split()
  assert len(origins) == 1 + len(_console_scripts())
  for origin in origins:
    assert pathlib.Path(origin).is_relative_to(purelib), origin
  for script in _console_scripts():
    assert (environment / 'bin' / script).is_file(), script
  return environment / 'bin'


@pytest.mark.slow
def test_installed_scripts_validate_a_config_and_export(venv, tmp_path):
  assert REPO_ROOT not in tmp_path.parents
  shutil.copy(REPO_ROOT / 'configs' / 'synthetic' /
              'sp_transformer_tiny.textproto', tmp_path / 'tiny.textproto')
  result = _run([venv / 'deeplab_sp_validate_config',
                 '--config_file=tiny.textproto'], cwd=tmp_path)
  assert 'OK tiny.textproto' in result.stdout
  assert 'superpixel grid 8x8' in result.stdout
  # A tool's exit status passes through its console script.
  result = _run([venv / 'deeplab_sp_validate_config',
                 '--config_file=missing.textproto'], cwd=tmp_path,
                expect_status=1)
  assert 'missing.textproto does not exist' in result.stderr

  # A freshly initialised tiny model (the export tests' helper), written by
  # the installed package, and its SavedModel export.
  write = (
      'import sys\n'
      f'sys.path[:0] = [{str(REPO_ROOT / "tests")!r}, '
      f'{str(REPO_ROOT / "tests" / "export")!r}]\n'
      'import export_testing\n'
      'print(*export_testing.write_config_and_checkpoint(sys.argv[1]))\n')
  config_file, prefix = _run([venv / 'python', '-c', write, tmp_path],
                             cwd=tmp_path).stdout.splitlines()[-1].split()
  _run([venv / 'deeplab_sp_export_model', f'--config_file={config_file}',
        f'--checkpoint_path={prefix}', '--output_path=exported'],
       cwd=tmp_path)
  assert (tmp_path / 'exported' / '1' / 'saved_model.pb').is_file()

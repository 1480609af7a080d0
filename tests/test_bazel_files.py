"""The Bazel files must name existing sources and cover every module."""

import ast
import pathlib
import re

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

_STRING = re.compile(r'"([^"]+)"')


def _build_files():
  return sorted(p for p in REPO_ROOT.rglob('BUILD')
                if '.venv' not in p.parts and '.git' not in p.parts)


def _named_sources(build_file):
  """Source files named in srcs/data attributes of one BUILD file."""
  text = build_file.read_text()
  named = []
  for match in re.finditer(r'(srcs|data)\s*=\s*\[([^\]]*)\]', text):
    for name in _STRING.findall(match.group(2)):
      if not name.startswith((':', '//', '@')):
        named.append(build_file.parent / name)
  return named


def test_workspace_and_build_files_exist():
  assert (REPO_ROOT / 'WORKSPACE').is_file()
  assert len(_build_files()) >= 4


def test_build_files_are_valid_starlark_syntax():
  for build_file in _build_files():
    ast.parse(build_file.read_text(), filename=str(build_file))


def test_every_named_source_exists():
  missing = [str(p.relative_to(REPO_ROOT)) for b in _build_files()
             for p in _named_sources(b) if not p.exists()]
  assert not missing, f'BUILD files name missing files: {missing}'


def test_every_module_proto_and_tool_is_named():
  named = {p.resolve() for b in _build_files() for p in _named_sources(b)}
  expected = [p for p in (REPO_ROOT / 'deeplab_sp').rglob('*.py')
              if not p.name.endswith('_pb2.py')]
  expected += list((REPO_ROOT / 'protos').glob('*.proto'))
  expected += list((REPO_ROOT / 'tools').glob('*.py'))
  unnamed = sorted(str(p.relative_to(REPO_ROOT)) for p in expected
                   if p.resolve() not in named)
  assert not unnamed, f'not named by any BUILD file: {unnamed}'


def test_workspace_requirements_file_exists():
  text = (REPO_ROOT / 'WORKSPACE').read_text()
  label = re.search(r'requirements_lock = "//(\w+):([\w.]+)"', text)
  assert label, 'WORKSPACE has no requirements_lock label'
  assert (REPO_ROOT / label.group(1) / label.group(2)).is_file()

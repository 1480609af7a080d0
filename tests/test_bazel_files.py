"""The Bazel files cover the repository and name only files that exist.

The BUILD and .bzl files are evaluated here in Python (the Starlark they use
is Python syntax): each rule records its target, and glob() is evaluated on
the package directory with Bazel's rules (`*` stays in one directory, `**`
spans directories, a subdirectory with its own BUILD file is another
package). So no Bazel is needed, and the checks see what the globs select
today, after files were added or renamed.

Under Bazel the test reads the source tree (its own path, resolved, points
there) and is tagged "external", i.e. never cached.
"""

import ast
import fnmatch
import functools
import io
import os
import pathlib
import re
import tokenize
import types

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# Rules the BUILD files may call; anything else is an error here.
RULES = ('py_library', 'py_binary', 'py_test', 'filegroup', 'genrule',
         'sh_binary', 'sh_test', 'test_suite', 'alias')
# Attributes that hold labels of files or targets.
LABEL_ATTRS = ('srcs', 'data', 'deps', 'main')


def _ignored_dirs():
  ignored = {'.git', '.venv'}
  bazelignore = REPO_ROOT / '.bazelignore'
  if bazelignore.exists():
    ignored |= {line.strip().rstrip('/') for line in
                bazelignore.read_text().splitlines()
                if line.strip() and not line.startswith('#')}
  return ignored


def _walk(top=REPO_ROOT):
  """(directory, file names) under top, without ignored dirs and bazel-*."""
  ignored = _ignored_dirs()
  for directory, subdirs, files in os.walk(top):
    rel = pathlib.Path(directory).relative_to(REPO_ROOT).as_posix()
    subdirs[:] = sorted(
        d for d in subdirs
        if not d.startswith(('bazel-', '__pycache__', '.pytest_cache'))
        and (d if rel == '.' else f'{rel}/{d}') not in ignored)
    yield pathlib.Path(directory), sorted(files)


def _package_dirs():
  return [d for d, files in _walk() if 'BUILD' in files]


class _Globbed(str):
  """A file name that a glob() selected (not named in a BUILD file)."""


class _Target(types.SimpleNamespace):
  pass


class _Workspace:
  """Evaluates every BUILD file; holds the targets by (package, name)."""

  def __init__(self):
    self.targets = {}
    self.package = None
    self._bzl_cache = {}
    self.native = types.SimpleNamespace(
        glob=lambda *a, **k: self._glob(*a, **k),
        package_name=lambda: self.package,
        exports_files=lambda *a, **k: None,
        package=lambda **k: None,
        **{rule: self._rule_function(rule) for rule in RULES})
    for package_dir in _package_dirs():
      self._evaluate_build(package_dir)

  # Starlark built-ins.

  def _rule_function(self, kind):
    def rule(name, **attrs):
      key = (self.package, name)
      assert key not in self.targets, f'//{self.package}:{name} defined twice'
      self.targets[key] = _Target(package=self.package, name=name, kind=kind,
                                  attrs=attrs)
    return rule

  def _glob(self, include, exclude=(), exclude_directories=1,
            allow_empty=True):
    del exclude_directories, allow_empty
    package_dir = REPO_ROOT / self.package
    subpackages = [d for d in _package_dirs()
                   if d != package_dir and package_dir in d.parents]
    selected = set()
    for directory, files in _walk(package_dir):
      if any(directory == s or s in directory.parents for s in subpackages):
        continue
      for name in files:
        rel = (directory / name).relative_to(package_dir).as_posix()
        if (any(_glob_match(rel, p) for p in include) and
            not any(_glob_match(rel, p) for p in exclude)):
          selected.add(rel)
    return [_Globbed(name) for name in sorted(selected)]

  def _load(self, label, *symbols, **aliases):
    module = self._load_bzl(self._label_path(label))
    scope = self._current_scope
    for symbol in symbols:
      scope[symbol] = module[symbol]
    for alias, symbol in aliases.items():
      scope[alias] = module[symbol]

  def _load_bzl(self, path):
    if path not in self._bzl_cache:
      scope = {'native': self.native, 'fail': _fail}
      exec(compile(path.read_text(), str(path), 'exec'), scope)  # pylint: disable=exec-used
      self._bzl_cache[path] = scope
    return self._bzl_cache[path]

  def _evaluate_build(self, package_dir):
    self.package = package_dir.relative_to(REPO_ROOT).as_posix()
    if self.package == '.':
      self.package = ''
    scope = {'load': self._load, 'fail': _fail, 'glob': self.native.glob,
             'package': self.native.package,
             'exports_files': self.native.exports_files}
    scope.update({rule: getattr(self.native, rule) for rule in RULES})
    self._current_scope = scope
    build_file = package_dir / 'BUILD'
    exec(compile(build_file.read_text(), str(build_file), 'exec'), scope)  # pylint: disable=exec-used

  # Labels.

  def resolve(self, package, label):
    """(package, name) of a label written in `package`; None if external."""
    if label.startswith('@'):
      return None
    if label.startswith('//'):
      path, _, name = label[2:].partition(':')
      return path, name or path.rsplit('/', 1)[-1]
    return package, label.lstrip(':')

  def _label_path(self, label):
    package, name = self.resolve(self.package, label)
    return REPO_ROOT / package / name

  def generated_files(self):
    return {(t.package, out) for t in self.targets.values()
            if t.kind == 'genrule' for out in t.attrs.get('outs', [])}

  def source_files(self, target):
    """Repository paths of the source files in a target's srcs."""
    files = []
    for label in target.attrs.get('srcs', []):
      key = self.resolve(target.package, label)
      if key and key not in self.targets and key not in self.generated_files():
        files.append(pathlib.Path(*filter(None, key)).as_posix())
    return files


def _glob_match(path, pattern):
  """Bazel's glob semantics: `*` within a path segment, `**` any segments."""
  if pattern.endswith('**'):
    pattern += '/*'
  regex = ''
  for part in pattern.split('/'):
    if part == '**':
      regex += '(?:[^/]+/)*'
    else:
      regex += fnmatch.translate(part)[4:-3].replace('.*', '[^/]*') + '/'
  return re.fullmatch(regex[:-1], path) is not None


def _fail(message):
  raise AssertionError(message)


@pytest.fixture(scope='module')
def workspace():
  return _Workspace()


def _rel(path):
  return pathlib.Path(path).relative_to(REPO_ROOT).as_posix()


def _files(top, pattern):
  return [_rel(d / f) for d, files in _walk(REPO_ROOT / top)
          for f in files if fnmatch.fnmatch(f, pattern)]


def test_bazel_files_are_python_syntax():
  names = ('BUILD', 'WORKSPACE')
  paths = [d / f for d, files in _walk() for f in files
           if f in names or f.endswith('.bzl')]
  for ignored in _ignored_dirs():
    paths += [p for p in (REPO_ROOT / ignored).rglob('*')
              if p.name in names or p.suffix == '.bzl']
  assert len(paths) >= 10
  for path in paths:
    ast.parse(path.read_text(), filename=str(path))


def test_workspace_downloads_nothing():
  text = (REPO_ROOT / 'WORKSPACE').read_text()
  code = '\n'.join(line for line in text.splitlines()
                   if not line.lstrip().startswith('#'))
  assert not re.search(r'http_archive|git_repository|http_file|pip_parse|'
                       r'load\(', code), 'WORKSPACE must work offline'


def test_every_python_directory_is_a_package():
  """Each directory of deeplab_sp/ with .py files, and of tests/ with test
  files, has its BUILD file (copy the template of deeplab_sp/py_package.bzl
  or tests/pytest.bzl)."""
  missing = [_rel(d) for d, files in _walk(REPO_ROOT / 'deeplab_sp')
             if any(f.endswith('.py') for f in files) and 'BUILD' not in files]
  missing += [_rel(d) for d, files in _walk(REPO_ROOT / 'tests')
              if any(fnmatch.fnmatch(f, 'test_*.py') for f in files)
              and 'BUILD' not in files]
  assert not missing, f'directories without a BUILD file: {missing}'


def test_no_package_without_modules():
  """A BUILD file left behind in deeplab_sp/ after its modules moved."""
  stale = [_rel(d) for d, files in _walk(REPO_ROOT / 'deeplab_sp')
           if 'BUILD' in files and not any(f.endswith('.py') for f in files)]
  assert not stale, f'BUILD files left in directories without modules: {stale}'


def test_every_module_and_tool_is_in_a_target(workspace):
  covered = {f for t in workspace.targets.values()
             if t.kind.startswith('py_') for f in workspace.source_files(t)}
  expected = [p for p in _files('deeplab_sp', '*.py')
              if not p.endswith('_pb2.py')]
  expected += [p for p in _files('tools', '*.py') if '/' not in p[6:]]
  expected += _files('tests', 'test_*.py')
  missing = sorted(set(expected) - covered)
  assert not missing, f'in no py_library/py_binary/py_test: {missing}'


def test_every_test_file_has_a_py_test(workspace):
  tested = {f for t in workspace.targets.values() if t.kind == 'py_test'
            for f in workspace.source_files(t)}
  missing = sorted(set(_files('tests', 'test_*.py')) - tested)
  assert not missing, f'test files without a py_test: {missing}'


def test_slow_tests_have_slow_targets(workspace):
  """A file with @pytest.mark.slow is in its BUILD file's `slow` list."""
  slow_files = {f for t in workspace.targets.values() if t.kind == 'py_test'
                and 'slow' in t.attrs.get('tags', [])
                for f in workspace.source_files(t)}
  marked = {f for f in _files('tests', 'test_*.py')
            if re.search(r'^\s*@pytest\.mark\.slow\b|^pytestmark\b.*\bslow\b',
                         (REPO_ROOT / f).read_text(), re.MULTILINE)}
  missing = sorted(marked - slow_files)
  assert not missing, f'add to `slow` in their BUILD file: {missing}'


def test_named_labels_exist(workspace):
  """Files named in BUILD files exist; labels of targets name defined ones."""
  generated = workspace.generated_files()
  dangling = []
  for target in workspace.targets.values():
    for attr in LABEL_ATTRS:
      labels = target.attrs.get(attr, [])
      for label in [labels] if isinstance(labels, str) else labels:
        if isinstance(label, _Globbed) or label.startswith('$'):
          continue
        key = workspace.resolve(target.package, label)
        if key is None or key in workspace.targets or key in generated:
          continue
        path = REPO_ROOT / key[0] / key[1]
        if attr == 'deps' or not path.is_file():
          dangling.append(f'//{target.package}:{target.name} {attr}: {label}')
  assert not dangling, f'labels that name nothing: {dangling}'


def test_protos_generate_one_module_per_proto(workspace):
  outs = {out for t in workspace.targets.values() if t.kind == 'genrule'
          and t.package == 'deeplab_sp/protos' for out in t.attrs['outs']}
  expected = {p.stem + '_pb2.py'
              for p in (REPO_ROOT / 'protos').glob('*.proto')}
  assert outs == expected, ('protos/defs.bzl PROTO_SRCS must list exactly '
                            'protos/*.proto')


def test_glob_semantics():
  assert _glob_match('a.py', '*.py')
  assert not _glob_match('sub/a.py', '*.py')
  assert _glob_match('sub/deeper/a.textproto', '**/*.textproto')
  assert _glob_match('a.textproto', '**/*.textproto')
  assert _glob_match('x/y', '**')


def _module_level_imports(path):
  """Dotted names a file imports at module level (not inside functions)."""
  names = []
  pending = list(ast.parse(path.read_text(), filename=str(path)).body)
  while pending:
    node = pending.pop()
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names += _imported_names(node)
    elif isinstance(node, (ast.If, ast.Try)):
      pending += node.body + node.orelse + getattr(node, 'finalbody', [])
      for handler in getattr(node, 'handlers', []):
        pending += handler.body
  return names


@functools.lru_cache(maxsize=None)
def _all_imports(path):
  """Dotted names a file imports anywhere, inside functions too."""
  return [name for node in ast.walk(ast.parse(path.read_text(),
                                              filename=str(path)))
          if isinstance(node, (ast.Import, ast.ImportFrom))
          for name in _imported_names(node)]


def _imported_names(node):
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names]
  if node.module and not node.level:
    return [f'{node.module}.{alias.name}' for alias in node.names]
  return []


def _module_file(dotted):
  """The repository path of the deeplab_sp module `dotted` names (a name
  imported from a module resolves to that module), or None."""
  parts = dotted.split('.')
  for end in range(len(parts), 0, -1):
    base = '/'.join(parts[:end])
    for path in (f'{base}.py', f'{base}/__init__.py'):
      if (REPO_ROOT / path).is_file():
        return path
  return None


class _ModuleTargets:
  """The py_library that holds each module file of deeplab_sp.

  A module is found by its file, not by its directory: a package's `:init`
  holds only its `__init__.py`, so a target that reaches `:init` but not the
  package's main target cannot import the package's other modules. And an
  import of a package itself maps to the main target, since an `__init__.py`
  may import its own modules (the builder's does).
  """

  def __init__(self, workspace):
    genrule_outs = {}
    for key, target in workspace.targets.items():
      if target.kind == 'genrule':
        genrule_outs[key] = [f'{key[0]}/{out}' for out in target.attrs['outs']]
    self._holder = {}
    for key, target in workspace.targets.items():
      if target.kind != 'py_library':
        continue
      for source in workspace.source_files(target):
        self._holder.setdefault(source, key)
      for label in target.attrs.get('srcs', []):
        for out in genrule_outs.get(workspace.resolve(key[0], label), []):
          self._holder.setdefault(out, key)

  def __call__(self, dotted):
    """(module file, the target a program needs to import it); or None."""
    path = _module_file(dotted)
    if path is None or not path.startswith('deeplab_sp/'):
      return None
    if path.endswith('/__init__.py'):
      package = path[:-len('/__init__.py')]
      return path, (package, package.rsplit('/', 1)[-1])
    return path, self._holder.get(path)


class _Closures:
  """The targets each target reaches through its deps (itself included)."""

  def __init__(self, workspace):
    self._workspace = workspace
    self._closures = {}

  def __call__(self, key):
    if key not in self._closures:
      self._closures[key] = {key}
      target = self._workspace.targets.get(key)
      for label in (target.attrs.get('deps', []) if target else []):
        dep = self._workspace.resolve(key[0], label)
        if dep:
          self._closures[key] |= self(dep)
    return self._closures[key]


def test_imports_are_in_deps(workspace):
  """What a target's files import from deeplab_sp at module level is in its
  deps, directly or through them: a missing dep passes under pytest (which
  sees the whole tree) and fails only under Bazel's sandbox. Modules of the
  target's own package are exempt (a package's `__init__.py` may import its
  modules, which cannot be a dep of `:init` without a cycle)."""
  closure = _Closures(workspace)
  holder = _ModuleTargets(workspace)
  missing = []
  for key, target in workspace.targets.items():
    if not target.kind.startswith('py_'):
      continue
    for source in workspace.source_files(target):
      if source.endswith('_pb2.py'):
        continue
      for dotted in _module_level_imports(REPO_ROOT / source):
        found = holder(dotted)
        if not found:
          continue
        path, needed = found
        if path.rsplit('/', 1)[0] == key[0]:
          continue
        if needed is None or needed not in closure(key):
          missing.append(f'//{key[0]}:{key[1]} ({source}) imports {dotted}: '
                         f'add {_label(needed, path)} to its deps')
  assert not missing, '\n'.join(sorted(set(missing)))


def _label(key, path):
  if key is None:
    return f'a py_library holding {path}'
  package, name = key
  return f'//{package}' if package.rsplit('/', 1)[-1] == name else (
      f'//{package}:{name}')


def test_imports_inside_functions_reach_every_program(workspace):
  """An import inside a function runs only when called, so a library may
  leave it to the programs that use it (a dep would be a cycle); but every
  binary and test that holds the file must reach the target holding the
  imported module."""
  closure = _Closures(workspace)
  holder = _ModuleTargets(workspace)
  needs = {}  # target -> {(target it needs, module file, the importing file)}

  def needed(key):
    if key not in needs:
      needs[key] = set()
      for source in workspace.source_files(workspace.targets[key]):
        if not source.endswith('_pb2.py'):
          for dotted in _all_imports(REPO_ROOT / source):
            found = holder(dotted)
            if found:
              needs[key].add((found[1], found[0], source))
    return needs[key]

  missing = []
  for key, target in workspace.targets.items():
    if target.kind not in ('py_binary', 'py_test'):
      continue
    members = [m for m in closure(key) if m in workspace.targets]
    reachable = closure(key)
    for member in members:
      for dep, path, source in needed(member):
        if dep is None or dep not in reachable:
          missing.append(f'//{key[0]}:{key[1]} holds {source}, which imports '
                         f'{path}: add {_label(dep, path)} to the deps')
  assert not missing, '\n'.join(sorted(set(missing)))


# A program a test starts, written as a path: tools/x.py,
# 'tools' / 'x.py', 'tools', 'x.py' (the same for trainer/train.py).
_PROGRAM_PATH = re.compile(
    r"""(tools|trainer)(?:/|['"]\s*[/,]\s*['"])([a-z_0-9]+)\.py\b""")


# Test files that name programs to read their source, not to run them.
_READS_PROGRAM_SOURCES = ('tests/test_bazel_files.py',
                          'tests/utils/test_tf_startup.py')


def _code_without_comments(path):
  tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
  return ' '.join(token.string for token in tokens
                  if token.type != tokenize.COMMENT)


def _programs_named(path):
  """Tools and the trainer that a test file starts, by their paths."""
  named = set()
  for folder, stem in _PROGRAM_PATH.findall(_code_without_comments(path)):
    if stem == '__init__':
      continue
    if folder == 'tools' and (REPO_ROOT / 'tools' / f'{stem}.py').exists():
      named.add(f'//tools:{stem}')
    elif folder == 'trainer' and stem == 'train':
      named.add('//deeplab_sp/trainer:train')
  return named


def test_programs_tests_start_are_in_data(workspace):
  """A test that runs tools/X.py (or the trainer) in a subprocess has the
  program's target in its data: Bazel's runfiles hold nothing else."""
  closure = _Closures(workspace)
  missing = []
  for key, target in workspace.targets.items():
    if target.kind != 'py_test' or not key[0].startswith('tests'):
      continue
    data = {'//%s:%s' % workspace.resolve(key[0], label)
            for label in target.attrs.get('data', [])
            if workspace.resolve(key[0], label)}
    for member in closure(key):
      if member not in workspace.targets or not member[0].startswith('tests'):
        continue
      for source in workspace.source_files(workspace.targets[member]):
        if source in _READS_PROGRAM_SOURCES:
          continue
        for program in _programs_named(REPO_ROOT / source):
          if program not in data:
            missing.append(f'//{key[0]}:{key[1]} runs {program} ({source}): '
                           'add it to the data of its BUILD file')
  assert not missing, '\n'.join(sorted(set(missing)))


def test_test_file_names_are_unique():
  """pytest imports test files by basename (tests/ has no __init__.py): two
  files of one name stop the whole suite at collection."""
  names = {}
  for path in _files('tests', 'test_*.py'):
    names.setdefault(pathlib.Path(path).name, []).append(path)
  duplicates = {name: paths for name, paths in names.items() if len(paths) > 1}
  assert not duplicates, f'rename one of each: {duplicates}'


def test_imports_resolve_to_the_target_holding_the_module(workspace):
  """A package's `:init` is not the package: reaching `//deeplab_sp:init`
  (every subpackage does) must not count as reaching deeplab_sp/experiment.py."""
  holder = _ModuleTargets(workspace)
  assert holder('deeplab_sp.experiment.ConfigError') == (
      'deeplab_sp/experiment.py', ('deeplab_sp', 'deeplab_sp'))
  assert holder('deeplab_sp.model.builder') == (
      'deeplab_sp/model/builder/__init__.py',
      ('deeplab_sp/model/builder', 'builder'))
  assert holder('deeplab_sp.protos.config_pb2') == (
      'deeplab_sp/protos/config_pb2.py', ('deeplab_sp/protos', 'protos'))
  assert holder('tensorflow.keras') is None
  closure = _Closures(workspace)
  assert ('deeplab_sp', 'init') in closure(('deeplab_sp/model', 'model'))
  assert ('deeplab_sp', 'deeplab_sp') not in closure(('deeplab_sp/model',
                                                      'model'))

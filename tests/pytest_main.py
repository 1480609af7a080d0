"""The main of the py_test targets: runs pytest on one test file.

Bazel runs it as `pytest_main.py [--only_slow|--skip_slow] <test file>
[pytest args]` with the runfiles tree as working directory (see
tests/pytest.bzl). It

- imports only what the target's deps put in the runfiles: an editable
  install of deeplab_sp in the interpreter's site-packages (tools/setup.sh
  makes one) would otherwise answer the imports the deps miss;
- keeps pytest's temporary directories under $TEST_TMPDIR and writes the
  JUnit XML file Bazel asks for;
- with --skip_slow / --only_slow, runs the tests not marked / marked
  @pytest.mark.slow (a file with both kinds has two targets), where "no test
  selected" is a pass.
"""

import importlib.util
import os
import sys


def _drop_editable_installs():
  sys.meta_path[:] = [
      finder for finder in sys.meta_path
      if not getattr(finder, '__module__', '').startswith('__editable__')
  ]
  sys.path[:] = [entry for entry in sys.path if '__editable__' not in entry]


def _check_package_origin():
  """deeplab_sp, when a dep, must come from the runfiles, not elsewhere."""
  runfiles = os.environ.get('TEST_SRCDIR') or os.environ.get('RUNFILES_DIR')
  spec = importlib.util.find_spec('deeplab_sp')
  if runfiles and spec is not None and spec.origin and not os.path.abspath(
      spec.origin).startswith(os.path.abspath(runfiles) + os.sep):
    raise SystemExit(f'pytest_main: deeplab_sp would be imported from '
                     f'{spec.origin}, outside the runfiles {runfiles}; '
                     f'check PYTHONPATH.')


def main(argv):
  _drop_editable_installs()
  _check_package_origin()
  import pytest  # pylint: disable=g-import-not-at-top

  args = list(argv)
  allow_no_tests = False
  marker = None
  if args and args[0] in ('--skip_slow', '--only_slow'):
    marker = 'not slow' if args.pop(0) == '--skip_slow' else 'slow'
    allow_no_tests = True
  pytest_args = ['-p', 'no:cacheprovider']
  if marker:
    pytest_args += ['-m', marker]
  test_tmpdir = os.environ.get('TEST_TMPDIR')
  if test_tmpdir:
    pytest_args.append(f'--basetemp={os.path.join(test_tmpdir, "pytest")}')
  xml_output = os.environ.get('XML_OUTPUT_FILE')
  if xml_output:
    pytest_args.append(f'--junitxml={xml_output}')
  only = os.environ.get('TESTBRIDGE_TEST_ONLY')  # bazel test --test_filter=
  if only:
    pytest_args += ['-k', only]
  status = pytest.main(pytest_args + args)
  if status == pytest.ExitCode.NO_TESTS_COLLECTED and allow_no_tests:
    status = pytest.ExitCode.OK
  return int(status)


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

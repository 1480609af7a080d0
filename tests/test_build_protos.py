"""The generated protobuf modules must match protos/*.proto."""

import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(*args):
  return subprocess.run(
      [sys.executable, str(REPO_ROOT / 'tools/build_protos.py'), *args],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False)


def test_generated_modules_match_protos():
  result = _run('--check')
  assert result.returncode == 0, result.stderr


def test_check_detects_a_stale_module(tmp_path, monkeypatch):
  sys.path.insert(0, str(REPO_ROOT / 'tools'))
  try:
    import build_protos  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.pop(0)
  package_dir = tmp_path / 'deeplab_sp/protos'
  package_dir.mkdir(parents=True)
  build_protos.generate(str(tmp_path))
  assert build_protos.check(package_dir) == []
  stale = package_dir / 'model_pb2.py'
  stale.write_text(stale.read_text() + '\n# edited by hand\n')
  assert build_protos.check(package_dir) == ['model_pb2.py']
  (package_dir / 'trainer_pb2.py').unlink()
  assert build_protos.check(package_dir) == ['model_pb2.py', 'trainer_pb2.py']


def test_every_message_field_is_documented():
  """Each field of protos/*.proto has a comment line right above it."""
  undocumented = []
  for proto in sorted((REPO_ROOT / 'protos').glob('*.proto')):
    lines = proto.read_text().splitlines()
    for i, line in enumerate(lines):
      stripped = line.strip()
      if stripped.startswith(('optional ', 'repeated ', 'required ')):
        previous = lines[i - 1].strip() if i else ''
        if not previous.startswith('//'):
          undocumented.append(f'{proto.name}:{i + 1}: {stripped}')
  assert not undocumented, '\n'.join(undocumented)

#!/usr/bin/env bash
# Runs Bazel on this repository, offline, with the .venv interpreter.
#
#   bash tools/bazel.sh build //...
#   bash tools/bazel.sh test //... --test_tag_filters=-slow
#   bash tools/bazel.sh test //tests/data:test_synthetic
#
# What it does:
#  1. If `bazel` is not on PATH, installs Debian's Bazel (packages
#     bazel-bootstrap, Bazel 4.2.3, and bazel-platforms) with apt-get; this
#     needs root on Debian/Ubuntu. Elsewhere, install Bazel yourself.
#  2. Makes sure .venv exists (bash tools/setup.sh; skipped when
#     DEEPLAB_SP_VENV names an existing virtual environment to use instead).
#     The Python rules use Bazel's autodetected toolchain, which runs the first
#     `python3` on PATH; the .venv's bin/ goes first on PATH, so builds and
#     tests run with the .venv's TensorFlow, pytest and grpcio-tools.
#  3. Appends --override_repository flags (after the command word) that point
#     the repositories Bazel 4 would otherwise download on first use
#     (rules_cc, rules_java, remote_coverage_tools) at the local stand-ins in
#     tools/bazel_offline/, and `platforms` at Debian's copy in
#     /usr/share/bazel/tools/platforms. With them no build or test touches the
#     network. `bazel coverage` is not supported offline.
#
# Users with internet access and their own Bazel can ignore the stand-ins and
# run plain `bazel` with the .venv's bin/ first on PATH: Bazel then downloads
# the real repositories. The BUILD files use Bazel's native Python rules and
# WORKSPACE, so they need a Bazel that still has both (tested with 4.2.3
# only; 8.x removed them).
#
# DEEPLAB_SP_VENV=/path/to/venv uses that environment instead of .venv (it
# must have the packages of pyproject.toml, with the test extra; without the
# cityscapes extra the test of the official Cityscapes evaluation skips).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

die() { echo "bazel.sh: $*" >&2; exit 1; }

if ! command -v bazel >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 ||
    die "bazel is not installed and this is not a Debian/Ubuntu system; install Bazel 4.2.3 (or 5-7) yourself."
  [[ "$(id -u)" == 0 ]] ||
    die "bazel is not installed; run as root (or: sudo apt-get install bazel-bootstrap bazel-platforms)."
  echo "bazel.sh: installing Debian's bazel-bootstrap and bazel-platforms"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y bazel-bootstrap bazel-platforms
fi

platforms=/usr/share/bazel/tools/platforms
if [[ ! -f "$platforms/WORKSPACE" ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y bazel-platforms
  fi
fi

venv="${DEEPLAB_SP_VENV:-}"
if [[ -n "$venv" ]]; then
  [[ -x "$venv/bin/python3" ]] || die "DEEPLAB_SP_VENV=$venv has no bin/python3."
  venv="$(cd "$venv" && pwd)"
else
  bash tools/setup.sh >&2
  venv="$root/.venv"
fi
export PATH="$venv/bin:$PATH"

offline="$root/tools/bazel_offline"
overrides=(
  "--override_repository=rules_cc=$offline/rules_cc"
  "--override_repository=rules_java=$offline/rules_java"
  "--override_repository=remote_coverage_tools=$offline/remote_coverage_tools"
)
if [[ -f "$platforms/WORKSPACE" ]]; then
  overrides+=("--override_repository=platforms=$platforms")
fi

# Startup options (--output_base=..., before the command word) stay in front.
startup=()
while [[ $# -gt 0 && "$1" == --* ]]; do startup+=("$1"); shift; done
if [[ $# -eq 0 ]]; then
  exec bazel "${startup[@]}"
fi
command_word="$1"
shift
case "$command_word" in
  build|test|run|query|cquery|aquery|coverage|fetch|sync|info|print_action)
    exec bazel "${startup[@]}" "$command_word" "${overrides[@]}" "$@" ;;
  *)
    exec bazel "${startup[@]}" "$command_word" "$@" ;;
esac

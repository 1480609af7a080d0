"""pytest_tests: one py_test per pytest file of a tests/ directory.

Every directory of tests/ with test files has a BUILD file that is this
template, with the deps set to what its tests import or run:

    load("//tests:pytest.bzl", "pytest_tests")

    pytest_tests(
        srcs = glob(["test_*.py"]),
        deps = [
            "//deeplab_sp/data",
        ],
        slow = [
            "test_end_to_end.py",
        ],
    )

For `test_x.py` in tests/d it defines `//tests/d:test_x`, which runs
`pytest tests/d/test_x.py` through tests/pytest_main.py with the runfiles tree
as the working directory, the shared test support (conftest.py,
tiny_experiment.py, pyproject.toml's pytest settings, configs/) in the
runfiles. Tools the tests start as subprocesses are data (their py_binary
targets, which bring their own deps).

slow: files with some tests marked @pytest.mark.slow. Such a file gets two
  targets: `test_x` runs its other tests, `test_x_slow` (size "large", tag
  "slow") the marked ones; `--test_tag_filters=-slow` skips the latter.
  tests/test_bazel_files.py checks that every marked file is in `slow` or
  `all_slow`.
all_slow: files whose tests are all marked slow: one target `test_x`, size
  "large", tag "slow".
manual: {file: reason} for files that cannot run under Bazel; their targets
  are tagged "manual" (left out of //...; still runnable by name).
sizes: {file: size} to override the size ("medium": 300 s; slow targets
  "large": 900 s).
tags: {file: [tag, ...]} more tags of a file's targets.
"""

SUPPORT = [
    "//tests:support",
]

SUPPORT_DATA = [
    "//:pyproject.toml",
    "//configs",
]

def pytest_test(name, src, deps = [], data = [], args = [], tags = [], size = "medium", **kwargs):
    """One py_test that runs pytest on `src` (a file of this package)."""
    native.py_test(
        name = name,
        srcs = ["//tests:pytest_main.py", src],
        main = "//tests:pytest_main.py",
        args = args + ["$(rootpath %s)" % src],
        data = SUPPORT_DATA + data,
        deps = SUPPORT + deps,
        python_version = "PY3",
        size = size,
        tags = tags,
        **kwargs
    )

def pytest_tests(srcs, deps = [], data = [], slow = [], all_slow = [], manual = {}, sizes = {}, tags = {}):
    """A pytest_test per file of srcs (see the module docstring)."""
    file_tags = tags
    for src in srcs:
        name = src[:-len(".py")]
        tags = file_tags.get(src, []) + (["manual"] if src in manual else [])
        size = sizes.get(src, "medium")
        if src in all_slow:
            pytest_test(
                name = name,
                src = src,
                deps = deps,
                data = data,
                size = sizes.get(src, "large"),
                tags = tags + ["slow"],
            )
        elif src in slow:
            pytest_test(
                name = name,
                src = src,
                args = ["--skip_slow"],
                deps = deps,
                data = data,
                size = size,
                tags = tags,
            )
            pytest_test(
                name = name + "_slow",
                src = src,
                args = ["--only_slow"],
                deps = deps,
                data = data,
                size = sizes.get(src, "large"),
                tags = tags + ["slow"],
            )
        else:
            pytest_test(
                name = name,
                src = src,
                deps = deps,
                data = data,
                size = size,
                tags = tags,
            )

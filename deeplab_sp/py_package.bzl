"""py_package: the Bazel targets of one Python package directory.

Every directory of deeplab_sp/ that holds .py files has a BUILD file that is
this template, with the deps set to the packages its modules import:

    load("//deeplab_sp:py_package.bzl", "py_package")

    py_package(
        deps = [
            "//deeplab_sp/protos",
        ],
    )

It defines, for the package `deeplab_sp/a/b`:
  :init        `__init__.py` alone (and the parents' `:init`), what a
               subpackage needs to be importable without depending on the
               modules of its parents (which may import the subpackage);
  :b           every other `*.py` of the directory (a glob, so new and renamed
               modules are covered), plus `:init`; `//deeplab_sp/a/b` names it;
  :testing_utils  testonly, when the directory has `testing_utils.py`:
               helpers for the tests, kept out of `:b`.

deps: labels of the py_library targets the package's modules import (for
  `deeplab_sp.x` that is `//deeplab_sp/x`, for `deeplab_sp.experiment` or
  another top-level module `//deeplab_sp`). Imports made inside functions to
  break an import cycle are left out: Bazel forbids cyclic deps.
init_deps: labels of the packages `__init__.py` itself imports, for a
  package whose `__init__.py` is its interface (e.g. deeplab_sp/model/builder)
  rather than empty.
testing_deps: extra deps of :testing_utils.
srcs: extra sources of :<name>, e.g. generated modules. Files named
  `*_pb2.py` in the directory are never sources (they are generated; see
  deeplab_sp/protos/BUILD).
data: data files of :<name>.
"""

TESTONLY_SRCS = ["testing_utils.py"]

GENERATED_SRCS = ["*_pb2.py"]

def py_package(deps = [], init_deps = [], testing_deps = [], srcs = [], data = []):
    package = native.package_name()
    parts = package.split("/")
    name = parts[-1]
    parent_init = []
    if len(parts) > 1:
        parent_init = ["//%s:init" % "/".join(parts[:-1])]
    native.py_library(
        name = "init",
        srcs = native.glob(["__init__.py"]),
        deps = parent_init + init_deps,
        visibility = ["//visibility:public"],
    )
    native.py_library(
        name = name,
        srcs = native.glob(
            ["*.py"],
            exclude = ["__init__.py"] + TESTONLY_SRCS + GENERATED_SRCS,
        ) + srcs,
        data = data,
        deps = [":init"] + deps,
        visibility = ["//visibility:public"],
    )
    testing_srcs = native.glob(TESTONLY_SRCS)
    if testing_srcs:
        native.py_library(
            name = "testing_utils",
            testonly = True,
            srcs = testing_srcs,
            deps = [":" + name] + testing_deps,
            visibility = ["//visibility:public"],
        )

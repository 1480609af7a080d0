"""The schema files of protos/, for the targets that compile them.

deeplab_sp/protos/BUILD generates one `<name>_pb2.py` per file; a genrule's
outputs must be named, so a new .proto is added here too
(tests/test_bazel_files.py checks that this list is protos/*.proto).
"""

PROTO_SRCS = [
    "config.proto",
    "dataset.proto",
    "evaluator.proto",
    "model.proto",
    "trainer.proto",
]

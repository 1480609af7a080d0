"""Python modules generated from protos/*.proto by tools/build_protos.py."""

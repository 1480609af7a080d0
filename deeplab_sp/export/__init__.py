"""Export: SavedModel for TF Serving, ONNX and TFLite files."""

"""Keras layers of the SP-Transformer."""

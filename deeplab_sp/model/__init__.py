"""The SP-Transformer network and its layers."""

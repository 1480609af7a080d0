"""deeplab_sp: the Superpixel Transformer (arXiv 2309.16889) in TensorFlow."""

__version__ = '0.1.0'

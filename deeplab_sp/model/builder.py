"""Builds the SP-Transformer from a `ModelOptions` proto."""

from deeplab_sp import config as config_lib
from deeplab_sp.model import encoders
from deeplab_sp.model import sp_transformer
from deeplab_sp.model.layers import hypercolumn as hypercolumn_lib
from deeplab_sp.model.layers import superpixel_association
from deeplab_sp.model.layers import superpixel_classifier
from deeplab_sp.model.layers import superpixel_tokenization


def build_model(model_options, num_classes, input_size):
  """Returns an SPTransformer for `model_options` at `input_size` (H, W).

  Raises:
    config.ConfigError: the input size does not divide into the geometry.
    FileNotFoundError / ValueError: bad pretrained weights file.
  """
  geometry = config_lib.model_geometry(model_options, input_size)
  encoder = encoders.build_encoder(model_options.encoder)
  hc = model_options.hypercolumn
  hypercolumn = hypercolumn_lib.Hypercolumn(
      encoder.endpoint_strides, hc.channels, hc.output_stride,
      hc.mlp_hidden_channels, geometry.hypercolumn_height,
      geometry.hypercolumn_width, name='hypercolumn')
  tk = model_options.superpixel_tokenization
  tokenization = superpixel_tokenization.SuperpixelTokenization(
      tk.grid_height, tk.grid_width, geometry.superpixel_height,
      geometry.superpixel_width, tk.num_layers, tk.channels, tk.num_heads,
      tk.ffn_channels, tk.pixel_ffn_channels, tk.implementation,
      tk.dropout_rate, name='tokenization')
  cl = model_options.superpixel_classifier
  classifier = superpixel_classifier.SuperpixelClassifier(
      num_classes, cl.num_layers, cl.num_heads, cl.channels, cl.ffn_channels,
      cl.dropout_rate, name='classifier')
  association = superpixel_association.SuperpixelAssociation(
      model_options.superpixel_association.upsample_logits_before_softmax,
      model_options.superpixel_association.implementation, name='association')
  model = sp_transformer.SPTransformer(
      encoder, hypercolumn, tokenization, classifier, association,
      hc.output_stride, tk.grid_height, tk.grid_width, name='sp_transformer')
  if model_options.encoder.pretrained_weights:
    encoder.load_pretrained(model_options.encoder.pretrained_weights)
  return model

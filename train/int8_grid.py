"""Training the backbone's convolution weights onto the int8 grid (quantization-aware, weights only).

What this answers (issue 4, measured on the deployable mitdb-rhythm4 model): most of the int8
model's disagreement with its float self comes from the rounding of the convolution weights,
not from the activations. Rounding only the kernels of the float Keras model, per output
channel to 255 levels as the TFLite converter does, already flipped 1.6 % of the held-out
windows; int16 activations with int8 weights flipped about as many.

The remedy: after the ordinary training, a few more epochs in which every convolution of the
backbone computes with its kernel rounded to the int8 grid (the straight-through estimator: the
forward pass sees the rounded kernel, the gradient updates the float kernel as if no rounding
happened). The model that is saved holds the rounded kernels. The converter's per-channel
quantization then reproduces them exactly: it folds the frozen BatchNorm into the kernel, a
positive or negative factor per output channel, and symmetric per-channel rounding commutes with
such a factor. So the saved float model and its int8 conversion share their weights; what
remains between them is the rounding of the activations.

The dense head stays float in training; the converter quantizes its 256 x n weights per tensor.
"""

import numpy as np

INT8_LEVELS = 127
"""Symmetric int8 weights use -127..127 (TFLite's narrow range for weights)."""


def kernel_axes(layer):
    """The axes a layer's kernel is reduced over for one scale per output channel."""
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return (0, 1, 3)  # kernel (rows, cols, channels, multiplier): one scale per channel
    return (0, 1, 2)  # Conv2D kernel (rows, cols, in, out): one scale per output channel


def snap_kernel(kernel, axes):
    """``kernel`` rounded to the symmetric int8 grid of its own per-channel scale (numpy)."""
    kernel = np.asarray(kernel, dtype=np.float32)
    scale = np.abs(kernel).max(axis=axes, keepdims=True) / INT8_LEVELS
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return (np.round(kernel / scale) * scale).astype(np.float32)


def _fake_int8(kernel, axes):
    """Forward: the kernel on its int8 grid; backward: identity (straight-through)."""
    from keras import ops

    scale = ops.stop_gradient(ops.max(ops.abs(kernel), axis=axes, keepdims=True) / INT8_LEVELS)
    scale = ops.where(scale > 0, scale, ops.ones_like(scale))
    return kernel + ops.stop_gradient(ops.round(kernel / scale) * scale - kernel)


def _grid_layer_classes():
    """Conv2D and DepthwiseConv2D subclasses that compute with their kernel on the int8 grid."""
    import keras
    from keras import ops

    class GridConv2D(keras.layers.Conv2D):
        def call(self, inputs):
            outputs = self.convolution_op(inputs, _fake_int8(self.kernel, (0, 1, 2)))
            if self.use_bias:
                outputs = ops.add(outputs, self.bias)
            return self.activation(outputs) if self.activation is not None else outputs

    class GridDepthwiseConv2D(keras.layers.DepthwiseConv2D):
        def call(self, inputs):
            outputs = ops.depthwise_conv(inputs, _fake_int8(self.kernel, (0, 1, 3)), strides=self.strides,
                                         padding=self.padding, dilation_rate=self.dilation_rate,
                                         data_format=self.data_format)
            if self.use_bias:
                outputs = ops.add(outputs, self.bias)
            return self.activation(outputs) if self.activation is not None else outputs

    return {keras.layers.DepthwiseConv2D: GridDepthwiseConv2D, keras.layers.Conv2D: GridConv2D}


def grid_model(model):
    """A twin of a :func:`ecgedge.train.models.build_model` model whose backbone convolutions
    compute on the int8 grid.

    The twin has its own convolution layers (copies of ``model``'s, kernels included) and shares
    every other layer with ``model``: the frozen BatchNorm, the activations and the dense head.
    Train the twin, then :func:`snap_into` copies its kernels, rounded, back into ``model``.

    Returns
    -------
    (twin, pairs): the keras.Model and the list of (twin layer, layer of ``model``) convolution pairs.
    """
    import keras

    classes = _grid_layer_classes()
    pairs = []

    def clone_backbone_layer(layer):
        for base, grid in classes.items():
            if type(layer) is base:
                twin = grid.from_config(layer.get_config())
                pairs.append((twin, layer))
                return twin
        return layer

    def clone_outer_layer(layer):
        if layer.name == "backbone":
            return keras.models.clone_model(layer, clone_function=clone_backbone_layer)
        return layer

    twin = keras.models.clone_model(model, clone_function=clone_outer_layer)
    for grid_layer, layer in pairs:
        grid_layer.set_weights(layer.get_weights())
        grid_layer.trainable = layer.trainable
    return twin, pairs


def snap_into(pairs):
    """Copy each twin convolution's kernel, rounded to the int8 grid, into its original layer."""
    for grid_layer, layer in pairs:
        weights = grid_layer.get_weights()
        weights[0] = snap_kernel(weights[0], kernel_axes(layer))
        layer.set_weights(weights)

"""The backbone's convolution kernels rounded to the int8 grid after training (weights only).

What this answers (issue 4, measured on the deployable mitdb-rhythm4 model): most of the int8
model's disagreement with its float self comes from the rounding of the convolution weights,
not from the activations. Rounding only the kernels of the float Keras model, per output
channel to 255 levels as the TFLite converter does, already flipped 1.6 % of the held-out
windows; int16 activations with int8 weights flipped about as many.

The remedy: after training, every convolution kernel of the backbone is rounded to its int8
grid, and the model that is saved holds the rounded kernels. The converter's per-channel
quantization then reproduces them exactly: it folds the frozen BatchNorm into the kernel, a
positive or negative factor per output channel, and symmetric per-channel rounding commutes with
such a factor. So the saved float model and its int8 conversion share their weights; what
remains between them is the rounding of the activations.

The dense head stays float; the converter quantizes its 256 x n weights per tensor. (Training a
few more epochs with rounded kernels in the forward pass, straight-through, was measured and
dropped: picked by a few validation patients, it cost the deployable model 3.5 points on its
test patients.)
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


def snap_backbone(model):
    """Round every Conv2D/DepthwiseConv2D kernel of ``model``'s nested "backbone" to its int8 grid, in place.

    Returns
    -------
    int, the number of kernels rounded.
    """
    import keras

    n = 0
    for layer in model.get_layer("backbone").layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            weights = layer.get_weights()
            weights[0] = snap_kernel(weights[0], kernel_axes(layer))
            layer.set_weights(weights)
            n += 1
    return n

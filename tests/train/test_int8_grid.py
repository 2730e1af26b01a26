"""Kernels on the int8 grid: the rounding, the backbone rounded in place, and the converter keeping them exactly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecgedge.train.int8_grid import INT8_LEVELS, kernel_axes, snap_backbone, snap_kernel

CONV_AXES = (0, 1, 2)


def test_snap_kernel_puts_each_output_channel_on_its_own_grid():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(3, 3, 4, 6)) * rng.uniform(0.01, 10.0, size=6)).astype(np.float32)
    q = snap_kernel(w, CONV_AXES)
    scale = np.abs(w).max(axis=CONV_AXES) / INT8_LEVELS
    steps = q / scale
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    np.testing.assert_allclose(np.abs(steps).max(axis=CONV_AXES), INT8_LEVELS, rtol=1e-5)
    assert np.all(np.abs(q - w) <= scale / 2 * (1 + 1e-5))
    assert np.abs(q - w).max() > 0  # it did round
    np.testing.assert_array_equal(snap_kernel(q, CONV_AXES), q)
    np.testing.assert_array_equal(snap_kernel(np.zeros((1, 1, 2, 3)), CONV_AXES), 0.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.05, 20.0), min_size=5, max_size=5), st.lists(st.booleans(), min_size=5, max_size=5))
def test_rounding_commutes_with_a_factor_per_output_channel(magnitudes, negative):
    """The converter folds BatchNorm (a factor per output channel, either sign) into the kernel
    before it rounds: a kernel already on its grid stays on the folded kernel's grid."""
    w = np.random.default_rng(1).normal(size=(3, 3, 2, 5)).astype(np.float32)
    factor = np.where(negative, -1.0, 1.0) * np.asarray(magnitudes)
    q = snap_kernel(w, CONV_AXES)
    np.testing.assert_allclose(snap_kernel(q * factor, CONV_AXES), q * factor, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def small_mobilenet(keras):
    """A MobileNet V1 0.25 classifier (random weights, random frozen BatchNorm statistics)."""
    from ecgedge.train import models

    model = models.build_model("mobilenet_v1_0.25_128", (32, 32, 3), 3, weights="none", fine_tune="all")
    rng = np.random.default_rng(0)
    for layer in model.get_layer("backbone").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.3, 2.0, n) * rng.choice([-1, 1], n), rng.normal(0, 0.5, n),
                               rng.normal(0, 0.5, n), rng.uniform(0.2, 3.0, n)])
    return model


def _conv_layers(model, keras):
    return [layer for layer in model.get_layer("backbone").layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]


def test_snap_backbone_rounds_every_kernel_and_nothing_else(keras, small_mobilenet):
    model = keras.models.clone_model(small_mobilenet)
    model.set_weights(small_mobilenet.get_weights())
    x = np.random.default_rng(2).uniform(-7, 1, size=(8, 32, 32, 3)).astype(np.float32)
    before = np.asarray(model(x, training=False))
    assert snap_backbone(model) == 27  # conv1 + 13 depthwise + 13 pointwise
    for layer, original in zip(_conv_layers(model, keras), _conv_layers(small_mobilenet, keras)):
        kernel = layer.get_weights()[0]
        np.testing.assert_array_equal(snap_kernel(kernel, kernel_axes(layer)), kernel)
        np.testing.assert_array_equal(kernel, snap_kernel(original.get_weights()[0], kernel_axes(layer)))
    np.testing.assert_array_equal(model.get_layer("probabilities").get_weights()[0],
                                  small_mobilenet.get_layer("probabilities").get_weights()[0])
    after = np.asarray(model(x, training=False))
    assert 0 < np.abs(after - before).max() < 0.5  # a small change, not none and not a different model


def _tflite_conv_weights(tflite_bytes):
    """Dequantized weights of each convolution of a converted model, in graph order."""
    from ecgedge.convert.tflite_model import op_code_name, parse_model

    model = parse_model(tflite_bytes)
    sg = model.subgraphs[0]
    out = []
    for op in sg.operators:
        name = op_code_name(model.operatorCodes[op.opcodeIndex])
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            tensor = sg.tensors[op.inputs[1]]
            q = np.frombuffer(bytes(model.buffers[tensor.buffer].data), np.int8).reshape(tensor.shape)
            scale = np.asarray(tensor.quantization.scale, np.float64)
            axis = tensor.quantization.quantizedDimension
            shape = [1] * q.ndim
            shape[axis] = -1
            out.append((name, q * scale.reshape(shape), scale))
    return out


def _folded_kernels(model, keras):
    """Each backbone convolution's kernel times its BatchNorm factor, in TFLite's layout."""
    backbone = model.get_layer("backbone")
    out = []
    for layer in _conv_layers(model, keras):
        bn = backbone.get_layer(layer.name + "_bn")
        gamma, _, _, var = bn.get_weights()
        factor = gamma / np.sqrt(var + bn.epsilon)
        kernel = layer.get_weights()[0].astype(np.float64)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            out.append(np.transpose(kernel * factor[None, None, :, None], (3, 0, 1, 2)))
        else:
            out.append(np.transpose(kernel * factor, (3, 0, 1, 2)))
    return out


def test_int8_conversion_keeps_kernels_on_the_grid_exactly(keras, small_mobilenet):
    """Rounded kernels survive BatchNorm folding and int8 conversion with no further error;
    plain float kernels lose up to half a step."""
    from ecgedge.convert.tflite import keras_to_tflite

    rep = np.random.default_rng(3).uniform(-7, 1, size=(16, 32, 32, 3)).astype(np.float32)
    errors = {}
    for snapped in (False, True):
        model = keras.models.clone_model(small_mobilenet)
        model.set_weights(small_mobilenet.get_weights())
        if snapped:
            snap_backbone(model)
        converted = _tflite_conv_weights(keras_to_tflite(model, "int8", rep))
        expected = _folded_kernels(model, keras)
        assert len(converted) == len(expected) == 27
        errors[snapped] = max(np.abs(w - e).max() / scale.min() for (_, w, scale), e in zip(converted, expected))
    assert errors[False] > 0.2  # steps
    assert errors[True] < 1e-3

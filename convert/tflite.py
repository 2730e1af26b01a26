"""Keras model -> TFLite flatbuffer bytes, in the three variants ecgedge ships."""

import numpy as np

from ecgedge.device.errors import EcgEdgeError

QUANT_MODES = ("int8", "float16", "float32")


def _fixed_batch_converter(tf, model):
    """A converter for ``model`` with its batch dimension fixed to 1.

    ``from_keras_model`` keeps Keras' ``None`` batch, which becomes a -1 shape signature on
    every tensor; the Edge TPU compiler and TFLite Micro want static shapes, and the device
    runs one window at a time anyway. Wrapping the model behind a batch-1 input fixes it.
    """
    import keras

    inputs = keras.Input(batch_shape=(1, *model.input_shape[1:]), name="spectrogram")
    fixed = keras.Model(inputs, model(inputs), name=model.name)
    return tf.lite.TFLiteConverter.from_keras_model(fixed)


def keras_to_tflite(model, quant="int8", representative=None):
    """Convert a Keras model to TFLite bytes.

    Parameters
    ----------
    model : keras.Model with one input and one output.
    quant : "int8" (full integer: int8 weights, activations, input and output, builtin int8
        ops only), "float16" (float16 weights) or "float32".
    representative : ndarray of shape (n, *model input shape[1:]), float32 -- the calibration
        images for "int8" (ignored otherwise).

    Returns
    -------
    bytes, the .tflite flatbuffer; batch size fixed to 1 (static shapes everywhere).
    """
    import tensorflow as tf

    if quant not in QUANT_MODES:
        raise EcgEdgeError(f"quant must be one of {', '.join(QUANT_MODES)}, got {quant!r}")
    converter = _fixed_batch_converter(tf, model)
    if quant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quant == "int8":
        expected = tuple(model.input_shape[1:])
        rep = np.asarray(representative, dtype=np.float32) if representative is not None else None
        if rep is None or rep.ndim != len(expected) + 1 or tuple(rep.shape[1:]) != expected or len(rep) == 0:
            got = None if rep is None else rep.shape
            raise EcgEdgeError(
                f"the representative set must have shape (n, {', '.join(map(str, expected))}) "
                f"with n > 0 to match the model input, got {got}"
            )

        def batches():
            for image in rep:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = batches
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return short_tensor_names(converter.convert())


def short_tensor_names(tflite_bytes):
    """The same model with every tensor except the inputs and outputs named ``t<index>``.

    The converter names each tensor after the Keras ops fused into it, e.g.
    ``model/model/backbone/conv_dw_12_relu/Relu6;model/.../conv_pad_12/Pad``: about 30 KB of
    debug text in a 300 KB int8 model, and nothing a runtime reads. Inputs, outputs and the
    signature keep their names, so ``get_input_details`` and signature runners still work.
    """
    from ecgedge.convert.tflite_model import parse_model, serialize_model

    model = parse_model(tflite_bytes)
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = f"t{index}"
    return serialize_model(model)

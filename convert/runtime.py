"""Reading a converted model's input/output quantization from its bytes, before a bundle exists.

Verification runs bundles through the device's own ``ecgedge.device.runtime.Classifier``; this
module only loads in-memory bytes (the device's ``make_interpreter`` takes a file path),
following the same import chain (``ai_edge_litert``, ``tflite_runtime``, ``tensorflow.lite``).
"""

import numpy as np

from ecgedge.device.errors import EcgEdgeError


def make_interpreter(model_content, source="<bytes>"):
    """A TFLite interpreter with tensors allocated, from the model's bytes.

    Raises EcgEdgeError when no interpreter is installed or the bytes are not a loadable model.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            try:
                from tensorflow.lite import Interpreter
            except ImportError:
                raise EcgEdgeError("running a .tflite model needs an interpreter: pip install ai-edge-litert") from None
    try:
        interpreter = Interpreter(model_content=bytes(model_content))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise EcgEdgeError(f"{source} can not be loaded by the TFLite interpreter ({exc})") from None
    return interpreter


def io_quantization(detail):
    """A tensor detail of the interpreter -> the manifest's {shape, dtype, scale, zero_point}.

    Float tensors have scale 0.0 and zero point 0, as TFLite reports them.
    """
    scale, zero_point = detail["quantization"]
    return {
        "shape": [int(v) for v in detail["shape"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def model_io(model_content, source="<bytes>"):
    """Input and output quantization of a model, read from its tensor details.

    Returns
    -------
    (input, output): two dicts with shape, dtype, scale, zero_point.
    """
    interpreter = make_interpreter(model_content, source)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise EcgEdgeError(f"{source} must have one input and one output, got {len(inputs)} and {len(outputs)}")
    return io_quantization(inputs[0]), io_quantization(outputs[0])


def predict(model_content, images, source="<bytes>"):
    """Class scores of a converted model for ``images``, one window per invoke.

    An int8 model's input is quantized and its output dequantized with the model's own scales
    (``ecgedge.device.quant``, as the device runtime does); a float model runs as it is.

    Returns
    -------
    ndarray of shape (len(images), n_classes), float32.
    """
    from ecgedge.device.quant import dequantize, quantize

    interpreter = make_interpreter(model_content, source)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    in_q, out_q = io_quantization(inp), io_quantization(out)
    scores = []
    for image in images:
        x = np.asarray(image, dtype=np.float32)[None]
        if in_q["dtype"] != "float32":
            x = quantize(x, in_q["scale"], in_q["zero_point"], np.dtype(in_q["dtype"]))
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        scores.append(y if out_q["dtype"] == "float32" else dequantize(y, out_q["scale"], out_q["zero_point"]))
    return np.asarray(scores, dtype=np.float32).reshape(len(scores), -1)

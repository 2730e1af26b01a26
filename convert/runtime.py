"""Reading a converted model's input/output quantization and scores from its bytes, before a
bundle exists.

Verification runs bundles through the device's own ``ecgedge.device.runtime.Classifier``; this
module runs in-memory bytes through the same pieces: the device's interpreter factory
(``ecgedge.device.interpreter.make_interpreter(model_content=...)``), its ``invoke`` and the
int8 arithmetic of ``ecgedge.device.quant``.
"""

import numpy as np

from ecgedge.device import quant
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.interpreter import invoke, make_interpreter


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
    interpreter, _ = make_interpreter(model_content=model_content, source=source)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise EcgEdgeError(f"{source} must have one input and one output, got {len(inputs)} and {len(outputs)}")
    return io_quantization(inputs[0]), io_quantization(outputs[0])


def predict(model_content, images, source="<bytes>"):
    """Class scores of a converted model for ``images``, one window per invoke.

    The steps of the device's ``Classifier.classify_image``: an int8 model's input is quantized
    and its output dequantized (``ecgedge.device.quant``) with the model's own scales; a float
    model runs as it is.

    Returns
    -------
    ndarray of shape (len(images), n_classes), float32.
    """
    interpreter, _ = make_interpreter(model_content=model_content, source=source)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    in_q, out_q = io_quantization(inp), io_quantization(out)
    scores = []
    for image in images:
        x = quant.model_input(np.asarray(image, dtype=np.float32), in_q["scale"], in_q["zero_point"], in_q["dtype"])
        y = invoke(interpreter, inp, out, x)
        scores.append(quant.model_output(y, out_q["scale"], out_q["zero_point"]))
    return np.asarray(scores, dtype=np.float32).reshape(len(scores), -1)

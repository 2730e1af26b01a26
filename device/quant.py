"""All int8 arithmetic of ecgedge, in one place.

Quantize by round, clip, then cast (a plain ``astype(np.int8)`` wraps 130.2 to -126);
dequantize after widening to int64, so subtracting the zero point can not overflow.
"""

import numpy as np

_LIMITS = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255), np.dtype(np.int16): (-32768, 32767)}


def quantize(x, scale, zero_point, dtype=np.int8):
    """Real values -> integers: ``clip(round(x / scale) + zero_point)``.

    Parameters
    ----------
    x : array_like of float.
    scale : float > 0; zero_point : int; dtype : int8, uint8 or int16.

    Returns
    -------
    ndarray of ``dtype``, same shape as x.
    """
    dtype = np.dtype(dtype)
    if not scale > 0:
        raise ValueError(f"quantization scale must be > 0, got {scale}")
    lo, hi = _LIMITS[dtype]
    q = np.asarray(x, dtype=np.float64) / scale  # one new array, then in place: an image is 400 kB
    np.round(q, out=q)
    q += int(zero_point)
    return np.clip(q, lo, hi, out=q).astype(dtype)


def dequantize(q, scale, zero_point):
    """Integers -> real values: ``(int64(q) - zero_point) * scale``, float32."""
    return ((np.asarray(q).astype(np.int64) - int(zero_point)) * float(scale)).astype(np.float32)


def model_input(image, scale, zero_point, dtype):
    """One image -> the model's input tensor (1, *image.shape) of ``dtype``.

    Integer inputs are quantized with the model's input ``scale`` and ``zero_point``
    (:func:`quantize`); float inputs are only cast.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return quantize(image, scale, zero_point, dtype=dtype)[None]
    return np.asarray(image, dtype=dtype)[None]


def model_output(raw, scale, zero_point):
    """The model's raw output row -> real values, float32: dequantized (:func:`dequantize`) when
    the output is an integer tensor, else only cast."""
    if np.dtype(raw.dtype).kind in "iu":
        return dequantize(raw, scale, zero_point)
    return raw.astype(np.float32)

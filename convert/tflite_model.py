"""Reading and checking ``.tflite`` flatbuffers without running them.

The flatbuffer schema comes with the interpreter wheels (``ai_edge_litert``, else TensorFlow's
copy), so parsing needs no TensorFlow import. Every parse error -- a truncated file, a file that
is not a TFLite model, a buffer pointing past the end -- becomes one EcgEdgeError naming the
file, so the CLI reports it with exit status 2.
"""

from functools import lru_cache
from pathlib import Path

from ecgedge.device.errors import EcgEdgeError

TFLITE_IDENTIFIER = b"TFL3"


@lru_cache(maxsize=1)
def schema():
    """The generated Python module of the TFLite flatbuffer schema (``schema_py_generated``)."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated
        except ImportError:
            raise EcgEdgeError(
                "reading .tflite files needs the TFLite schema: pip install ai-edge-litert "
                "(or tensorflow)"
            ) from None
    return schema_py_generated


def _enum_names(enum_class):
    """Reverse map of a flatbuffers enum class: value -> name."""
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


@lru_cache(maxsize=1)
def builtin_op_names():
    """BuiltinOperator value -> name, e.g. 3 -> ``CONV_2D``."""
    return _enum_names(schema().BuiltinOperator)


@lru_cache(maxsize=1)
def tensor_type_names():
    """TensorType value -> name, e.g. 9 -> ``INT8``."""
    return _enum_names(schema().TensorType)


def read_bytes(path):
    """The bytes of a ``.tflite`` file; EcgEdgeError when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise EcgEdgeError(f"{path} not found: give a .tflite file or a bundle folder")
    return path.read_bytes()


def parse_model(data, source="<bytes>"):
    """Parse and sanity-check a TFLite flatbuffer.

    Parameters
    ----------
    data : bytes, the whole ``.tflite`` file.
    source : str, the name used in error messages (usually the file path).

    Returns
    -------
    ``schema_py_generated.ModelT``, the unpacked object tree.

    Raises
    ------
    EcgEdgeError when the bytes are not a TFLite model, are truncated, or reference data
    beyond their end.
    """
    data = bytes(data)
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        head = data[4:8] if len(data) >= 8 else data
        raise EcgEdgeError(
            f"{source} is not a TFLite model (file identifier {head!r}, expected "
            f"{TFLITE_IDENTIFIER!r}; {len(data)} bytes): rebuild it with 'ecgedge convert quantize'"
        )
    fb = schema()
    try:
        model = fb.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:  # flatbuffers raises IndexError, struct.error, ValueError...
        raise EcgEdgeError(
            f"{source} is a corrupt or truncated TFLite model ({type(exc).__name__}: {exc}; "
            f"{len(data)} bytes): copy or rebuild it"
        ) from None
    _check_structure(model, len(data), source)
    _check_buffer_extents(data, source)
    return model


def _check_buffer_extents(data, source):
    """Raise EcgEdgeError when a weight buffer's declared length runs past the end of ``data``.

    The Python flatbuffers reader slices byte vectors, and a slice past the end silently comes
    back short, so a truncated weight buffer would otherwise parse. (Bytes after the last
    buffer are allowed: TFLite metadata appends a zip of associated files there.)
    """
    root = schema().Model.GetRootAs(data, 0)
    for i in range(root.BuffersLength()):
        table = root.Buffers(i)._tab
        field = table.Offset(4)  # Buffer.data
        if field and table.Vector(field) + table.VectorLen(field) > len(data):
            raise EcgEdgeError(
                f"{source} is truncated: weight buffer {i} ends at byte "
                f"{table.Vector(field) + table.VectorLen(field)}, the file has {len(data)} bytes; "
                "copy or rebuild it"
            )


def _check_structure(model, size, source):
    """Raise EcgEdgeError when the parsed model can not be complete."""
    if not model.subgraphs:
        raise EcgEdgeError(f"{source} has no subgraph: it is not a usable TFLite model")
    n_buffers = len(model.buffers or [])
    for buf in model.buffers or []:
        # Models over 2 GB keep tensor data after the flatbuffer, addressed by offset/size.
        if buf.offset and buf.offset + buf.size > size:
            raise EcgEdgeError(
                f"{source} is truncated: a weight buffer ends at byte {buf.offset + buf.size}, "
                f"the file has {size} bytes"
            )
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            if t.buffer >= n_buffers:
                raise EcgEdgeError(
                    f"{source} is corrupt: tensor {t.name!r} uses buffer {t.buffer} of {n_buffers}"
                )


def load_model(path):
    """Read and parse a ``.tflite`` file; returns (bytes, ModelT)."""
    data = read_bytes(path)
    return data, parse_model(data, str(path))


def serialize_model(model):
    """A ``ModelT`` back to ``.tflite`` bytes (used to write deliberately edited copies)."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def op_code_name(op_code):
    """Name of an OperatorCode: the builtin name, or ``CUSTOM:<name>``."""
    code = max(op_code.builtinCode, op_code.deprecatedBuiltinCode)
    name = builtin_op_names().get(code, f"UNKNOWN_{code}")
    if name == "CUSTOM":
        custom = op_code.customCode.decode() if isinstance(op_code.customCode, bytes) else op_code.customCode
        return f"CUSTOM:{custom}"
    return name


def tensor_name(tensor):
    """A tensor's name as str."""
    name = tensor.name
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def conv_weight_channel_scales(model):
    """Number of quantization scales of each convolution's weights.

    Per-channel quantization gives one scale per output channel; per-tensor gives one.

    Returns
    -------
    list of (op name, weight tensor name, n_scales, n_output_channels).
    """
    convs = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}
    out = []
    for sg in model.subgraphs:
        for op in sg.operators or []:
            name = op_code_name(model.operatorCodes[op.opcodeIndex])
            if name not in convs:
                continue
            w = sg.tensors[op.inputs[1]]
            n_scales = 0 if w.quantization is None or w.quantization.scale is None else len(w.quantization.scale)
            channels = int(w.shape[-1] if name == "DEPTHWISE_CONV_2D" else w.shape[0])
            out.append((name, tensor_name(w), n_scales, channels))
    return out

"""Finding a TFLite interpreter on the device and, when asked, the Edge TPU delegate.

The interpreter module is imported inside :func:`interpreter_module`, in the order LiteRT
(``ai_edge_litert``), the older ``tflite_runtime`` wheel, then full TensorFlow: the first two
are small enough for a Raspberry Pi; TensorFlow is the desktop fallback.
"""

import importlib

from ecgedge.device.errors import EcgEdgeError

# (module holding Interpreter and load_delegate, pip package to install)
INTERPRETER_MODULES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)
EDGETPU_LIBRARY = "libedgetpu.so.1"
INSTALL_HINT = "pip install 'ecgedge[device]' (installs ai-edge-litert)"


def interpreter_module():
    """Return ``(module, name)`` of the first importable interpreter of INTERPRETER_MODULES.

    ``module.Interpreter`` and ``module.load_delegate`` exist on each of them (TensorFlow's
    ``tf.lite`` has ``experimental.load_delegate``; it is mapped to the same name).

    Raises EcgEdgeError with an install hint when none is importable.
    """
    tried = []
    for module_name, package in INTERPRETER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            tried.append(f"{module_name} ({exc.__class__.__name__}: {exc})")
            continue
        return module, module_name
    raise EcgEdgeError(
        f"no TFLite interpreter found (tried {'; '.join(tried)}): {INSTALL_HINT}"
    )


def _load_delegate_function(module):
    load = getattr(module, "load_delegate", None)
    if load is None:
        load = module.experimental.load_delegate
    return load


def wants_edgetpu(model_path, edgetpu=None):
    """Whether to use the Edge TPU: ``edgetpu`` if given, else True for ``*_edgetpu.tflite``."""
    if edgetpu is not None:
        return bool(edgetpu)
    return str(model_path).endswith("_edgetpu.tflite")


def edgetpu_delegate(module):
    """Load the Edge TPU delegate (``libedgetpu.so.1``) through ``module.load_delegate``.

    Raises EcgEdgeError saying how to install the runtime when the library can not be loaded.
    """
    try:
        return _load_delegate_function(module)(EDGETPU_LIBRARY)
    except (ValueError, OSError, RuntimeError) as exc:
        raise EcgEdgeError(
            f"the Edge TPU delegate {EDGETPU_LIBRARY} could not be loaded ({exc}): install the "
            "Edge TPU runtime (apt-get install libedgetpu1-std) and plug in the accelerator, "
            "or pass --cpu-fallback to run on the CPU"
        ) from None


def make_interpreter(model_path=None, edgetpu=None, cpu_fallback=False, num_threads=None, *, model_content=None,
                     source=None):
    """Build and allocate a TFLite interpreter for one model, from its file or its bytes.

    The one interpreter factory of ecgedge: the device runtime loads a bundle's file, the
    conversion checks load bytes not yet written to a bundle (as tflite-micro's
    ``Interpreter.from_file`` / ``from_bytes``).

    Parameters
    ----------
    model_path : str or Path of a ``.tflite`` file, or None when ``model_content`` is given.
    edgetpu : bool or None -- True to require the Edge TPU delegate, False to never use it,
        None to use it for ``*_edgetpu.tflite`` model files only (never for bytes).
    cpu_fallback : bool -- when the Edge TPU is wanted but its delegate does not load, run on
        the CPU instead of raising (an Edge TPU-compiled model runs on the CPU only if it was
        compiled with CPU fallback for all ops).
    num_threads : int or None -- interpreter threads; None leaves the interpreter's default.
    model_content : bytes-like of a ``.tflite`` model, or None when ``model_path`` is given.
    source : str or None -- what to call the model in error messages; default ``model_path``,
        or ``"<bytes>"``.

    Returns
    -------
    (interpreter, info) -- an allocated Interpreter and a dict ``{"module": str,
    "delegate": "edgetpu" | None}`` saying what was used.

    Raises
    ------
    EcgEdgeError when not exactly one of ``model_path`` and ``model_content`` is given, no
    interpreter is installed (saying what to install), the Edge TPU delegate is required and
    does not load, or the model can not be loaded.
    """
    if (model_path is None) == (model_content is None):
        raise EcgEdgeError("make_interpreter takes a model_path or a model_content, exactly one of them")
    if source is None:
        source = str(model_path) if model_path is not None else "<bytes>"
    module, module_name = interpreter_module()
    delegates = []
    if model_path is not None and wants_edgetpu(model_path, edgetpu) or model_path is None and edgetpu:
        try:
            delegates.append(edgetpu_delegate(module))
        except EcgEdgeError:
            if not cpu_fallback:
                raise
    if model_path is not None:
        kwargs = {"model_path": str(model_path)}
    else:
        kwargs = {"model_content": bytes(model_content)}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if num_threads is not None:
        kwargs["num_threads"] = int(num_threads)
    try:
        interpreter = module.Interpreter(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise EcgEdgeError(
            f"{source} could not be loaded by {module_name} ({exc}); the model file may be "
            "corrupt or need a newer interpreter"
        ) from None
    return interpreter, {"module": module_name, "delegate": "edgetpu" if delegates else None}


def invoke(interpreter, input_detail, output_detail, model_input):
    """Run the model once on one input tensor; return a copy of its raw output row.

    Parameters
    ----------
    interpreter : an allocated interpreter from :func:`make_interpreter`.
    input_detail, output_detail : its ``get_input_details()[0]`` and ``get_output_details()[0]``.
    model_input : ndarray of the input tensor's shape (1, ...) and dtype (see
        ``ecgedge.device.quant.model_input``).

    Returns
    -------
    ndarray of shape (n_outputs,), the output tensor's dtype (int8 for an int8 model).
    """
    interpreter.set_tensor(input_detail["index"], model_input)
    interpreter.invoke()
    return interpreter.get_tensor(output_detail["index"])[0].copy()

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


def make_interpreter(model_path, edgetpu=None, cpu_fallback=False, num_threads=None):
    """Build and allocate a TFLite interpreter for one model file.

    Parameters
    ----------
    model_path : str or Path of a ``.tflite`` file.
    edgetpu : bool or None -- True to require the Edge TPU delegate, False to never use it,
        None to use it for ``*_edgetpu.tflite`` models only.
    cpu_fallback : bool -- when the Edge TPU is wanted but its delegate does not load, run on
        the CPU instead of raising (an Edge TPU-compiled model runs on the CPU only if it was
        compiled with CPU fallback for all ops).
    num_threads : int or None -- interpreter threads; None leaves the interpreter's default.

    Returns
    -------
    (interpreter, info) -- an allocated Interpreter and a dict ``{"module": str,
    "delegate": "edgetpu" | None}`` saying what was used.
    """
    module, module_name = interpreter_module()
    delegates = []
    if wants_edgetpu(model_path, edgetpu):
        try:
            delegates.append(edgetpu_delegate(module))
        except EcgEdgeError:
            if not cpu_fallback:
                raise
    kwargs = {"model_path": str(model_path)}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    if num_threads is not None:
        kwargs["num_threads"] = int(num_threads)
    try:
        interpreter = module.Interpreter(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise EcgEdgeError(
            f"{model_path} could not be loaded by {module_name} ({exc}); the model file may be "
            "corrupt or need a newer interpreter"
        ) from None
    return interpreter, {"module": module_name, "delegate": "edgetpu" if delegates else None}

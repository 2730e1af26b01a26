"""Is a ``.tflite`` model ready for the Coral Edge TPU compiler?

Static checks on the flatbuffer (no Edge TPU needed):

1. one subgraph (the compiler maps only the main graph; more subgraphs fall back to the CPU);
2. every tensor is int8/uint8 (int32 allowed only for biases and shape operands) -- float ops
   run on the CPU;
3. every op is in the Edge TPU's supported set (:data:`SUPPORTED_OPS`);
4. static shapes: no -1 in any shape signature;
5. op versions no newer than :data:`MAX_OP_VERSIONS` (what Edge TPU compiler 16 is known to
   accept -- see the table's comment for how it was made and its limits).

If ``edgetpu_compiler`` is on PATH it is also run and its per-op table ("Mapped to Edge TPU")
is parsed. It can not be installed on every machine (x86-64 Debian/Ubuntu only); the report
says plainly when it is absent.
"""

import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ecgedge.convert.tflite_model import load_model, op_code_name, tensor_name, tensor_type_names
from ecgedge.device.bundle import load_bundle

# Operations the Edge TPU supports, from Coral's "TensorFlow models on the Edge TPU"
# (https://coral.ai/docs/edgetpu/models-intro/#supported-operations), as TFLite builtin names.
# Each has further limits there (e.g. Mean: no batch-dimension reduction; FullyConnected: 1-D
# output) that only the compiler checks.
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})

# Highest op version per op that Edge TPU compiler 16 is expected to accept. Made from
# tensorflow/lite/tools/versioning/runtime_version.cc: the highest version whose minimum
# runtime is <= TF 2.5.0, the TensorFlow release Edge TPU compiler/runtime 16 (2021) were built
# against. Limits, honestly: Coral publishes no such table; this is a proxy. A newer version is
# reported as a WARNING ("the compiler may refuse it: 'Operation version not supported'"), not
# as an error, and an op within the table can still be rejected for its parameters.
MAX_OP_VERSIONS = {
    "ADD": 3, "AVERAGE_POOL_2D": 3, "CONCATENATION": 3, "CONV_2D": 5, "DEPTHWISE_CONV_2D": 6,
    "EXPAND_DIMS": 1, "FULLY_CONNECTED": 9, "L2_NORMALIZATION": 2, "LOGISTIC": 3, "LSTM": 4,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 3, "MAXIMUM": 4, "MAX_POOL_2D": 3, "MEAN": 3, "MINIMUM": 4,
    "MUL": 4, "PACK": 3, "PAD": 3, "PRELU": 1, "QUANTIZE": 2, "REDUCE_MAX": 3, "REDUCE_MIN": 3,
    "RELU": 3, "RELU6": 3, "RELU_N1_TO_1": 1, "RESHAPE": 1, "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4, "RSQRT": 2, "SLICE": 5, "SOFTMAX": 3, "SPACE_TO_DEPTH": 2,
    "SPLIT": 4, "SQUEEZE": 2, "STRIDED_SLICE": 5, "SUB": 5, "SUM": 2, "SQUARED_DIFFERENCE": 2,
    "TANH": 3, "TRANSPOSE": 5, "TRANSPOSE_CONV": 3,
}

# The single custom op that edgetpu_compiler puts in place of the ops it maps.
COMPILED_OP = "CUSTOM:edgetpu-custom-op"

QUANTIZED_TYPES = frozenset({"INT8", "UINT8"})
# int32 is the type of quantized biases and of shape/axis operands, which the Edge TPU accepts.
AUXILIARY_TYPES = frozenset({"INT32"})


@dataclass
class EdgeTpuReport:
    """Result of :func:`check_edgetpu`. ``ready`` is True when there is no error.

    ``ops`` maps op name -> {count, version, max_version}; ``compiler`` is None when
    ``edgetpu_compiler`` is not installed, else its parsed result.
    """

    model: str
    ready: bool
    errors: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    ops: dict = field(default_factory=dict)
    subgraphs: int = 0
    input: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    compiler: dict = None

    def to_dict(self):
        return asdict(self)


def _tensor_summary(sg, index):
    """{name, dtype, shape} of one tensor."""
    t = sg.tensors[index]
    return {"name": tensor_name(t), "dtype": tensor_type_names()[t.type], "shape": [int(v) for v in t.shape]}


def _op_table(model):
    """op name -> {count, version, max_version} over all subgraphs."""
    table = {}
    for sg in model.subgraphs:
        for op in sg.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            name = op_code_name(code)
            row = table.setdefault(name, {"count": 0, "version": int(code.version),
                                          "max_version": MAX_OP_VERSIONS.get(name)})
            row["count"] += 1
            row["version"] = max(row["version"], int(code.version))
    return table


def _op_errors_and_warnings(table):
    """Unsupported ops (errors) and op versions above the table (warnings)."""
    errors, warnings = [], []
    for name, row in sorted(table.items()):
        if name == COMPILED_OP:
            warnings.append(f"the model is already compiled for the Edge TPU ({name}); check its source model instead")
        elif name not in SUPPORTED_OPS:
            errors.append(f"op {name} (x{row['count']}) is not in the Edge TPU's supported set; it will run on the CPU")
        elif row["max_version"] is not None and row["version"] > row["max_version"]:
            warnings.append(
                f"op {name} has version {row['version']}, newer than the {row['max_version']} that Edge TPU "
                "compiler 16 is expected to accept (table from TF 2.5 runtime versions); the compiler may "
                "report 'Operation version not supported'"
            )
    return errors, warnings


def _tensor_errors(model):
    """Float/other-typed tensors and dynamic shapes."""
    names = tensor_type_names()
    errors = []
    for s, sg in enumerate(model.subgraphs):
        for t in sg.tensors or []:
            dtype = names[t.type]
            if dtype not in QUANTIZED_TYPES | AUXILIARY_TYPES:
                errors.append(f"tensor {tensor_name(t)!r} is {dtype}, not int8/uint8")
            signature = t.shapeSignature if t.shapeSignature is not None else t.shape
            if signature is not None and np.any(np.asarray(signature) < 0):
                errors.append(f"tensor {tensor_name(t)!r} has a dynamic shape {[int(v) for v in signature]}")
    return errors


def _summarise(errors, limit=8):
    """At most ``limit`` messages, then one line counting the rest."""
    if len(errors) <= limit:
        return errors
    return errors[:limit] + [f"... and {len(errors) - limit} more"]


def check_edgetpu(path, run_compiler=True):
    """Check a ``.tflite`` file (or a bundle folder) for Edge TPU readiness.

    Parameters
    ----------
    path : ``.tflite`` file or bundle folder (its ``model.tflite``, hash-checked).
    run_compiler : run ``edgetpu_compiler`` when it is on PATH.

    Returns
    -------
    EdgeTpuReport.
    """
    path = Path(path)
    model_path = load_bundle(path).model_path if path.is_dir() else path
    data, model = load_model(model_path)
    table = _op_table(model)
    op_errors, warnings = _op_errors_and_warnings(table)
    errors = []
    if len(model.subgraphs) != 1:
        errors.append(f"the model has {len(model.subgraphs)} subgraphs; the Edge TPU compiler maps only one")
    errors += _summarise(_tensor_errors(model)) + op_errors
    sg = model.subgraphs[0]
    report = EdgeTpuReport(
        model=str(model_path), ready=not errors, errors=errors, warnings=warnings, ops=table,
        subgraphs=len(model.subgraphs), input=_tensor_summary(sg, sg.inputs[0]),
        output=_tensor_summary(sg, sg.outputs[0]),
    )
    if run_compiler:
        report.compiler = run_edgetpu_compiler(model_path)
    return report


# One row of the compiler's operation table, e.g. "CONV_2D   14   Mapped to Edge TPU".
_COMPILER_ROW = re.compile(r"^\s*([A-Z][A-Z0-9_]+)\s+(\d+)\s+(.+?)\s*$")


def parse_compiler_log(text):
    """Parse ``edgetpu_compiler -s`` output.

    Returns
    -------
    dict: version (str or None), ops (list of {op, count, status}), mapped (int, ops mapped
    to the Edge TPU), total (int).
    """
    version = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    ops = []
    for line in text.splitlines():
        m = _COMPILER_ROW.match(line)
        if m and m.group(1) not in {"Operator"}:
            ops.append({"op": m.group(1), "count": int(m.group(2)), "status": m.group(3)})
    mapped = sum(r["count"] for r in ops if r["status"].startswith("Mapped to Edge TPU"))
    return {"version": version.group(1) if version else None, "ops": ops, "mapped": mapped,
            "total": sum(r["count"] for r in ops)}


def run_edgetpu_compiler(model_path, timeout_s=300):
    """Run ``edgetpu_compiler -s`` on a copy of the model in a temporary folder.

    Returns
    -------
    dict: installed (bool), message (str) and, when installed, returncode and the parsed log
    (see :func:`parse_compiler_log`).
    """
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return {"installed": False,
                "message": "edgetpu_compiler is not installed (it is not on PATH); the checks above are "
                           "static only. It installs on x86-64 Debian/Ubuntu from Coral's apt repository."}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            proc = subprocess.run([exe, "-s", "-o", tmp, str(model_path)], capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"installed": True, "message": f"edgetpu_compiler failed to run: {exc}"}
    log = proc.stdout + proc.stderr
    result = {"installed": True, "returncode": proc.returncode, "message": log.strip().splitlines()[-1:] or ""}
    result.update(parse_compiler_log(log))
    return result


def format_report(report):
    """The report as text for the terminal."""
    lines = [f"{'READY' if report.ready else 'NOT READY'} for the Edge TPU: {report.model}",
             f"input {report.input['dtype']} {report.input['shape']}, output {report.output['dtype']} "
             f"{report.output['shape']}, {report.subgraphs} subgraph(s)", "", "ops (count, version / max known):"]
    for name, row in sorted(report.ops.items()):
        supported = "supported" if name in SUPPORTED_OPS | {COMPILED_OP} else "NOT SUPPORTED"
        max_v = row["max_version"] if row["max_version"] is not None else "-"
        lines.append(f"  {name:<24} x{row['count']:<4} v{row['version']} / {max_v}  {supported}")
    lines += [f"ERROR: {e}" for e in report.errors] + [f"WARNING: {w}" for w in report.warnings]
    compiler = report.compiler
    if compiler is not None:
        if not compiler["installed"]:
            lines.append(compiler["message"])
        elif "ops" in compiler:
            lines.append(f"edgetpu_compiler {compiler.get('version')}: {compiler['mapped']} of "
                         f"{compiler['total']} ops mapped to the Edge TPU")
        else:
            lines.append(compiler["message"])
    return "\n".join(lines)

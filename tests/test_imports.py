"""The device room imports no training stack, and the CLI's help works without it.

Each check runs in a fresh interpreter, so modules imported by other tests do not count.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ["tensorflow", "scipy", "sklearn", "wfdb", "keras", "pandas", "matplotlib"]

# Makes every HEAVY module unimportable, as on a device where none is installed.
BLOCK_HEAVY = textwrap.dedent(f"""
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {HEAVY!r}:
                raise ImportError(f"blocked for this test: {{name}}", name=name)
    sys.meta_path.insert(0, Block())
""")


def run_python(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_importing_device_leaves_heavy_modules_out():
    code = textwrap.dedent(f"""
        import importlib, json, pkgutil, sys
        import ecgedge.device
        names = sorted(m.name for m in pkgutil.iter_modules(ecgedge.device.__path__, "ecgedge.device."))
        for name in names:
            importlib.import_module(name)
        print(json.dumps({{"modules": names,
                          "heavy": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})}}))
    """)
    report = json.loads(run_python(code))
    assert {"ecgedge.device.dsp", "ecgedge.device.bundle", "ecgedge.device.quant",
            "ecgedge.device.errors"} <= set(report["modules"])
    assert report["heavy"] == []


def test_device_imports_work_with_heavy_modules_blocked():
    code = BLOCK_HEAVY + textwrap.dedent("""
        import importlib, pkgutil
        import ecgedge.device
        for m in pkgutil.iter_modules(ecgedge.device.__path__, "ecgedge.device."):
            importlib.import_module(m.name)
        from ecgedge.device.dsp import SpectrogramConfig, window_image
        import numpy as np
        print(window_image(np.zeros(3600), 360.0, SpectrogramConfig()).shape)
    """)
    assert run_python(code).strip() == "(128, 128, 3)"


def cli_help(*args):
    code = BLOCK_HEAVY + textwrap.dedent(f"""
        import sys
        from ecgedge.cli import cli
        try:
            cli.main(args={list(args)!r}, prog_name="ecgedge")
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print("heavy:", sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
    """)
    return run_python(code)


def test_ecgedge_help_without_training_stack():
    out = cli_help("--help")
    for command in ("data", "train", "convert", "device", "bench", "pipeline"):
        assert f"  {command} " in out
    assert out.rstrip().endswith("heavy: []")


def test_ecgedge_device_help_without_training_stack():
    if not (REPO / "device" / "cli.py").is_file():
        pytest.skip("ecgedge.device.cli (device/cli.py) does not exist yet")
    out = cli_help("device", "--help")
    assert "Usage: ecgedge device" in out
    # pack, push, keygen and sign live in deploy/ and join the group from the root CLI
    for command in ("run", "eval", "bench", "selftest", "pack", "push", "keygen", "sign"):
        assert f"  {command} " in out, command
    assert out.rstrip().endswith("heavy: []")


def test_console_script_help():
    script = Path(sys.executable).with_name("ecgedge")
    if not script.is_file():
        pytest.skip(f"console script {script} not installed (pip install -e .)")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Usage: ecgedge" in result.stdout


# ---------------------------------------------------------------------------------------------
# The room graph: which of our rooms may import which. The README's Layout section and each
# room's __init__.py docstring state it in the words of `graph_line`; tests below hold them to it.

ROOMS = ("device", "train", "convert", "deploy", "pipeline", "benchmarks")
ALLOWED = {
    "device": (),                             # what ships to the device: nothing of ours
    "train": ("device",),
    "convert": ("device", "train"),
    "deploy": ("device",),                    # host-side: pack, push, keys, the arm64 proof
    "pipeline": ("device", "train", "convert"),
    "benchmarks": ("device", "train", "convert", "deploy", "pipeline"),
    "cli": ("device", "train", "convert", "deploy", "pipeline", "benchmarks"),  # ecgedge.cli: every room's commands
}
# Edges that break ALLOWED today and are to be moved by the room restructure (issue 16), as
# (importing module, imported module prefix, why it is tolerated). Empty: none found. An entry
# whose edge no longer exists fails `test_allowed_exceptions_still_exist`, so the list shrinks.
ALLOWED_EXCEPTIONS = []


def room_of(module):
    """The room of one of our module names: one of ROOMS or "cli"; None for the
    root package ``ecgedge`` (its __init__ holds the version and imports nothing) and others."""
    parts = module.split(".")
    if parts[0] != "ecgedge" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in (*ROOMS, "cli") else None


def room_modules(room):
    """``(module name, file)`` of every .py file of a room, scripts in sub-folders included."""
    if room == "cli":
        return [("ecgedge.cli", REPO / "cli.py")]
    out = []
    for path in sorted((REPO / room).rglob("*.py")):
        parts = path.relative_to(REPO / room).with_suffix("").parts
        name = ".".join(("ecgedge", room) + (parts[:-1] if parts[-1] == "__init__" else parts))
        out.append((name, path))
    return out


def violations(edges):
    """The edges ``(importer, imported)`` that ALLOWED forbids and ALLOWED_EXCEPTIONS does not name."""
    bad = []
    for importer, imported in sorted(set(edges)):
        src, dst = room_of(importer), room_of(imported)
        if dst is None or src is None or dst == src or dst in ALLOWED[src]:
            continue
        if any(importer == a and imported.startswith(b) for a, b, _ in ALLOWED_EXCEPTIONS):
            continue
        bad.append(f"{importer} -> {imported} ({src} may import {', '.join(ALLOWED[src]) or 'nothing of ours'})")
    return bad


def static_edges(module, path):
    """``(module, imported)`` for every import statement of ``path``, those inside functions too."""
    import ast

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            edges += [(module, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                from importlib.util import resolve_name

                base = resolve_name("." * node.level + base, package)
            edges.append((module, base))
            edges += [(module, f"{base}.{alias.name}") for alias in node.names]  # may be a submodule
    return edges


def all_static_edges():
    return [e for room in (*ROOMS, "cli") for module, path in room_modules(room) for e in static_edges(module, path)]


def test_static_import_edges_follow_the_room_graph():
    edges = all_static_edges()
    # the collector sees lazy imports: the pipeline imports training inside its stage functions
    assert ("ecgedge.pipeline.pipeline", "ecgedge.train.train") in edges
    assert violations(edges) == []


def test_the_root_package_imports_nothing_of_ours():
    assert [e for e in static_edges("ecgedge", REPO / "__init__.py") if e[1].startswith("ecgedge")] == []


def test_allowed_exceptions_still_exist():
    edges = all_static_edges()
    stale = [(a, b) for a, b, _ in ALLOWED_EXCEPTIONS if not any(x == a and y.startswith(b) for x, y in edges)]
    assert stale == []


# Records every import statement executed while the room's modules are imported: (importing
# module, imported name), relative imports resolved, `from X import y` also as X.y.
RECORD_IMPORTS = textwrap.dedent("""
    import builtins, importlib, importlib.util, json, sys
    edges = set()
    real_import = builtins.__import__

    def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
        importer = (globals or {}).get("__name__") or ""
        target = name
        if level:
            package = (globals or {}).get("__package__") or importer.rpartition(".")[0]
            target = importlib.util.resolve_name("." * level + name, package)
        if importer.startswith("ecgedge"):
            edges.add((importer, target))
            edges.update((importer, f"{target}.{item}") for item in fromlist or ())
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = recording_import
    for module in MODULES:
        importlib.import_module(module)
    print(json.dumps({"edges": sorted(edges), "modules": sorted(m for m in sys.modules if m.startswith("ecgedge"))}))
""")


@pytest.mark.parametrize("room", [*ROOMS, "cli"])
def test_importing_a_room_in_a_fresh_interpreter_follows_the_graph(room):
    modules = [name for name, _ in room_modules(room)]
    report = json.loads(run_python(f"MODULES = {modules!r}\n" + RECORD_IMPORTS))
    assert set(modules) <= set(report["modules"])
    loaded_rooms = {room_of(m) for m in report["modules"]} - {None, room}
    assert loaded_rooms <= set(ALLOWED[room]), sorted(loaded_rooms)
    edges = [tuple(e) for e in report["edges"]]
    if room in ("train", "convert", "deploy"):  # the recorder saw their imports of the rooms below
        assert {room_of(b) for _, b in edges} >= set(ALLOWED[room])
    assert violations(edges) == []


def test_a_forbidden_edge_is_reported():
    assert violations([("ecgedge.device.cli", "ecgedge.deploy.cli"), ("ecgedge.train.data", "ecgedge.device.dsp")]) \
        == ["ecgedge.device.cli -> ecgedge.deploy.cli (device may import nothing of ours)"]
    assert violations([("ecgedge.pipeline.pipeline", "ecgedge.benchmarks.bench_latency")]) \
        == ["ecgedge.pipeline.pipeline -> ecgedge.benchmarks.bench_latency (pipeline may import device, train, convert)"]
    assert violations([("ecgedge.train.cli", "ecgedge.pipeline.pipeline")]) \
        == ["ecgedge.train.cli -> ecgedge.pipeline.pipeline (train may import device)"]


def graph_line(room):
    """The room's row of the graph as the README and the docstrings write it."""
    allowed = ALLOWED[room]
    return f"{room} -> {', '.join(allowed)}" if allowed else f"{room} -> nothing of ours"


def test_readme_layout_states_the_graph():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for room in ALLOWED:
        assert graph_line(room) in layout, graph_line(room)


@pytest.mark.parametrize("room", ROOMS)
def test_room_docstring_states_its_imports(room):
    import ast

    doc = ast.get_docstring(ast.parse((REPO / room / "__init__.py").read_text(encoding="utf-8"))) or ""
    assert f"Imports: {graph_line(room)}" in " ".join(doc.split()), doc


def test_package_docstring_states_the_whole_graph():
    import ast

    doc = ast.get_docstring(ast.parse((REPO / "__init__.py").read_text(encoding="utf-8")))
    for room in ALLOWED:
        assert graph_line(room) in doc, graph_line(room)

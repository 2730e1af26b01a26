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
    assert out.rstrip().endswith("heavy: []")


def test_console_script_help():
    script = Path(sys.executable).with_name("ecgedge")
    if not script.is_file():
        pytest.skip(f"console script {script} not installed (pip install -e .)")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Usage: ecgedge" in result.stdout

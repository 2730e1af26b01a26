"""The Raspberry Pi (arm64) proof under qemu user-mode emulation (slow: minutes).

Runs ``deploy/pi/arm64_proof.py``: builds (or reuses) the arm64 Debian bookworm root filesystem,
packs the bundle for linux-aarch64 / Python 3.11 with every wheel, installs it inside the root
filesystem with no network, runs the self-test and ``device eval`` on a real MIT-BIH record
there and on this host, and requires every window's probabilities to agree within 16 int8
output steps and its label to be equal except at near ties.

The bundle is $ECGEDGE_BUNDLE when set (the real mitdb bundle), else conftest's tiny int8
bundle, whose 2 s windows exercise the same code on the same record.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROOF = REPO / "device" / "pi" / "arm64_proof.py"


def missing_requirements():
    if platform.machine() != "x86_64":
        return f"the proof emulates arm64 on an x86_64 host; this is {platform.machine()}"
    if os.geteuid() != 0:
        return "the proof needs root (debootstrap, chroot)"
    missing = [t for t in ("qemu-aarch64-static", "debootstrap", "chroot", "dpkg-deb") if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt install qemu-user-static debootstrap)"
    return None


@pytest.mark.slow
def test_arm64_offline_install_selftest_and_eval(tiny_bundles, mitdb_dir, tmp_path):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    bundle = os.environ.get("ECGEDGE_BUNDLE") or str(tiny_bundles["int8"].path)
    out = tmp_path / "proof.json"
    res = subprocess.run([sys.executable, str(PROOF), "--bundle", bundle, "--data", str(mitdb_dir),
                          "--records", "100", "--work", str(tmp_path / "work"), "--out", str(out)],
                         capture_output=True, text=True, timeout=3600,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["install"]["exit"] == 0 and result["install"]["network_isolated"]
    assert any("selftest: PASS" in line for line in result["install"]["selftest_lines"])
    assert result["selftest"]["ok"] and result["selftest"]["n"] == 6
    assert result["pack"]["bytes"] < 64 * 2**20
    assert any(r.startswith("numpy==") for r in result["pack"]["requirements"])
    assert any(r.startswith("ai-edge-litert==") for r in result["pack"]["requirements"])
    arm, x86 = result["eval"]["arm64"], result["eval"]["x86_64"]
    assert arm["n_windows"] == x86["n_windows"] > 0
    labels = result["labels"]
    assert labels["windows"] >= x86["n_windows"] > 0
    assert labels["missing"] == 0 and labels["differ_beyond_ties"] == 0
    assert labels["max_abs_prob_diff"] <= labels["tolerance"] == 16 / 256  # int8 output scale 1/256
    # Labels may differ only at near ties; the confusion matrices then differ by those windows.
    moved = sum(abs(a - b) for ra, rb in zip(arm["confusion"], x86["confusion"]) for a, b in zip(ra, rb))
    assert moved <= 2 * labels["differ"]
    assert result["ok"]

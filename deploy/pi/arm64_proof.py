"""The Raspberry Pi (arm64) proof: offline install, self-test and ``device eval`` under emulation.

Usage (root; needs qemu-user-static and debootstrap)::

    python deploy/pi/arm64_proof.py --bundle BUNDLE --data $ECGEDGE_DATA/mitdb \\
        --records 100 201 203 --out arm64-proof.json

Steps, each timed and written to the result JSON:

1. build the arm64 Debian bookworm root filesystem with ``make_rootfs.sh`` (kept when built);
2. ``ecgedge device pack BUNDLE --target linux-aarch64 --python 3.11 --offline`` on this host
   (aarch64 wheels of numpy and ai-edge-litert come from ``pip download --platform``);
3. unpack the pack inside the root filesystem and run its ``install.sh --offline`` there under
   ``qemu-aarch64-static``, in a network namespace without network (``unshare --net``) when
   ``unshare`` works, which proves the install needs nothing from outside the pack;
4. run ``ecgedge device selftest`` and ``ecgedge device eval --json`` on real MIT-BIH records
   inside the root filesystem, and ``device eval`` on this host with the same bundle;
5. compare every window's label and probabilities (``device eval --predictions``): the
   probabilities must agree within the self-test tolerance (16 int8 output steps) and the labels
   must be equal except at near ties, where NEON and AVX kernels may round either way.

There is no binfmt_misc here, so every arm64 program is started explicitly as
``chroot ROOT /usr/bin/qemu-aarch64-static PROGRAM``; install.sh puts the same prefix in front
of the programs it starts (``ECGEDGE_EXEC_PREFIX``). Exit status 0 when the install, the
self-test and the comparison pass, 1 when they do not, 2 for bad input. The result JSON says
whether the labels were identical and lists the first windows that differ.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QEMU = "/usr/bin/qemu-aarch64-static"
DEFAULT_ROOTFS = Path(os.environ.get("ECGEDGE_ROOTFS", Path.home() / ".cache" / "ecgedge" / "arm64-rootfs"))
STAGE = "/tmp/ecgedge-proof"          # inside the root filesystem
PREFIX = "/opt/ecgedge-proof"         # install prefix inside the root filesystem
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
              "LANG": "C.UTF-8", "TF_CPP_MIN_LOG_LEVEL": "2", "ECGEDGE_EXEC_PREFIX": QEMU}


def log(message):
    print(f"arm64-proof: {message}", flush=True)


def fail(message, code=2):
    print(f"arm64-proof: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def tools_missing():
    """Names of the host tools the proof needs and does not find (empty when all present)."""
    need = ["qemu-aarch64-static", "debootstrap", "chroot", "dpkg-deb"]
    return [t for t in need if shutil.which(t) is None]


def rootfs_ready(root):
    return (Path(root) / ".ecgedge-rootfs").is_file() and (Path(root) / "usr/bin/python3").exists()


def run_streamed(cmd, env=None, log_file=None):
    """Run ``cmd`` with its output shown and kept; return (exit status, output text, seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        sys.stdout.write("    | " + line)
        sys.stdout.flush()
        lines.append(line)
    status = proc.wait()
    text = "".join(lines)
    if log_file is not None:
        Path(log_file).write_text(text)
    return status, text, time.perf_counter() - start


def no_network_prefix():
    """``unshare --net`` when this host can make a network namespace, else nothing."""
    if shutil.which("unshare") and subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0:
        return ["unshare", "--net"]
    return []


def in_root(root, *args, offline=False):
    """Command running the arm64 program ``args[0]`` inside ``root`` under qemu."""
    return [*(no_network_prefix() if offline else []), "chroot", str(root), QEMU, *map(str, args)]


def ecgedge_in_root(root, *args):
    venv = f"{PREFIX}/current/venv/bin"
    return in_root(root, f"{venv}/python", f"{venv}/ecgedge", *args, offline=True)


def ecgedge_on_host(*args):
    return [sys.executable, "-c", "from ecgedge.cli import main; main()", *map(str, args)]


def run_json(cmd, env, what):
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        fail(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}", 1)
    return proc.stdout, seconds


def read_predictions(path):
    """{(record, t_start): (label, probs dict or None)} from a ``device eval --predictions`` file."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[(row["record"], row["t_start"])] = (row["label"], row["probs"])
    return out


def compare_predictions(arm_path, x86_path, tolerance):
    """Per-window comparison of the two ``device eval --predictions`` files.

    Returns windows, labels that differ, those of them that are not ties (on both machines the
    two labels' probabilities are within ``tolerance``: different kernels may round a near tie
    either way), windows missing on one side, the largest probability difference and the first
    differences.
    """
    arm, x86 = read_predictions(arm_path), read_predictions(x86_path)
    both = sorted(set(arm) & set(x86))
    differ = [k for k in both if arm[k][0] != x86[k][0]]

    def tie(k):
        (la, pa), (lx, px) = arm[k], x86[k]
        return (pa is not None and px is not None
                and abs(pa[la] - pa[lx]) <= tolerance and abs(px[la] - px[lx]) <= tolerance)

    diffs = [abs(arm[k][1][c] - x86[k][1][c]) for k in both if arm[k][1] and x86[k][1] for c in x86[k][1]]
    return {"windows": len(x86), "differ": len(differ), "differ_beyond_ties": sum(not tie(k) for k in differ),
            "missing": len(set(arm) ^ set(x86)), "tolerance": tolerance,
            "first_differences": [{"record": k[0], "t_start": k[1], "arm64": arm[k][0], "x86_64": x86[k][0],
                                   "probs_arm64": arm[k][1], "probs_x86_64": x86[k][1]} for k in differ[:10]],
            "max_abs_prob_diff": max(diffs, default=0.0)}


def copy_records(data, records, dest):
    dest.mkdir(parents=True, exist_ok=True)
    for rec in records:
        for ext in ("hea", "dat", "atr"):
            src = Path(data) / f"{rec}.{ext}"
            if not src.is_file():
                fail(f"{src} not found: --data must be the mitdb folder holding record {rec}")
            shutil.copy2(src, dest / src.name)
    (dest / "RECORDS").write_text("".join(f"{r}\n" for r in records))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, type=Path, help="model bundle folder")
    parser.add_argument("--data", type=Path, help="mitdb folder (default: $ECGEDGE_DATA/mitdb)")
    parser.add_argument("--records", nargs="+", default=["100", "201", "203"], help="MIT-BIH records to evaluate")
    parser.add_argument("--rootfs", type=Path, default=DEFAULT_ROOTFS, help=f"root filesystem (default {DEFAULT_ROOTFS})")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ecgedge-arm64-proof"), help="host work folder")
    parser.add_argument("--pack", type=Path, help="use this linux-aarch64 offline pack instead of building one")
    parser.add_argument("--out", type=Path, help="write the result JSON here")
    args = parser.parse_args(argv)

    if platform.machine() != "x86_64":
        fail(f"this proof emulates arm64 on an x86_64 host; this is {platform.machine()}")
    if os.geteuid() != 0:
        fail("needs root (debootstrap, chroot): run it with sudo")
    missing = tools_missing()
    if missing:
        fail(f"missing {', '.join(missing)}: apt-get install qemu-user-static debootstrap")
    data = args.data or Path(os.environ.get("ECGEDGE_DATA", Path.home() / ".cache/ecgedge/physionet")) / "mitdb"
    root = args.rootfs.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    result = {"records": args.records, "bundle": str(args.bundle.resolve()), "rootfs": str(root), "steps": {}}

    if not rootfs_ready(root):
        log(f"building the arm64 root filesystem in {root}")
        status, _, secs = run_streamed(["sh", str(HERE / "make_rootfs.sh"), str(root)])
        if status != 0:
            fail(f"make_rootfs.sh failed (exit {status})")
        result["steps"]["rootfs_s"] = round(secs, 1)
    shutil.copy2(QEMU, root / QEMU.lstrip("/"))

    from ecgedge.deploy.pack import build_pack, read_pack_manifest
    from ecgedge.device.bundle import load_bundle
    from ecgedge.device.selftest import probability_tolerance

    if args.pack:
        pack_path, manifest = args.pack, read_pack_manifest(args.pack)
    else:
        pack_path = args.work / "ecgedge-linux-aarch64-offline.tar.gz"
        log(f"packing {args.bundle} for linux-aarch64 / Python 3.11 (offline) -> {pack_path}")
        start = time.perf_counter()
        manifest = build_pack(args.bundle, pack_path, target="linux-aarch64", python="3.11", offline=True)
        result["steps"]["pack_s"] = round(time.perf_counter() - start, 1)
    if manifest["target"]["platform"] != "linux-aarch64" or not manifest["offline"]:
        fail(f"{pack_path} is not an offline linux-aarch64 pack")
    result["pack"] = {"path": str(pack_path), "bytes": pack_path.stat().st_size, "pack_id": manifest["pack_id"],
                      "requirements": manifest["requirements"]}
    log(f"pack {manifest['pack_id']}: {pack_path.stat().st_size / 2**20:.1f} MiB")

    stage = root / STAGE.lstrip("/")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    with tarfile.open(pack_path, "r:gz") as tar:
        tar.extractall(stage, filter="data")
    copy_records(data, args.records, stage / "mitdb")

    offline = bool(no_network_prefix())
    log(f"install.sh --offline inside the root filesystem under qemu ({'in a network namespace with no network' if offline else 'network NOT isolated: unshare unavailable'})")
    status, text, secs = run_streamed(
        in_root(root, "/bin/sh", f"{STAGE}/ecgedge-pack/install.sh", "--prefix", PREFIX, "--offline", "--force",
                offline=True), env=CHROOT_ENV, log_file=args.work / "install.log")
    result["steps"]["install_s"] = round(secs, 1)
    result["install"] = {"exit": status, "network_isolated": offline,
                         "selftest_lines": [ln for ln in text.splitlines() if ln.startswith("selftest:")]}
    if status != 0:
        fail(f"install.sh failed in the root filesystem (exit {status}); log in {args.work / 'install.log'}", 1)

    out, secs = run_json(ecgedge_in_root(root, "device", "selftest", "--json"), CHROOT_ENV, "arm64 selftest")
    result["selftest"] = json.loads(out)
    result["steps"]["selftest_s"] = round(secs, 1)
    log(f"selftest on arm64: {'PASS' if result['selftest']['ok'] else 'FAIL'} "
        f"(max |dp| {result['selftest']['max_abs_diff']:.2e})")

    arm_pred, x86_pred = stage / "predictions-arm64.jsonl", args.work / "predictions-x86_64.jsonl"
    log("device eval on arm64 (emulated)")
    arm_eval, secs = run_json(ecgedge_in_root(
        root, "device", "eval", "--bundle", f"{PREFIX}/current/bundle", "--data", f"{STAGE}/mitdb",
        "--records", ",".join(args.records), "--json", "--predictions", f"{STAGE}/{arm_pred.name}"),
        CHROOT_ENV, "arm64 device eval")
    result["steps"]["eval_arm64_s"] = round(secs, 1)
    log("device eval on x86_64")
    host_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    x86_eval, secs = run_json(ecgedge_on_host(
        "device", "eval", "--bundle", args.bundle, "--data", stage / "mitdb", "--records", ",".join(args.records),
        "--json", "--predictions", x86_pred), host_env, "x86 device eval")
    result["steps"]["eval_x86_s"] = round(secs, 1)
    result["eval"] = {"arm64": json.loads(arm_eval), "x86_64": json.loads(x86_eval)}
    shutil.copy2(arm_pred, args.work / arm_pred.name)
    lab = result["labels"] = compare_predictions(arm_pred, x86_pred, probability_tolerance(load_bundle(args.bundle)))
    keys = ("n_windows", "accuracy", "macro_f1", "confusion")
    result["identical"] = bool(lab["differ"] == 0 and lab["missing"] == 0 and all(
        result["eval"]["arm64"].get(k) == result["eval"]["x86_64"].get(k) for k in keys))
    # The claim: the same windows, probabilities within the tolerance, labels equal except near ties.
    result["ok"] = bool(result["selftest"]["ok"] and lab["missing"] == 0 and lab["differ_beyond_ties"] == 0
                        and lab["max_abs_prob_diff"] <= lab["tolerance"]
                        and result["eval"]["arm64"]["n_windows"] == result["eval"]["x86_64"]["n_windows"])
    log(f"eval arm64 accuracy {result['eval']['arm64']['accuracy']:.4f} macro-F1 {result['eval']['arm64']['macro_f1']:.4f} "
        f"on {result['eval']['arm64']['n_windows']} windows; x86 accuracy {result['eval']['x86_64']['accuracy']:.4f}")
    log(f"per-window labels: {lab['windows']} windows, {lab['differ']} differ ({lab['differ_beyond_ties']} beyond "
        f"near ties), {lab['missing']} missing; max |dp| {lab['max_abs_prob_diff']:.2e} (tolerance {lab['tolerance']:.2e})")
    for d in lab["first_differences"]:
        log(f"  {d['record']} t={d['t_start']} s: arm64 {d['arm64']} {d['probs_arm64']} / x86_64 {d['x86_64']} {d['probs_x86_64']}")
    verdict = "IDENTICAL" if result["identical"] else ("EQUAL UP TO NEAR TIES" if result["ok"] else "DIFFERENT")
    log(f"arm64 vs x86_64: {verdict}; timings {result['steps']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

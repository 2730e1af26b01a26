"""``ecgedge device``: run, evaluate, benchmark and self-test a bundle on the device.

Callbacks parse options and call library functions; the runtime is imported inside them, so
``ecgedge device --help`` imports neither numpy's heavy users nor an interpreter. New commands
join the group with ``@device.command()`` and, when they load a bundle, ``@classifier_options``
plus :func:`load_classifier`. The host-side ``pack``, ``push``, ``keygen`` and ``sign`` live in
``ecgedge.deploy.cli``; the root CLI adds them to this group, so this room imports none of them.
"""

import json
import sys
from pathlib import Path

import click

from ecgedge.device.errors import EcgEdgeError


@click.group()
def device():
    """The on-device runtime: classify ECG from records, files or a live stream."""


TRUST_HELP = ("Ed25519 public key (a .pub file, or a folder of them) one of which must have signed the bundle; "
              "repeatable. Default: $ECGEDGE_TRUSTED_KEYS; with neither, no signature is needed.")


def _remember_trust(ctx, param, value):
    """Keep --trust for :func:`load_classifier`, so the commands need no parameter for it."""
    if value:
        ctx.meta["ecgedge.trust"] = value


def classifier_options(fn):
    """Add --bundle, --edgetpu/--no-edgetpu, --cpu-fallback, --threads, --rhythm-head/--no-rhythm-head, --trust."""
    options = [
        click.option("--bundle", "bundle", required=True, type=click.Path(),
                     help="Bundle folder (model.tflite + model.json) made by 'ecgedge convert'."),
        click.option("--edgetpu/--no-edgetpu", default=None,
                     help="Use the Edge TPU delegate (default: only for *_edgetpu.tflite models)."),
        click.option("--cpu-fallback", is_flag=True,
                     help="Run on the CPU when the Edge TPU delegate can not be loaded."),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="Interpreter threads."),
        click.option("--rhythm-head/--no-rhythm-head", default=True, show_default=True,
                     help="Combine the model with the bundle's rhythm head, when it has one. Without it a "
                          "window costs about 0.6-0.9 ms less DSP, at the accuracy of the model alone."),
        click.option("--trust", multiple=True, type=click.Path(), expose_value=False, callback=_remember_trust,
                     help=TRUST_HELP),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def load_classifier(bundle, edgetpu=None, cpu_fallback=False, threads=None, rhythm_head=True, trust=None):
    """A runtime.Classifier for the options of :func:`classifier_options`.

    ``trust``: public key paths the bundle's signature must match; None takes the command's
    --trust, else ``$ECGEDGE_TRUSTED_KEYS`` (``ecgedge.device.bundle.load_bundle``).
    """
    from ecgedge.device.bundle import load_bundle
    from ecgedge.device.runtime import Classifier

    if trust is None:
        context = click.get_current_context(silent=True)
        trust = context.meta.get("ecgedge.trust") if context is not None else None
    return Classifier(load_bundle(bundle, trusted_keys=trust), edgetpu=edgetpu, cpu_fallback=cpu_fallback,
                      num_threads=threads, rhythm_head=rhythm_head)


MAX_HOP_S = 86400.0  # seconds; --hop beyond a day is a typo, and hop x fs must stay a sane integer


def _stdout_failed(exc):
    """The error for a failed write to standard output (a full disk, a closed pipe).

    Standard output is pointed at /dev/null first, so the interpreter's own flush at exit does
    not fail a second time with a traceback of its own.
    """
    import os
    import sys

    from ecgedge.device.errors import EcgEdgeError

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test runner's buffer)
        pass
    return EcgEdgeError(f"can not write the results to standard output: {exc.strerror or exc}")


def _emit(obj):
    try:
        click.echo(json.dumps(obj))
    except OSError as exc:
        raise _stdout_failed(exc) from None


def _with_input_problems(result, chunks, fs, length):
    """``result`` with the unreadable lines of a text stream that its window covers as the reason.

    ``chunks`` is what :func:`_sample_chunks` returned; only a text stream (``TextStream``)
    reports unreadable lines, each of which stands in the window as one NaN sample.
    """
    import dataclasses

    if not hasattr(chunks, "problems_in"):
        return result
    start = int(round(result.t_start * fs))
    problems = chunks.problems_in(start, start + length)
    if not problems or result.label is not None:
        return result
    more = f" and {len(problems) - 1} more unreadable lines" if len(problems) > 1 else ""
    return dataclasses.replace(result, reason=f"unreadable input: line {problems[0].line} "
                                              f"{problems[0].excerpt}{more} ({result.reason})")


def _sample_chunks(classifier, input_path, fs, lead, fmt, chunk):
    """(fs, iterator of sample chunks) for a file or stdin input."""
    from ecgedge.device.errors import EcgEdgeError
    from ecgedge.device.inputs import STDIN, check_fs, chunks_of, detect_format, read_input, stream_stdin
    from ecgedge.device.labels import pad_to_window

    preference = classifier.bundle.manifest.get("lead") or ()
    if input_path == STDIN:
        fs = check_fs(fs, "standard input")
        return fs, stream_stdin(detect_format(STDIN, fmt), chunk(fs), lead)
    signal = read_input(input_path, fs, lead, fmt, preference)
    length = classifier.window_samples(signal.fs)
    # A recording a little shorter than a window is padded to one, as training did.
    samples = pad_to_window(signal.samples, length) if len(signal.samples) < length else signal.samples
    if samples is None:
        raise EcgEdgeError(
            f"{signal.source} has {len(signal.samples)} samples ({len(signal.samples) / signal.fs:g} s at "
            f"{signal.fs:g} Hz), shorter than half a {classifier.window_s:g} s window ({length} samples)"
        )
    return signal.fs, chunks_of(samples, chunk(signal.fs))


@device.command()
@classifier_options
@click.option("--input", "input_path", required=True, help="WFDB record, .csv, .npy, or '-' for stdin.")
@click.option("--fs", type=str, default=None, help="Input sampling rate, Hz (required unless WFDB).")
@click.option("--lead", default=None, help="Lead name or column index (default: the bundle's lead list).")
@click.option("--hop", "hop_s", type=float, default=None, help="Seconds between windows (default: the bundle's hop).")
@click.option("--format", "fmt", default="auto",
              type=click.Choice(["auto", "wfdb", "csv", "npy", "text", "int16"]),
              help="Input format; stdin is 'text' (one sample per line) or 'int16' (raw little-endian).")
@click.option("--summary", is_flag=True, help="End with rhythm episodes, time per class (e.g. AF burden) and the recording's one answer.")
def run(bundle, edgetpu, cpu_fallback, threads, rhythm_head, input_path, fs, lead, hop_s, fmt, summary):
    """Classify every window of an input: one JSON object per line.

    Each line is {"t_start", "t_end", "label", "probs", "latency_ms"}; windows that can not be
    classified have "label": null and a "reason". With --summary, a last line {"summary":
    {"episodes", "time_s", "burden", "recording"}}: "recording" is the whole input's one answer
    by the bundle's decision rule, {"label" (null: inconclusive), "reason", "probs", ...}.
    An input a little shorter than one window (at least half of it) is padded to one with its mean.
    """
    from ecgedge.device.errors import EcgEdgeError
    from ecgedge.device.decision import RecordingAccumulator
    from ecgedge.device.runtime import EpisodeTracker, StreamingClassifier

    classifier = load_classifier(bundle, edgetpu, cpu_fallback, threads, rhythm_head)
    hop = classifier.hop_s if hop_s is None else hop_s
    if not 0 < hop <= MAX_HOP_S:  # also refuses NaN
        raise EcgEdgeError(f"--hop must be > 0 and at most {MAX_HOP_S:g} seconds, got {hop}")
    fs, chunks = _sample_chunks(classifier, input_path, fs, lead, fmt,
                                lambda rate: max(int(round(hop * rate)), 1))
    stream = StreamingClassifier(classifier, fs, hop)
    # Without --summary no episode is listed: a month-long stream keeps only the sums.
    tracker = EpisodeTracker(classifier.classes, classifier.window_s, hop, **({} if summary else {"max_episodes": 0}))
    recording = RecordingAccumulator(classifier.classes, classifier.decision_rule)
    for chunk in chunks:
        for result in stream.push(chunk):
            result = _with_input_problems(result, chunks, fs, stream.length)
            _emit(result.to_json(classifier.classes))
            tracker.add(result)
            recording.add(result.probs)
    for result in stream.finish():
        _emit(result.to_json(classifier.classes))
    if stream.n_seen < stream.length:
        raise EcgEdgeError(
            f"the input had {stream.n_seen} samples ({stream.n_seen / fs:g} s at {fs:g} Hz), shorter "
            f"than one {classifier.window_s:g} s window ({stream.length} samples)"
        )
    if summary:
        _emit({"summary": {**tracker.summary(), "recording": recording.decision().to_json(classifier.classes)}})


def _split_records(records):
    """``--records 100 --records 201,203`` -> ["100", "201", "203"] (None when not given)."""
    names = [r.strip() for item in records for r in item.split(",") if r.strip()]
    return names or None


def _print_eval(report):
    from ecgedge.device.evaluate import recall_cells

    if "recordings" in report:  # a database labelled per recording: its one-answer scores first
        r = report["recordings"]
        rates = "  ".join(f"{k} {r[k]:.4f}" for k in ("af_se", "af_sp", "challenge_f1") if r.get(k) is not None)
        click.echo(f"recordings {r['n_recordings']}  accuracy {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
                   f"inconclusive {r['inconclusive_rate']:.4f}  {rates}")
    click.echo(f"windows {report['n_windows']}  accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}")
    width = max(len(c) for c in report["labels"])
    click.echo(f"{'class':<{width}}  recall  precision  support   confusion (rows true)")
    for c, row in zip(report["labels"], report["confusion"]):
        pc = report["per_class"][c]
        click.echo(f"{c:<{width}}  {pc['recall']:.4f}  {pc['precision']:.4f}     {pc['support']:>7}   {row}")
    click.echo(f"skipped windows: {json.dumps(report['skipped'])}")
    click.echo("decided by the model " + ("and the rhythm head" if report["rhythm_head"] else "alone"))
    click.echo("per record: accuracy, and correct / windows of each annotated class")
    cell = {c: max(len(c), 9) for c in report["labels"]}
    name = max([len("record"), *map(len, report["records"])])
    click.echo(f"{'record':<{name}}  accuracy  " + "  ".join(f"{c:>{cell[c]}}" for c in report["labels"]))
    for record, scores in report["records"].items():
        accuracy = "-" if scores["accuracy"] is None else f"{scores['accuracy']:.4f}"
        cells = recall_cells(scores, report["labels"])
        click.echo(f"{record:<{name}}  {accuracy:>8}  " + "  ".join(f"{v:>{cell[c]}}" for c, v in
                                                                      zip(report["labels"], cells)))


@device.command(name="eval")
@classifier_options
@click.option("--data", "data_dir", required=True, type=click.Path(),
              help="Database folder with WFDB records and .atr rhythm annotations (e.g. $ECGEDGE_DATA/mitdb).")
@click.option("--records", multiple=True, help="Record names (repeat or comma-separate); default all.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--predictions", type=click.Path(dir_okay=False), default=None,
              help="Also write one JSON line per window: record, t_start, annotation, label, probs.")
def eval_(bundle, edgetpu, cpu_fallback, threads, rhythm_head, data_dir, records, as_json, predictions):
    """Accuracy, macro-F1, per-class recall and confusion against the rhythm annotations."""
    from ecgedge.device.evaluate import evaluate

    classifier = load_classifier(bundle, edgetpu, cpu_fallback, threads, rhythm_head)
    with _Predictions(predictions) as out:
        on_window = None
        if predictions:
            def on_window(record, result, annotation):
                row = {"record": record, "annotation": annotation, **result.to_json(classifier.classes)}
                row.pop("latency_ms")
                out.write(json.dumps(row) + "\n")
        report = evaluate(classifier, data_dir, _split_records(records), on_window)
    try:
        _emit(report) if as_json else _print_eval(report)
    except OSError as exc:
        raise _stdout_failed(exc) from None


class _Predictions:
    """``--predictions F``, written whole or not at all.

    Lines go to a new temporary file in F's folder (exclusive create, never through a link)
    that replaces F only when the evaluation ends well; an error or SIGTERM removes it and
    leaves F as it was. A device or pipe (``/dev/stdout``, a FIFO) is written directly.
    With no path, a context that writes nothing.
    """

    def __init__(self, path):
        from pathlib import Path

        self.path = Path(path) if path else None
        self.file = self.temporary = self._previous_sigterm = None

    def _error(self, exc):
        from ecgedge.device.errors import EcgEdgeError

        return EcgEdgeError(f"can not write the predictions {self.path}: {exc.strerror or exc}")

    def __enter__(self):
        import os
        import signal
        import stat
        import tempfile
        import threading

        if self.path is None:
            return self
        try:
            if self.path.exists() and not stat.S_ISREG(self.path.stat().st_mode):
                self.file = open(self.path, "w")
            else:
                fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
                self.temporary = name
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(fd, 0o666 & ~umask)
                self.file = os.fdopen(fd, "w")
        except OSError as exc:
            self.__exit__(type(exc), exc, None)  # removes the temporary, never renames it
            raise self._error(exc) from None
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._terminated)
        return self

    def _terminated(self, signum, frame):
        from ecgedge.device.errors import EcgEdgeError

        raise EcgEdgeError(f"terminated (SIGTERM) before the end; {self.path} was left as it was")

    def write(self, text):
        try:
            self.file.write(text)
        except OSError as exc:
            raise self._error(exc) from None

    def __exit__(self, exc_type, exc, tb):
        import contextlib
        import os
        import signal

        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        try:
            if self.file is not None and exc_type is None:
                self.file.close()
                if self.temporary is not None:
                    os.replace(self.temporary, self.path)
                    self.temporary = None
        except OSError as err:
            raise self._error(err) from None
        finally:
            if self.file is not None and not self.file.closed:
                with contextlib.suppress(OSError):
                    self.file.close()
            if self.temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.temporary)
        return False


@device.command("bench")
@classifier_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option("-n", "n", type=click.IntRange(min=1), default=200, show_default=True, help="Timed windows.")
@click.option("--fs", type=float, default=360.0, show_default=True, help="Input rate of the synthetic windows, Hz.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic ECG.")
def device_bench(bundle, edgetpu, cpu_fallback, threads, rhythm_head, as_json, n, fs, seed):
    """Median and p90 ms of DSP, invoke and end to end; windows/s, real-time factor, memory."""
    from ecgedge.device.benchmark import measure_window_latency
    from ecgedge.device.inputs import check_fs

    classifier = load_classifier(bundle, edgetpu, cpu_fallback, threads, rhythm_head)
    result = measure_window_latency(classifier, fs=check_fs(fs, "--fs"), n=n, seed=seed)
    if as_json:
        _emit(result)
        return
    for part in ("dsp", "invoke", "end_to_end"):
        click.echo(f"{part:<11} median {result[part]['median_ms']:.3f} ms  p90 {result[part]['p90_ms']:.3f} ms")
    click.echo(f"windows/s {result['windows_per_s']}  real-time factor {result['real_time_factor']}  "
               f"model {result['model_bytes']} bytes  peak RSS {result['peak_rss_mib']} MiB")


def _installed_release():
    """The release folder this ecgedge runs from (PREFIX/releases/<r>/venv/..), or None."""
    release = Path(sys.prefix).parent
    if (release / "bundle" / "model.json").is_file() and (release / "selftest.npz").is_file():
        return release
    return None


@device.command("selftest")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="bundle folder (default: the installed release's)")
@click.option("--windows", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="selftest.npz from the pack (default: the installed release's)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--trust", multiple=True, type=click.Path(), help=TRUST_HELP)
@click.pass_context
def selftest(ctx, bundle, windows, as_json, trust):
    """Classify the windows stored in the pack and compare with the results recorded at pack time.

    Exit 0 when every label and probability matches (within 16 int8 output steps), 1 when
    not, 2 for a missing or mismatched bundle or windows file.
    """
    from ecgedge.device.selftest import run_selftest

    release = _installed_release()
    if bundle is None or windows is None:
        if release is None:
            raise EcgEdgeError("not running from an installed pack: pass --bundle and --windows")
        bundle = bundle or release / "bundle"
        windows = windows or release / "selftest.npz"
    result = run_selftest(bundle, windows, trusted_keys=trust or None)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        for i, row in enumerate(result["windows"]):
            diff = "refused" if row["max_abs_diff"] is None else f"max |dp| {row['max_abs_diff']:.2e}"
            click.echo(f"selftest: window {i}: {row['label']} (pack time {row['label_expected']}), "
                       f"{diff} {'ok' if row['ok'] else 'MISMATCH'}")
        worst = "n/a" if result["max_abs_diff"] is None else f"{result['max_abs_diff']:.2e}"
        click.echo(f"selftest: {'PASS' if result['ok'] else 'FAIL'}: {result['n']} windows of task "
                   f"{result['task']} in {result['seconds']:.2f} s, max |dp| {worst} "
                   f"(tolerance {result['tolerance']:.2e})")
    ctx.exit(0 if result["ok"] else 1)

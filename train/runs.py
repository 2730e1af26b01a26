"""The run directory that ``ecgedge train`` writes and the converter, device and pipeline read.

Layout of RUN_DIR::

    config.json              what was trained: task (with spectrogram), backbone, protocol, seed, ...
    split.json               the deployable model's patient split: {"train", "val", "test"} records
    model.keras              the deployable float model (input: window_image, output: softmax)
    metrics.json             both cross-validation tables, baselines, deployable test metrics
    confusion_matrix.png     row-normalised confusion matrices (CNN and baselines)
    training_curves.png      loss / accuracy per epoch
    folds/<name>.json        one file per finished fold; a re-run resumes from them

A run with ``metrics.json`` is finished and is never overwritten without ``force``; an
unfinished run resumes only with the same configuration.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ecgedge.device.errors import EcgEdgeError

RUN_FILES = (
    "config.json", "split.json", "model.keras", "metrics.json",
    "confusion_matrix.png", "training_curves.png",
)
FOLDS_DIR = "folds"
# Config entries that may differ between a run and its resumption.
VOLATILE_KEYS = ("created", "versions", "data_dir")


@dataclass(frozen=True)
class Run:
    """A finished training run, read back from its directory.

    Attributes
    ----------
    path : Path of RUN_DIR.
    model_path : Path of the deployable ``model.keras``.
    config : dict, config.json.
    task : ecgedge.train.tasks.Task rebuilt from the config.
    split : dict {"train", "val", "test"}: lists of record names.
    metrics : dict, metrics.json.
    """

    path: Path
    model_path: Path
    config: dict
    task: object
    split: dict
    metrics: dict

    def load_model(self):
        """The deployable Keras model (imports keras)."""
        import keras

        return keras.models.load_model(self.model_path)


def write_json(path, obj):
    """Write ``obj`` as indented JSON atomically (a temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path):
    """Parsed JSON of ``path``; EcgEdgeError naming the file if it is missing or broken."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EcgEdgeError(f"{path} does not exist; is {path.parent} a finished run of 'ecgedge train'?") from None
    except json.JSONDecodeError as exc:
        raise EcgEdgeError(f"{path} is not valid JSON ({exc}); re-run 'ecgedge train --force'") from None


def load_run(run_dir):
    """Read a finished run directory.

    Parameters
    ----------
    run_dir : str or Path, a RUN_DIR written by :func:`ecgedge.train.train.train_run`.

    Returns
    -------
    Run.
    """
    from ecgedge.train.tasks import task_from_dict

    path = Path(run_dir)
    if not path.is_dir():
        raise EcgEdgeError(f"run directory {path} does not exist; train one with 'ecgedge train --out {path}'")
    config = read_json(path / "config.json")
    metrics = read_json(path / "metrics.json")
    model_path = path / "model.keras"
    if not model_path.is_file():
        raise EcgEdgeError(f"{model_path} does not exist; the run in {path} has no deployable model")
    task = task_from_dict(config["task"], source=str(path / "config.json"))
    return Run(path, model_path, config, task, read_json(path / "split.json"), metrics)


def _differences(old, new):
    keys = (set(old) | set(new)) - set(VOLATILE_KEYS)
    return sorted(k for k in keys if old.get(k) != new.get(k))


def _clear(path):
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / FOLDS_DIR, ignore_errors=True)


def refuse_finished(out_dir, force=False):
    """EcgEdgeError when ``out_dir`` holds a finished run (metrics.json) and ``force`` is False."""
    path = Path(out_dir)
    if not force and (path / "metrics.json").exists():
        raise EcgEdgeError(
            f"{path} already holds a finished run (metrics.json); choose another --out, "
            "or pass --force to train it again from scratch"
        )


def prepare_run_dir(out_dir, config, force=False):
    """Create or resume RUN_DIR for ``config``; never silently overwrite a finished run.

    Parameters
    ----------
    out_dir : str or Path.
    config : dict, JSON-ready run configuration (written to config.json).
    force : discard whatever run the directory holds and start afresh.

    Returns
    -------
    Path of RUN_DIR, with config.json written and ``folds/`` present.

    Raises
    ------
    EcgEdgeError : the directory holds a finished run, or an unfinished run of another
        configuration, and ``force`` is False.
    """
    path = Path(out_dir)
    refuse_finished(path, force)
    if force:
        _clear(path)
    elif (path / "config.json").exists():
        differ = _differences(read_json(path / "config.json"), json.loads(json.dumps(config)))
        if differ:
            raise EcgEdgeError(
                f"{path} holds an unfinished run with another configuration (differs in: "
                f"{', '.join(differ)}); choose another --out, or pass --force to discard it"
            )
    (path / FOLDS_DIR).mkdir(parents=True, exist_ok=True)
    write_json(path / "config.json", config)
    return path


def fold_path(run_dir, name):
    """Path of the saved result of fold ``name`` (e.g. "cnn-records-3")."""
    return Path(run_dir) / FOLDS_DIR / f"{name}.json"


def load_fold(run_dir, name):
    """The saved result of fold ``name``, or None when it has not finished."""
    path = fold_path(run_dir, name)
    return read_json(path) if path.exists() else None


def save_fold(run_dir, name, result):
    """Save a finished fold's result (JSON-ready dict) so a re-run can skip it."""
    write_json(fold_path(run_dir, name), result)


def versions():
    """Versions of the libraries that produced a run: tensorflow, keras, numpy, sklearn, ecgedge."""
    import keras
    import numpy
    import sklearn
    import tensorflow

    import ecgedge

    return {
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "ecgedge": ecgedge.__version__,
    }

"""Does the bundle's TFLite model still compute what the float Keras model computes?

Both run on the held-out (test split) windows of the run, the images made by the device's
``window_image``; the TFLite model runs through the device's own ``Classifier`` with the manifest's
input/output quantization. The report gives top-1 agreement, the accuracy and confusion matrix of each, the
relative RMS error of the scores and the windows whose scores differ most. For a bundle with a
rhythm head, ``with_rhythm_head`` compares the decisions the device makes (model and rhythm head
combined) with those of the float model combined with the same head.
"""

import numpy as np

from ecgedge.convert import rundir
from ecgedge.convert.runtime import model_io
from ecgedge.device.bundle import load_bundle
from ecgedge.device.errors import EcgEdgeError
from ecgedge.device.metrics import classification_metrics
from ecgedge.device.rhythm import combine, feature_columns
from ecgedge.device.trees import load_trees
from ecgedge.train.data import rhythm_features_of
from ecgedge.train.train import predict_proba

DEFAULT_THRESHOLD = 0.98


def relative_rms_error(reference, other):
    """``rms(other - reference) / rms(reference)`` over all entries (float)."""
    reference = np.asarray(reference, dtype=np.float64)
    denom = np.sqrt(np.mean(reference**2))
    return float(np.sqrt(np.mean((np.asarray(other, dtype=np.float64) - reference) ** 2)) / max(denom, 1e-12))


def largest_differences(float_scores, tflite_scores, y, classes, record, start_s, top_k):
    """The ``top_k`` windows with the largest absolute score difference in any class.

    Returns
    -------
    list of dicts: index, record, start_s, true, float_class, tflite_class, float_score and
    tflite_score (of the float model's class), max_abs_diff.
    """
    diff = np.abs(tflite_scores - float_scores).max(axis=1)
    order = np.argsort(-diff, kind="stable")[:top_k]
    rows = []
    for i in order:
        fc, tc = int(np.argmax(float_scores[i])), int(np.argmax(tflite_scores[i]))
        rows.append({
            "index": int(i),
            "record": str(record[i]),
            "start_s": float(start_s[i]),
            "true": classes[int(y[i])],
            "float_class": classes[fc],
            "tflite_class": classes[tc],
            "float_score": float(float_scores[i, fc]),
            "tflite_score": float(tflite_scores[i, fc]),
            "max_abs_diff": float(diff[i]),
        })
    return rows


def compare(float_scores, tflite_scores, y, classes, record, start_s, threshold=DEFAULT_THRESHOLD, top_k=10):
    """Compare the scores of the float and the TFLite model on the same windows.

    Parameters
    ----------
    float_scores, tflite_scores : ndarray of shape (n, k), float -- class probabilities.
    y : ndarray of shape (n,), int -- true class indices.
    classes : list of k class names.
    record, start_s : sequences of length n -- record name and window start (s) of each window.
    threshold : minimum top-1 agreement for ``passed``.

    Returns
    -------
    dict, JSON-ready: n, agreement, threshold, passed, accuracy {float, tflite, delta},
    confusion {float, tflite}, relative_rms_error, max_abs_diff, largest_differences.
    """
    f, q = np.asarray(float_scores, dtype=np.float64), np.asarray(tflite_scores, dtype=np.float64)
    if f.shape != q.shape or f.ndim != 2 or f.shape[1] != len(classes) or len(y) != len(f):
        raise EcgEdgeError(
            f"scores of shape {f.shape} and {q.shape} do not match {len(y)} windows of {len(classes)} classes"
        )
    if len(f) == 0:
        raise EcgEdgeError("there are no held-out windows to verify on")
    y = np.asarray(y, dtype=np.int64)
    pf, pq = f.argmax(axis=1), q.argmax(axis=1)
    agreement = float(np.mean(pf == pq))
    acc_f, acc_q = float(np.mean(pf == y)), float(np.mean(pq == y))
    return {
        "n": int(len(y)),
        "classes": list(classes),
        "agreement": agreement,
        "threshold": float(threshold),
        "passed": agreement >= threshold,
        "accuracy": {"float": acc_f, "tflite": acc_q, "delta": acc_q - acc_f},
        "confusion": {"float": classification_metrics(y, pf, len(classes))["confusion"].tolist(),
                      "tflite": classification_metrics(y, pq, len(classes))["confusion"].tolist()},
        "relative_rms_error": relative_rms_error(f, q),
        "max_abs_diff": float(np.abs(q - f).max()),
        "largest_differences": largest_differences(f, q, y, classes, record, start_s, top_k),
    }


def device_scores(bundle, images):
    """Class probabilities of the bundle's model through the device runtime.

    ``ecgedge.device.runtime.Classifier`` quantizes each image with the manifest's input
    scale/zero point and dequantizes the output, exactly as on the Raspberry Pi.

    Returns
    -------
    ndarray of shape (len(images), n_classes), float32.
    """
    from ecgedge.device.runtime import Classifier

    classifier = Classifier(bundle)
    return np.stack([classifier.classify_image(image) for image in images]).astype(np.float32)


def _check_bundle_matches_run(bundle, run, model_content, keras_model):
    """Raise EcgEdgeError when the bundle can not be a conversion of this run's model."""
    classes = list(run.task.class_names)
    if bundle.classes != classes:
        raise EcgEdgeError(
            f"bundle {bundle.path} has classes {bundle.classes}, run {run.path} has {classes}: "
            "give the run the bundle was made from"
        )
    model_input, model_output = model_io(model_content, str(bundle.model_path))
    for key, actual in (("input", model_input), ("output", model_output)):
        declared = bundle.manifest[key]
        if (declared["dtype"], declared["shape"]) != (actual["dtype"], actual["shape"]) or not np.isclose(
            declared["scale"], actual["scale"]
        ) or declared["zero_point"] != actual["zero_point"]:
            raise EcgEdgeError(
                f"{bundle.path}/model.json {key} {declared} differs from the model's own {actual}: "
                "rebuild the bundle"
            )
    keras_shape = list(keras_model.input_shape[1:])
    if model_input["shape"][1:] != keras_shape:
        raise EcgEdgeError(
            f"bundle input shape {model_input['shape'][1:]} differs from the run's Keras model {keras_shape}"
        )


def verify_bundle(bundle_path, run_dir, threshold=DEFAULT_THRESHOLD, data_dir=None, top_k=10, split="test"):
    """Float Keras model vs the bundle's TFLite model on the run's held-out windows.

    Parameters
    ----------
    bundle_path : bundle folder (``ecgedge convert quantize`` output).
    run_dir : the training run the bundle was made from.
    threshold : minimum top-1 agreement.
    data_dir : PhysioNet folder or None (ECGEDGE_DATA).
    top_k : windows listed in ``largest_differences``.
    split : the run's split to evaluate on ("test" by default).

    Returns
    -------
    dict, see :func:`compare`, plus bundle, run, quantization and split.
    """
    bundle = load_bundle(bundle_path)
    run = rundir.load_run_dir(run_dir)
    keras_model = rundir.load_keras_model(run.model_path)
    model_content = bundle.model_path.read_bytes()
    _check_bundle_matches_run(bundle, run, model_content, keras_model)
    windows = rundir.load_split_windows(run, split, data_dir)
    images = np.asarray(rundir.images_of(windows, bundle.spectrogram))
    float_scores = predict_proba(keras_model, images, np.arange(len(images)))
    tflite_scores = device_scores(bundle, images)
    report = compare(float_scores, tflite_scores, windows.y, bundle.classes, windows.record, windows.start_s,
                     threshold=threshold, top_k=top_k)
    if bundle.rhythm_head_path is not None:
        features = rhythm_features_of(windows, bundle.spectrogram, progress=False, detector=bundle.beat_detector)
        features = features[:, feature_columns(bundle.rhythm_features)]
        head = load_trees(bundle.rhythm_head_path).predict_proba(features)
        weights = bundle.cnn_weights
        combined = compare(combine(float_scores, head, weights), combine(tflite_scores, head, weights), windows.y,
                           bundle.classes, windows.record, windows.start_s, threshold=threshold, top_k=0)
        report["with_rhythm_head"] = {k: combined[k] for k in ("n", "agreement", "passed", "accuracy", "confusion")}
    report.update(bundle=str(bundle.path), run=str(run.path), quantization=bundle.manifest["quantization"],
                  split=split)
    return report


def _matrix_lines(matrix, classes):
    """A confusion matrix as aligned text lines (rows true, columns predicted)."""
    width = max(6, *(len(c) for c in classes)) + 1
    lines = [" " * width + "".join(c.rjust(width) for c in classes)]
    for name, row in zip(classes, matrix):
        lines.append(name.rjust(width) + "".join(str(v).rjust(width) for v in row))
    return lines


def format_report(report):
    """The verification report as text for the terminal."""
    acc = report["accuracy"]
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [
        f"{verdict}: top-1 agreement {report['agreement']:.4f} (threshold {report['threshold']:.4f}) "
        f"on {report['n']} {report.get('split', 'held-out')} windows",
        f"accuracy: float {acc['float']:.4f}, {report.get('quantization', 'tflite')} {acc['tflite']:.4f} "
        f"(delta {acc['delta']:+.4f})",
        f"scores: relative RMS error {report['relative_rms_error']:.4f}, max |diff| {report['max_abs_diff']:.4f}",
    ]
    if "with_rhythm_head" in report:
        r = report["with_rhythm_head"]
        lines.append(f"with the rhythm head (the device's decisions): agreement {r['agreement']:.4f}, accuracy "
                     f"float {r['accuracy']['float']:.4f}, {report.get('quantization', 'tflite')} "
                     f"{r['accuracy']['tflite']:.4f}")
    for name in ("float", "tflite"):
        lines += ["", f"confusion ({name}; rows true, columns predicted):"]
        lines += _matrix_lines(report["confusion"][name], report["classes"])
    lines += ["", "largest score differences:"]
    for row in report["largest_differences"]:
        lines.append(
            f"  {row['record']} @ {row['start_s']:.1f} s  true {row['true']}: float {row['float_class']} "
            f"({row['float_score']:.3f}) vs tflite {row['tflite_class']} ({row['tflite_score']:.3f} on the float "
            f"class), max |diff| {row['max_abs_diff']:.3f}"
        )
    return "\n".join(lines)

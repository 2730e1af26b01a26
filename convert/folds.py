"""int8 versions of the cross-validation folds: the patient-wise number of the device model.

The deployable model's int8 accuracy covers one fixed patient split. To say how an int8 model
does on unseen patients in general, each fold's float model is converted right after it is
trained (``train_run(..., int8_eval=fold_int8_evaluator(...))``), calibrated on its own
training windows, and run on its own test windows; the pooled result is ``cnn_int8`` in the
run's metrics, beside the float ``cnn``.
"""

import numpy as np

from ecgedge.convert.quantize import calibration_indices
from ecgedge.convert.runtime import predict
from ecgedge.convert.tflite import keras_to_tflite


def fold_int8_evaluator(n_representative, seed=0):
    """A ``train_run`` hook: (model, images, fold, y, float_pred) -> the fold's int8 result.

    Parameters
    ----------
    n_representative : calibration windows, class-balanced from the fold's training windows.
    seed : seeds the calibration draw.

    The returned dict holds ``y_pred`` and ``proba`` (int8 predictions and dequantized scores of
    the fold's test windows, in ``fold.test`` order), ``agreement`` (top-1, with the float predictions) and ``bytes``.
    """

    def evaluate(model, images, fold, y, float_pred):
        picked = fold.train[np.sort(calibration_indices(y[fold.train], n_representative, seed=seed,
                                                        n_classes=model.output_shape[-1]))]
        calibration = np.asarray([images[i] for i in picked], dtype=np.float32)
        model_content = keras_to_tflite(model, "int8", calibration)
        proba = predict(model_content, (images[i] for i in fold.test))
        y_pred = proba.argmax(axis=1)
        return {
            "y_pred": y_pred.astype(int).tolist(),
            "proba": np.round(proba.astype(np.float64), 6).tolist(),
            "agreement": float(np.mean(y_pred == np.asarray(float_pred))),
            "bytes": len(model_content),
            "n_representative": len(picked),
        }

    return evaluate

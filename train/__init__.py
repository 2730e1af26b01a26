"""ecgedge.train: WFDB data, tasks, models, augmentation, protocols, baselines, training.

Imports: train -> device (the spectrogram, labelling, metrics and errors are defined there once).
TensorFlow, scipy, scikit-learn and wfdb are imported inside the functions that need them.
"""

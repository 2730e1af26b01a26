"""ecgedge: ECG rhythm classification from PhysioNet records to an int8 model on the edge.

Subpackages, with imports going one way (``tests/test_imports.py`` checks every edge, lazy
imports inside functions included)::

    cli -> device, train, convert, deploy, pipeline, benchmarks
    benchmarks -> device, train, convert, deploy, pipeline
    pipeline -> device, train, convert
    deploy -> device
    convert -> device, train
    train -> device
    device -> nothing of ours


- :mod:`ecgedge.device` -- the numpy + LiteRT runtime that runs on the device.
- :mod:`ecgedge.train` -- WFDB data, tasks, models, cross-validation and baselines.
- :mod:`ecgedge.convert` -- Keras -> TFLite conversion, bundles and verification.
- :mod:`ecgedge.deploy` -- host-side pack, push, signing keys and the arm64 proof.
- :mod:`ecgedge.pipeline` -- the main job (``ecgedge pipeline``) and its report.
- :mod:`ecgedge.benchmarks` -- ``ecgedge bench``: the device against the desktop reference.
"""

__version__ = "0.1.0"

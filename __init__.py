"""ecgedge: ECG rhythm classification from PhysioNet records to an int8 model on the edge.

Subpackages, with imports going one way (``tests/test_imports.py`` checks every edge, lazy
imports inside functions included)::

    cli -> device, train, convert
    convert -> device, train
    train -> device
    device -> nothing of ours


- :mod:`ecgedge.device` -- the numpy + LiteRT runtime that runs on the device.
- :mod:`ecgedge.convert` -- Keras -> TFLite conversion, bundles and verification.
- :mod:`ecgedge.train` -- WFDB data, tasks, models, cross-validation and baselines.
"""

__version__ = "0.1.0"

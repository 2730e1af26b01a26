"""ecgedge.device: the runtime that runs on a Raspberry Pi or wearable prototype.

numpy and a LiteRT interpreter only: it imports no TensorFlow, scipy, scikit-learn or wfdb.

Imports: device -> nothing of ours (``train`` and ``convert`` stand on it, never the reverse).
"""

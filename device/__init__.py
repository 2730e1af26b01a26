"""ecgedge.device: the runtime that runs on a Raspberry Pi or wearable prototype.

numpy and a LiteRT interpreter only: it imports no TensorFlow, scipy, scikit-learn or wfdb.

Imports: device -> nothing of ours (every other room stands on it, never the reverse; the
host-side ``ecgedge device pack|push|keygen|sign`` live in ``ecgedge.deploy``).
"""

"""ecgedge.convert: Keras -> TFLite, quantization, verification, Edge TPU check, C export, and
the per-fold int8 evaluation that cross-validation uses.

Imports: convert -> device, train (the run folder, data and models of a training run).
"""

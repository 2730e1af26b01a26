"""ecgedge.convert: Keras -> TFLite, verification, Edge TPU check, C export; today also the main
job (``ecgedge pipeline``) and the benchmarks.

Imports: convert -> device, train (the run folder, data and models of a training run).
"""

"""ecgedge.benchmarks: the benchmarks (``ecgedge bench``, or ``python -m ecgedge.benchmarks``),
run on purpose and never as tests: ``cli.py`` (the commands and the result files), ``bench_*.py``
(latency, accuracy, backbones, scaling, robustness) and ``dsp_speed.py`` (this tree's spectrogram
against a committed one: ``python -m ecgedge.benchmarks.dsp_speed``). Results go to
``benchmarks/results/`` (the committed reference results).

Imports: benchmarks -> device, train, convert, deploy, pipeline (it measures what they make).
"""

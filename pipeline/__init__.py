"""ecgedge.pipeline: the main job (``ecgedge pipeline``): data -> train -> convert -> verify ->
device eval -> latency -> report, each stage skipped when its outputs are up to date
(``pipeline.py``), and its ``report.md`` with the PNG plots (``report.py``).

Imports: pipeline -> device, train, convert (it drives them; the heavy imports happen inside the
stage functions).
"""

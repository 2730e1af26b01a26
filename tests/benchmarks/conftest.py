"""Tests of the benchmarks (``ecgedge.benchmarks``): their helpers and result files.

No fixture is used by this room alone; the shared ones (PhysioNet folders, the WFDB writer,
the tiny run and bundles) are in ``tests/conftest.py``.
"""

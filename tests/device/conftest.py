"""Tests of the device room (``ecgedge.device``): DSP, rhythm, bundle, runtime, inputs, CLI.

No fixture is used by this room alone; the shared ones (PhysioNet folders, the WFDB writer,
the tiny run and bundles) are in ``tests/conftest.py``.
"""

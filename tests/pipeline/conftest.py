"""Tests of the main job (``ecgedge.pipeline``): its stages, config and report.

No fixture is used by this room alone; the shared ones (PhysioNet folders, the WFDB writer,
the tiny run and bundles) are in ``tests/conftest.py``.
"""

"""Tests of the training room (``ecgedge.train``): tasks, data, models, protocols, ``ecgedge data|train``.

No fixture is used by this room alone; the shared ones (PhysioNet folders, the WFDB writer,
the tiny run and bundles) are in ``tests/conftest.py``.
"""

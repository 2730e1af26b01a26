"""Tests of the deploy room (``ecgedge.deploy``): pack, push, the installer, the arm64 proof.

No fixture is used by this room alone; the shared ones (PhysioNet folders, the WFDB writer,
the tiny run and bundles) are in ``tests/conftest.py``.
"""

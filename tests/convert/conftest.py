"""Fixtures of the converter's tests; the tiny trained run and its bundles (``tiny_run``,
``tiny_bundles``) are in ``tests/conftest.py``, since the deploy tests pack them too."""

import pytest


@pytest.fixture
def tiny_windows(tiny_run, monkeypatch, cache_dir):
    """Make the converter read the tiny run's synthetic windows instead of PhysioNet data."""
    from ecgedge.convert import rundir

    monkeypatch.setattr(rundir, "load_split_windows", lambda run, split, data_dir=None: tiny_run.windows[split])
    return tiny_run.windows

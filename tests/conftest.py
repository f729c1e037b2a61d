"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def real_data_dir() -> Path:
    """The shared folder of real daily CSVs (or $HFTRAIN_REAL_DATA); skips the test when absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "daily"
    folder = Path(os.environ.get("HFTRAIN_REAL_DATA", default))
    if not folder.is_dir() or not any(folder.glob("*.csv")):
        pytest.skip(f"no real data folder at {folder}")
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are overhead-bound; one torch thread avoids OpenMP stalls when CI shares its cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_forecasters():
    """Forget loaded forecast models and warnings given, before and after a test."""
    from hftraining.forecasting import clear_loaded

    clear_loaded()
    yield
    clear_loaded()


"""Chronos-Bolt and Chronos-2 through the public path, with tiny random-weight checkpoints on disk."""

import logging
import shutil

import numpy as np
import pytest
import safetensors.torch
from tiny_models import random_prices, tiny_model_dir

from hftraining.config import DataConfig
from hftraining.errors import UserError
from hftraining.forecasting import clear_loaded, forecast_features
from hftraining.forecasting.chronos_backend import trapezoid_masses

L, H = 64, 5
KINDS = ["bolt", "chronos2"]


pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_forecasters")




def chronos_data(kind="bolt", **kw):
    kw.setdefault("chronos_model_id", str(tiny_model_dir(kind)))
    return DataConfig(forecast_backend="chronos", forecast_context_length=L, toto_horizon=H, **kw)


def features(prices, data):
    return forecast_features("TEST", prices, data, None, progress=False)


@pytest.mark.parametrize("kind", KINDS)
def test_loads_the_saved_checkpoint_and_records_it(kind):
    ff = features(random_prices(120), chronos_data(kind))
    assert ff.backend == ff.requested == "chronos"
    assert ff.info["mode"] == {"bolt": "chronos-bolt", "chronos2": "chronos-2"}[kind]
    assert ff.info["model_id"] == str(tiny_model_dir(kind)) and len(ff.info["weights_hash"]) == 16
    assert ff.info["device"] == "cpu" and ff.info["dtype"] == "float32" and ff.info["fallback_reason"] is None
    assert np.isnan(ff.values[: L - 1]).all() and np.isfinite(ff.values[L - 1 :]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_perturbing_the_future_leaves_the_past_unchanged(kind):
    prices = random_prices(140, seed=1)
    t_star = 100
    moved = prices.copy()
    moved[t_star + 1 :] *= 1.5
    a, b = features(prices, chronos_data(kind)).values, features(moved, chronos_data(kind)).values
    np.testing.assert_array_equal(a[: t_star + 1], b[: t_star + 1])
    assert (a[t_star + 1 :] != b[t_star + 1 :]).any(axis=1).all()


@pytest.mark.parametrize("kind", KINDS)
def test_row_t_is_computed_from_prices_up_to_t_alone(kind):
    """Bit for bit: every model call is padded to forecast_batch_size windows, so kernels never see another shape."""
    prices = random_prices(110, seed=2)
    full = features(prices, chronos_data(kind)).values
    for t in (L - 1, 90, 109):
        np.testing.assert_array_equal(features(prices[: t + 1], chronos_data(kind)).values[t], full[t])


@pytest.mark.parametrize("kind", KINDS)
def test_batch_size_does_not_change_the_features(kind):
    prices = random_prices(150, seed=3)
    small = features(prices, chronos_data(kind, forecast_batch_size=7)).values
    large = features(prices, chronos_data(kind, forecast_batch_size=256)).values
    np.testing.assert_allclose(small, large, rtol=0, atol=1e-6, equal_nan=True)


def test_trapezoid_masses_give_normal_moments():
    from statistics import NormalDist

    levels = np.array([0.01, 0.05] + [round(0.05 * i, 2) for i in range(2, 19)] + [0.95, 0.99])
    w = trapezoid_masses(levels)
    assert len(levels) == 21 and w.sum() == pytest.approx(1.0)
    q = np.array([NormalDist(10.0, 2.0).inv_cdf(p) for p in levels])
    mean = (w * q).sum()
    assert mean == pytest.approx(10.0, abs=1e-9)
    assert np.sqrt((w * (q - mean) ** 2).sum()) == pytest.approx(2.0, rel=0.1)


def test_missing_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="chronos_model_id.*no such Chronos checkpoint folder"):
        features(random_prices(80), chronos_data(chronos_model_id=str(tmp_path / "nope" / "model")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no config.json"):
        features(random_prices(80), chronos_data(chronos_model_id=str(empty)))


def test_checkpoint_missing_weights_is_refused_not_randomly_filled(tmp_path):
    broken = shutil.copytree(tiny_model_dir("bolt"), tmp_path / "bolt")
    state = safetensors.torch.load_file(broken / "model.safetensors")
    state.pop(min(k for k in state if "encoder.block.0" in k))
    safetensors.torch.save_file(state, broken / "model.safetensors")
    with pytest.raises(UserError, match="lacks 1 weight tensors"):
        features(random_prices(80), chronos_data(chronos_model_id=str(broken)))


def test_unfetchable_hub_id_follows_the_fallback_policy(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = chronos_data(chronos_model_id="no-such-org/no-such-chronos-model")
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        ff = features(random_prices(80), data)
    assert ff.backend == "statistical" and ff.requested == "chronos"
    assert "no-such-org/no-such-chronos-model" in ff.info["fallback_reason"]
    assert "using the statistical forecaster" in caplog.text
    clear_loaded()
    with pytest.raises(UserError, match="chronos forecaster unavailable.*no-such-chronos-model"):
        features(
            random_prices(80), chronos_data(chronos_model_id=data.chronos_model_id, forecast_fallback="error")
        )


def test_cuda_device_without_cuda_follows_the_fallback_policy(caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        ff = features(random_prices(80), chronos_data(chronos_device="cuda"))
    assert ff.backend == "statistical" and "CUDA" in ff.info["fallback_reason"]
    assert caplog.text.count("chronos forecaster unavailable") == 1

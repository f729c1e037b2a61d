"""Toto: its CUDA-only rule (fallback and error on CPU), and its forecasting code on CPU by explicit opt-in.

HFTRAIN_TOTO_ALLOW_CPU=1 is the test-only switch that lets the tiny Toto run on CPU.
"""

import logging
import sys

import numpy as np
import pytest
import torch
from tiny_models import random_prices, tiny_model_dir

from hftraining.config import DataConfig
from hftraining.errors import UserError
from hftraining.forecasting import forecast_features
from hftraining.forecasting.toto_backend import ALLOW_CPU_ENV

L, H = 64, 5
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CPU-only behaviour")




pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_forecasters")


@pytest.fixture
def allow_cpu(monkeypatch):
    monkeypatch.setenv(ALLOW_CPU_ENV, "1")


def toto_data(mode="analytic", **kw):
    kw.setdefault("toto_model_id", str(tiny_model_dir("toto")))
    kw.setdefault("forecast_context_length", L)
    return DataConfig(
        forecast_backend="toto",
        toto_mode=mode,
        toto_horizon=H,
        toto_num_samples=16,
        toto_samples_per_batch=8,
        **kw,
    )


def features(prices, data, symbol="TEST"):
    return forecast_features(symbol, prices, data, None, progress=False)


# --- the CUDA-only rule ---------------------------------------------------------------------------


@needs_no_cuda
def test_without_cuda_toto_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.delenv(ALLOW_CPU_ENV, raising=False)
    prices = random_prices(100)
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        ff = features(prices, toto_data(), "AAA")
        features(prices, toto_data(), "BBB")
    assert ff.backend == "statistical" and ff.requested == "toto"
    assert "CUDA" in ff.info["fallback_reason"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "toto forecaster unavailable" in warnings[0].message
    assert "statistical" in warnings[0].message
    stat_data = DataConfig(forecast_backend="statistical", forecast_context_length=L, toto_horizon=H)
    stat = features(prices, stat_data)
    np.testing.assert_array_equal(ff.values, stat.values)  # real forecasts, not zeros


@needs_no_cuda
def test_without_cuda_error_policy_stops_with_the_reason(monkeypatch):
    monkeypatch.delenv(ALLOW_CPU_ENV, raising=False)
    with pytest.raises(UserError, match="toto forecaster unavailable: Toto requires CUDA"):
        features(random_prices(100), toto_data(forecast_fallback="error"))


def test_missing_package_falls_back(monkeypatch, allow_cpu):
    for name in [m for m in sys.modules if m == "toto" or m.startswith("toto.")] or ["toto"]:
        monkeypatch.setitem(sys.modules, name, None)  # import toto... -> ImportError
    ff = features(random_prices(100), toto_data())
    assert ff.backend == "statistical" and "toto-ts package is not installed" in ff.info["fallback_reason"]


def test_default_config_picks_by_the_machine_and_records_why(monkeypatch, caplog):
    """The default (auto): statistical on a CPU machine, quietly (one info line, no warning), recorded."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = DataConfig(forecast_context_length=L)
    assert data.resolved_forecast_backend == "auto"
    with caplog.at_level(logging.INFO, logger="hftraining"):
        ff = features(random_prices(80), data)
        features(random_prices(80), data, "OTHER")
    assert (ff.requested, ff.backend, ff.info["fallback_reason"]) == ("auto", "statistical", None)
    assert "no CUDA device" in ff.info["auto_choice"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.message for r in caplog.records] == [
        "forecaster: statistical (data.forecast_backend auto: no CUDA device; Toto runs on CUDA only)"]


def test_auto_chooses_toto_where_it_can_run(monkeypatch):
    from hftraining.forecasting.base import choose_auto, clear_loaded

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_auto(DataConfig())[0] == "toto"
    clear_loaded()
    assert choose_auto(DataConfig(toto_device="cpu")) == (
        "statistical", "data.toto_device is 'cpu'; Toto runs on CUDA only")
    clear_loaded()
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "toto" else object())
    assert choose_auto(DataConfig()) == ("statistical", "toto-ts is not installed (make setup-toto)")


def test_missing_model_folder_is_a_user_error(allow_cpu, tmp_path):
    with pytest.raises(UserError, match="toto_model_id.*no such Toto checkpoint folder"):
        features(random_prices(80), toto_data(toto_model_id=str(tmp_path / "missing")))


# --- forecasting code on CPU (opt-in) -------------------------------------------------------------


def test_analytic_mode_loads_the_checkpoint_and_matches_totos_own_mean(allow_cpu):
    from toto.data.util.dataset import MaskedTimeseries
    from toto.inference.forecaster import TotoForecaster
    from toto.model.toto import Toto

    prices = random_prices(100, seed=1)
    ff = features(prices, toto_data())
    assert ff.backend == "toto" and ff.info["mode"] == "analytic" and ff.info["device"] == "cpu"
    assert ff.info["dtype"] == "float32" and len(ff.info["weights_hash"]) == 16
    assert np.isnan(ff.values[: L - 1]).all() and np.isfinite(ff.values[L - 1 :]).all()
    model = Toto.load_from_checkpoint(str(tiny_model_dir("toto")), map_location="cpu")
    x = torch.tensor(prices[-L:], dtype=torch.float32)[None, None]
    inputs = MaskedTimeseries(
        series=x,
        padding_mask=torch.ones_like(x, dtype=torch.bool),
        id_mask=torch.zeros_like(x, dtype=torch.int),
        timestamp_seconds=torch.zeros_like(x, dtype=torch.int),
        time_interval_seconds=torch.full((1, 1), 86400, dtype=torch.int),
    )
    mean = TotoForecaster(model.model).forecast(inputs, prediction_length=H).mean[0, 0].numpy()
    np.testing.assert_allclose(ff.values[-1, :H], mean / np.float32(prices[-1]) - 1, atol=1e-6)


@pytest.mark.parametrize("mode", ["analytic", "samples"])
def test_perturbing_the_future_leaves_the_past_unchanged(allow_cpu, mode):
    prices = random_prices(96, seed=2)
    t_star = 80
    moved = prices.copy()
    moved[t_star + 1 :] *= 1.5
    a, b = features(prices, toto_data(mode)).values, features(moved, toto_data(mode)).values
    np.testing.assert_array_equal(a[: t_star + 1], b[: t_star + 1])
    assert (a[t_star + 1 :] != b[t_star + 1 :]).any(axis=1).all()


@pytest.mark.parametrize("mode", ["analytic", "samples"])
def test_row_t_is_computed_from_prices_up_to_t_alone(allow_cpu, mode):
    prices = random_prices(90, seed=3)
    full = features(prices, toto_data(mode)).values
    for t in (L - 1, 89):
        np.testing.assert_array_equal(features(prices[: t + 1], toto_data(mode)).values[t], full[t])


def test_analytic_batch_size_does_not_change_the_features(allow_cpu):
    """Equal to float32 precision, not bit for bit: another forecast_batch_size is another GEMM shape, and
    BLAS kernels (MKL on AVX-512) round differently per shape (seen: 3.7e-9, a few float32 ulps)."""
    prices = random_prices(150, seed=4)
    small = features(prices, toto_data(forecast_batch_size=7)).values
    large = features(prices, toto_data(forecast_batch_size=256)).values
    np.testing.assert_allclose(small, large, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("total", [L, L + 9, 3 * L])
def test_every_analytic_call_has_the_configured_batch_shape(allow_cpu, monkeypatch, total):
    """A short last batch is padded: with one shape for every call, a window's features cannot depend on
    how many windows were computed with it, whatever the CPU's BLAS does with other shapes."""
    from hftraining.forecasting.toto_backend import TotoBackend

    shapes = []
    real = TotoBackend.forecast
    monkeypatch.setattr(TotoBackend, "forecast", lambda self, c, s=None: shapes.append(c.shape) or real(self, c, s))
    ff = features(random_prices(total, seed=6), toto_data(forecast_batch_size=8))
    assert shapes and set(shapes) == {(8, L)} and np.isfinite(ff.values[L - 1 :]).all()


def test_samples_are_seeded_per_window_and_leave_the_global_rng_alone(allow_cpu):
    prices = random_prices(72, seed=5)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = features(prices, toto_data("samples"))
    after = torch.rand(1)
    b = features(prices, toto_data("samples", forecast_batch_size=1))
    assert torch.equal(before, after)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.info["num_samples"] == 16 and a.info["samples_per_batch"] == 8
    other = features(prices, toto_data("samples"), symbol="OTHER").values  # other symbol, other draws
    assert not np.array_equal(other[L - 1 :], a.values[L - 1 :])
    assert (a.values[L - 1 :, H:] > 0).all()


def test_context_is_rounded_down_to_the_patch_size(allow_cpu, caplog):
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        ff = features(random_prices(90), toto_data(forecast_context_length=70))
    assert ff.info["context"] == 64 and "not a multiple of Toto's patch size 16; using 64" in caplog.text
    assert np.isnan(ff.values[:63]).all() and np.isfinite(ff.values[63:]).all()


def test_analytic_horizon_longer_than_a_patch_is_a_user_error(allow_cpu):
    with pytest.raises(UserError, match="toto_horizon <= 16"):
        features(
            random_prices(90),
            DataConfig(
                forecast_backend="toto",
                toto_mode="analytic",
                toto_horizon=20,
                toto_model_id=str(tiny_model_dir("toto")),
                forecast_context_length=L,
            ),
        )


def test_nan_prices_are_forward_filled_not_crashing(allow_cpu):
    prices = random_prices(100, seed=6)
    prices[70] = np.nan
    ff = features(prices, toto_data())
    assert np.isfinite(ff.values[L - 1 :]).all()


@needs_no_cuda
def test_a_mistyped_model_path_is_an_error_even_without_cuda(monkeypatch, tmp_path):
    monkeypatch.delenv(ALLOW_CPU_ENV, raising=False)
    with pytest.raises(UserError, match="no such Toto checkpoint folder"):
        features(random_prices(80), toto_data(toto_model_id=str(tmp_path / "typo" / "toto")))

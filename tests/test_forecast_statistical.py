"""The statistical forecaster: its formula, causality and NaN handling."""

import math

import numpy as np
import pytest
from tiny_models import random_prices

from hftraining.config import DataConfig
from hftraining.forecasting import feature_names, forecast_features
from hftraining.forecasting.statistical import random_walk_moments, rolling_moments

L, H = 32, 5





pytestmark = pytest.mark.usefixtures("fresh_forecasters")

def stat_features(prices, **kw):
    data = DataConfig(forecast_backend="statistical", forecast_context_length=L, toto_horizon=H, **kw)
    return forecast_features("TEST", prices, data, None, progress=False)


def test_formula_matches_an_independent_float64_computation():
    prices = random_prices(300, seed=1)
    ff = stat_features(prices)
    for t in (L - 1, 100, 299):
        window = prices[t - L + 1 : t + 1]
        r = [math.log(window[i + 1] / window[i]) for i in range(L - 1)]
        mu = sum(r) / len(r)
        var = sum((x - mu) ** 2 for x in r) / (len(r) - 1)
        for h in range(1, H + 1):
            mean = window[-1] * math.exp(mu * h + var * h / 2)
            std = mean * math.sqrt(math.exp(var * h) - 1)
            assert ff.values[t, h - 1] == pytest.approx(mean / window[-1] - 1, rel=1e-4, abs=1e-7)
            assert ff.values[t, H + h - 1] == pytest.approx(std / window[-1], rel=1e-4)


def test_formula_matches_a_monte_carlo_random_walk():
    """The closed form is the mean/std of a simulated random walk with the window's mu and sigma."""
    rng = np.random.default_rng(0)
    window = random_prices(L, seed=2, vol=0.02)
    mean, std = random_walk_moments(window[None].astype(np.float32), H)
    r = np.diff(np.log(window))
    paths = window[-1] * np.exp(np.cumsum(rng.normal(r.mean(), r.std(ddof=1), (400_000, H)), axis=1))
    np.testing.assert_allclose(mean[0], paths.mean(axis=0), rtol=1e-3)
    np.testing.assert_allclose(std[0], paths.std(axis=0), rtol=2e-2)


def test_shape_names_and_no_backfill():
    prices = random_prices(100)
    ff = stat_features(prices)
    assert ff.values.shape == (100, 2 * H) and ff.values.dtype == np.float32
    assert (
        ff.names
        == feature_names(H)
        == [f"fc_mean_{h}" for h in range(1, 6)] + [f"fc_std_{h}" for h in range(1, 6)]
    )
    assert np.isnan(ff.values[: L - 1]).all()
    assert np.isfinite(ff.values[L - 1 :]).all()
    assert ff.backend == ff.requested == "statistical" and ff.info["fallback_reason"] is None
    assert ff.info["windows"] == ff.info["computed"] == 100 - L + 1


def test_perturbing_the_future_leaves_the_past_unchanged():
    prices = random_prices(200, seed=3)
    t_star = 120
    moved = prices.copy()
    moved[t_star + 1 :] *= 1.5
    a, b = stat_features(prices).values, stat_features(moved).values
    np.testing.assert_array_equal(a[: t_star + 1], b[: t_star + 1])
    assert (a[t_star + 1 : t_star + L] != b[t_star + 1 : t_star + L]).any(axis=1).all()


def test_row_t_is_computed_from_prices_up_to_t_alone():
    prices = random_prices(150, seed=4)
    full = stat_features(prices).values
    for t in (L - 1, 77, 149):
        np.testing.assert_array_equal(stat_features(prices[: t + 1]).values[t], full[t])


def test_missing_prices_are_forward_filled_and_leading_gaps_stay_nan():
    prices = random_prices(120, seed=5)
    gappy = prices.copy()
    gappy[:10] = np.nan
    gappy[60] = np.nan
    gappy[61] = -1.0  # a non-positive price is missing too
    filled = gappy.copy()
    filled[60] = filled[61] = prices[59]
    a, b = stat_features(gappy).values, stat_features(filled).values
    assert np.isnan(a[: 10 + L - 1]).all() and np.isfinite(a[10 + L - 1 :]).all()
    np.testing.assert_array_equal(a, b)


def test_series_shorter_than_the_context_is_all_nan():
    ff = stat_features(random_prices(L - 1))
    assert np.isnan(ff.values).all() and ff.info["windows"] == 0


def test_prefix_sum_shortcut_agrees_with_the_per_window_formula():
    """rolling.py uses prefix sums over the series; the Backend interface computes each window alone."""
    prices = random_prices(400, seed=6)
    windows = np.lib.stride_tricks.sliding_window_view(prices.astype(np.float32), L)
    mean, std = random_walk_moments(windows, H)
    ff = stat_features(prices).values[L - 1 :]
    last = prices[L - 1 :, None]
    np.testing.assert_allclose(ff[:, :H], mean / last - 1, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(ff[:, H:], std / last, rtol=1e-3)
    last_p, mu, var = rolling_moments(prices, L, L - 1)
    np.testing.assert_array_equal(last_p, prices[L - 1 :])
    assert (var > 0).all() and mu.shape == var.shape == (400 - L + 1,)

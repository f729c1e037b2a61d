"""The statistical forecaster: a random walk with drift on log prices, fitted inside each window.

It is the dependency-free baseline every model forecast should beat, and what the toolkit falls back
to when a requested model cannot run. For a window of L prices with last price p and log returns
r_i = log(p_{i+1}/p_i), i = 1..n (n = L-1):

    mu      = mean(r)                 = log(p_L / p_1) / n
    sigma^2 = sum((r - mu)^2) / (n-1)   (sample variance)

If log P_{t+h} - log p ~ Normal(mu h, sigma^2 h), then P_{t+h} is lognormal and

    mean_h = p * exp(mu h + sigma^2 h / 2)
    std_h  = mean_h * sqrt(expm1(sigma^2 h))

Only prices inside the window are used, so the features are causal by construction. Two equivalent
implementations: `random_walk_moments` takes any contexts [n, L] (the Backend interface; float32,
O(L) per window), and `rolling_moments` takes a whole series and gets every window's sums from
float64 prefix sums (O(1) per window, > 1e6 windows/s), which rolling.py uses. A prefix sum at t only
involves bars <= t, so the shortcut is exactly as causal, and a row depends on the series from its
first valid bar, not on how many later bars exist.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hftraining.config import DataConfig
from hftraining.forecasting.base import Backend, versions


def random_walk_moments(contexts: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """contexts [n, L] (L >= 3, positive) -> (mean [n, H], std [n, H]) in price units (float64)."""
    c = np.asarray(contexts, dtype=np.float32)
    r = np.log(c[:, 1:] / c[:, :-1])  # ratios near 1 keep float32 precise
    n = r.shape[1]
    mu = r.sum(axis=1, dtype=np.float64) / n
    sum_sq = np.einsum("ij,ij->i", r, r).astype(np.float64)
    var = np.maximum(sum_sq - n * mu * mu, 0.0) / (n - 1)
    return _lognormal(c[:, -1].astype(np.float64), mu, var, horizon)


def rolling_moments(
    prices: np.ndarray, length: int, first_end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moments of every window prices[t-L+1..t], t = first_end..T-1, of one NaN-free positive series.

    Returns (last prices [m], mu [m], var [m]) in float64, from prefix sums of the log returns.
    """
    log_p = np.log(np.asarray(prices, dtype=np.float64))
    r = np.diff(log_p)
    sum_sq = np.concatenate([[0.0], np.cumsum(r * r)])  # sum_sq[k] = sum of r[:k]
    n = length - 1
    ends = np.arange(first_end, len(log_p))
    mu = (log_p[ends] - log_p[ends - n]) / n
    window_sq = sum_sq[ends] - sum_sq[ends - n]
    var = np.maximum(window_sq - n * mu * mu, 0.0) / (n - 1)
    return np.asarray(prices, dtype=np.float64)[ends], mu, var


def _lognormal(
    last: np.ndarray, mu: np.ndarray, var: np.ndarray, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of p * exp(N(mu h, var h)) for h = 1..H (the module docstring's formula)."""
    h = np.arange(1, horizon + 1, dtype=np.float64)
    mean = last[:, None] * np.exp(mu[:, None] * h + 0.5 * var[:, None] * h)
    std = mean * np.sqrt(np.expm1(var[:, None] * h))
    return mean, std


class StatisticalBackend(Backend):
    """Random walk with drift per window (formula in the module docstring); deterministic, CPU only."""

    name = "statistical"

    def __init__(self, data: DataConfig):
        self.horizon = data.toto_horizon
        self.context_length = data.forecast_context_length
        self.batch_size = 1024  # cache-friendly blocks; the numbers do not depend on it

    def forecast(
        self, contexts: np.ndarray, seeds: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return random_walk_moments(contexts, self.horizon)

    def forecast_series(
        self, prices: np.ndarray, first_end: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The shortcut rolling.py takes: (last price, mean, std) for windows ending at first_end..T-1."""
        last, mu, var = rolling_moments(prices, self.context_length, first_end)
        mean, std = _lognormal(last, mu, var, self.horizon)
        return last, mean, std

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": "random-walk-drift",
            "weights_hash": None,
            "mode": "lognormal-prefix-sums",
            "device": "cpu",
            "dtype": "float64",
            "versions": versions("numpy"),
        }

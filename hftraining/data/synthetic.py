"""A seeded synthetic market for tests, demos and offline runs: realistic enough to fool nobody.

The series has what makes real daily returns hard: fat tails (Student-t shocks), volatility
clustering (GARCH(1,1)), overnight gaps and consistent OHLC, and volume that rises with volatility.
It also plants a weak, slowly varying hidden drift (AR(1), persistence 0.985) so a model has
something to learn: trend features such as the past 5/20-bar return carry a little information.
`edge` sets its strength as the annualised Sharpe ratio of an oracle that trades sign(drift);
`edge=0` is a pure random walk, so nothing should be learnable.

Bars from here are labelled `source="synthetic"` everywhere; they are never a stand-in for real data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

SOURCE = "synthetic"
END_DATE = "2024-12-31"  # every series ends here, so symbols of one market share their dates
DEFAULT_EDGE = 1.0
PERIODS_PER_YEAR = 252

DRIFT_PERSISTENCE = 0.985
T_DEGREES_OF_FREEDOM = 6.0
GARCH_ALPHA = 0.06
GARCH_BETA = 0.92


def synthetic_origin(seed: int, edge: float) -> str:
    return f"synthetic market (seed {seed}, edge {edge:g}) — not real prices"


def symbol_seed(seed: int, symbol: str) -> int:
    """A per-symbol seed that is the same in every process (Python's hash() is salted per run)."""
    digest = hashlib.sha256(f"hftraining-synthetic:{seed}:{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class SyntheticPath:
    """Log returns with the hidden state that produced them (tests use the drift as an oracle)."""

    log_returns: np.ndarray
    drift: np.ndarray   # drift[t] is the expected log return of bar t
    sigma: np.ndarray   # sigma[t] is the conditional volatility of bar t


def simulate_returns(rng: np.random.Generator, n_bars: int, edge: float = DEFAULT_EDGE,
                     daily_vol: float = 0.015) -> SyntheticPath:
    """GARCH(1,1) Student-t shocks around an AR(1) drift scaled so the oracle Sharpe is about `edge`."""
    df = T_DEGREES_OF_FREEDOM
    shocks = rng.standard_t(df, size=n_bars) * np.sqrt((df - 2) / df)  # unit variance, fat tails
    omega = daily_vol ** 2 * (1 - GARCH_ALPHA - GARCH_BETA)
    sigma2 = np.empty(n_bars)
    sigma2[0] = daily_vol ** 2
    for t in range(1, n_bars):
        last_shock = sigma2[t - 1] * shocks[t - 1] ** 2
        sigma2[t] = omega + GARCH_ALPHA * last_shock + GARCH_BETA * sigma2[t - 1]
    sigma = np.sqrt(sigma2)

    # Trading sign(drift) earns E|drift| per bar, which is std * sqrt(2/pi) for a Gaussian drift.
    drift_std = edge / np.sqrt(PERIODS_PER_YEAR) * daily_vol / np.sqrt(2 / np.pi)
    innovations = rng.standard_normal(n_bars) * drift_std * np.sqrt(1 - DRIFT_PERSISTENCE ** 2)
    drift = np.empty(n_bars)
    drift[0] = rng.standard_normal() * drift_std
    for t in range(1, n_bars):
        drift[t] = DRIFT_PERSISTENCE * drift[t - 1] + innovations[t]
    return SyntheticPath(log_returns=drift + sigma * shocks, drift=drift, sigma=sigma)


def generate_bars(symbol: str, n_bars: int, seed: int, edge: float = DEFAULT_EDGE) -> pd.DataFrame:
    """Daily OHLCV bars for `symbol` in the market `seed`, business days ending on END_DATE."""
    return _market(symbol, n_bars, seed, edge)[0]


def hidden_drift(symbol: str, n_bars: int, seed: int, edge: float = DEFAULT_EDGE) -> pd.Series:
    """The drift the generator planted in `symbol`'s bars, by date: what the oracle baseline knows.

    drift[t] is the expected log return of bar t (close t-1 -> close t). It is known only to the
    generator; models see prices.
    """
    bars, path = _market(symbol, n_bars, seed, edge)
    return pd.Series(path.drift, index=bars.index, name="drift")


def _market(symbol: str, n_bars: int, seed: int, edge: float) -> tuple[pd.DataFrame, SyntheticPath]:
    rng = np.random.default_rng(symbol_seed(seed, symbol))
    daily_vol = float(np.exp(rng.uniform(np.log(0.01), np.log(0.025))))
    path = simulate_returns(rng, n_bars, edge=edge, daily_vol=daily_vol)
    r, sigma = path.log_returns, path.sigma

    start_price = float(np.exp(rng.uniform(np.log(20), np.log(300))))
    close = start_price * np.exp(np.cumsum(r))
    # Part of each bar's move happens overnight: open = previous close moved by a gap.
    gap = rng.standard_normal(n_bars) * 0.3 * sigma
    previous_close = np.concatenate([[start_price], close[:-1]])
    open_ = previous_close * np.exp(gap)
    body_top = np.maximum(open_, close)
    body_bottom = np.minimum(open_, close)
    high = body_top * np.exp(np.abs(rng.standard_normal(n_bars)) * 0.4 * sigma)
    low = body_bottom * np.exp(-np.abs(rng.standard_normal(n_bars)) * 0.4 * sigma)
    base_volume = float(np.exp(rng.uniform(np.log(2e5), np.log(5e7))))
    volume = np.round(base_volume * np.exp(0.3 * rng.standard_normal(n_bars)) * (sigma / daily_vol)
                      * (1 + np.abs(r) / sigma))

    dates = pd.DatetimeIndex(pd.bdate_range(end=END_DATE, periods=n_bars).to_numpy(), name="date")
    bars = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "adj_close": close, "volume": volume},
        index=dates, dtype="float64")
    bars.attrs.update(source=SOURCE, origin=synthetic_origin(seed, edge))
    return bars, path

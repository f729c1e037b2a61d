"""The synthetic market: seeded, valid OHLC, fat-tailed, clustered, and only as predictable as `edge`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hftraining.data.bars import COLUMNS, check_bars
from hftraining.data.synthetic import END_DATE, generate_bars, simulate_returns, symbol_seed


def log_returns(bars: pd.DataFrame) -> np.ndarray:
    return np.diff(np.log(bars["adj_close"].to_numpy()))


def trend_signal_and_next_return(r: np.ndarray, lookback: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """sign(sum of the last `lookback` returns up to t) against the return of bar t+1."""
    past = np.convolve(r, np.ones(lookback), mode="valid")[:-1]
    return np.sign(past), r[lookback:]


def t_stat(x: np.ndarray) -> float:
    return float(x.mean() / x.std(ddof=1) * np.sqrt(len(x)))


def test_seed_is_stable_across_processes():
    # A fixed number: Python's hash() is salted per process, sha256 is not.
    assert symbol_seed(7, "AAPL") == 6746564383968047959
    assert symbol_seed(7, "AAPL") != symbol_seed(7, "MSFT") != symbol_seed(8, "AAPL")


def test_deterministic_per_symbol_and_seed():
    a = generate_bars("AAPL", 500, seed=3)
    pd.testing.assert_frame_equal(a, generate_bars("AAPL", 500, seed=3))
    assert not a["close"].equals(generate_bars("MSFT", 500, seed=3)["close"])
    assert not a["close"].equals(generate_bars("AAPL", 500, seed=4)["close"])


def test_shape_dates_and_labels():
    bars = generate_bars("AAPL", 800, seed=1)
    assert list(bars.columns) == COLUMNS and len(bars) == 800
    assert bars.index.name == "date" and bars.index[-1] == pd.Timestamp(END_DATE)
    assert (bars.index.dayofweek < 5).all() and bars.index.is_unique and bars.index.is_monotonic_increasing
    assert bars.attrs["source"] == "synthetic"
    assert "seed 1" in bars.attrs["origin"] and "not real prices" in bars.attrs["origin"]


def test_ohlc_is_consistent_and_passes_the_bar_checks():
    bars = generate_bars("XYZ", 3000, seed=5)
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars[["open", "high", "low", "close"]] > 0).all().all()
    assert (bars["volume"] > 0).all()
    pd.testing.assert_frame_equal(check_bars(bars, "XYZ", "synthetic"), bars, check_freq=False)


def test_fat_tails_and_volatility_clustering():
    r = log_returns(generate_bars("AAPL", 4000, seed=7, edge=0))
    z = (r - r.mean()) / r.std()
    assert np.mean(z ** 4) > 3  # kurtosis above the normal distribution's
    magnitude = np.abs(r)
    assert np.corrcoef(magnitude[1:], magnitude[:-1])[0, 1] > 0.03


def test_no_edge_means_trend_does_not_predict():
    hits = []
    for seed in range(3):
        r = log_returns(generate_bars("AAPL", 4000, seed, edge=0))
        signal, following = trend_signal_and_next_return(r)
        hits.append(signal * following)
    assert abs(t_stat(np.concatenate(hits))) < 3


def test_strong_edge_makes_trend_predict():
    signal, following = trend_signal_and_next_return(log_returns(generate_bars("AAPL", 4000, seed=2, edge=6)))
    assert t_stat(signal * following) > 4


def test_default_edge_gives_an_oracle_sharpe_near_one():
    path = simulate_returns(np.random.default_rng(0), 40_000)
    pnl = np.sign(path.drift) * path.log_returns
    sharpe = pnl.mean() / pnl.std(ddof=1) * np.sqrt(252)
    assert 0.6 < sharpe < 1.4


@pytest.mark.parametrize("edge", [0.0, 2.0])
def test_edge_scales_the_hidden_drift(edge):
    path = simulate_returns(np.random.default_rng(1), 2000, edge=edge)
    assert (np.abs(path.drift).max() == 0) == (edge == 0)

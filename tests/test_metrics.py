"""Metric definitions: hand-computed examples, degenerate inputs, and a cross-check with quantstats."""

import math

import numpy as np
import pandas as pd
import pytest

from hftraining import metrics

P = 252


def _random_returns(seed: int, n: int = 500, scale: float = 0.01, drift: float = 0.0003) -> np.ndarray:
    return np.random.default_rng(seed).normal(drift, scale, n)


# --- hand-computed ----------------------------------------------------------------------------

def test_hand_computed_small_series():
    r = [0.1, -0.05, 0.02, -0.1]
    mean = (0.1 - 0.05 + 0.02 - 0.1) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in r) / 3)
    assert metrics.sharpe_ratio(r) == pytest.approx(mean / std * math.sqrt(P), rel=1e-12)
    downside = math.sqrt((0.05 ** 2 + 0.1 ** 2) / 4)  # over all 4 bars, not just the losing ones
    assert metrics.sortino_ratio(r) == pytest.approx(mean * math.sqrt(P) / downside, rel=1e-12)
    wealth = 1.1 * 0.95 * 1.02 * 0.9
    assert metrics.total_return(r) == pytest.approx(wealth - 1, rel=1e-12)
    # equity 1.1, 1.045, 1.0659, 0.95931: the peak is 1.1, the trough the last bar
    assert metrics.max_drawdown(r) == pytest.approx(0.95931 / 1.1 - 1, rel=1e-12)
    assert metrics.cagr(r) == pytest.approx(wealth ** (P / 4) - 1, rel=1e-12)
    assert metrics.calmar(r) == pytest.approx(metrics.cagr(r) / (1 - 0.95931 / 1.1), rel=1e-12)
    assert metrics.volatility(r) == pytest.approx(std * math.sqrt(P), rel=1e-12)


def test_total_return_compounds_not_sums():
    assert metrics.total_return([0.5, -0.5]) == pytest.approx(-0.25)


def test_drawdown_counts_the_initial_equity_as_a_peak():
    assert metrics.max_drawdown([-0.1, 0.05]) == pytest.approx(-0.1)
    assert metrics.max_drawdown([0.01, 0.02]) == 0.0


def test_degenerate_inputs_are_finite():
    assert metrics.sharpe_ratio([0.01]) == 0.0
    assert metrics.sharpe_ratio([0.1, 0.1, 0.1]) == 0.0  # zero spread, even with rounding in the mean
    assert metrics.sharpe_ratio([]) == 0.0
    assert metrics.sortino_ratio([0.01, 0.02]) == 0.0  # no losing bar
    assert metrics.calmar([0.01, 0.02]) == 0.0  # no drawdown
    assert metrics.cagr([-1.0, 0.5]) == -1.0  # wiped out
    assert metrics.cagr([]) == 0.0
    assert metrics.max_drawdown([]) == 0.0


def test_hit_rate_counts_bars_held_and_win_rate_counts_trades():
    r = np.array([0.01, -0.02, 0.0, 0.03, 0.0])
    p = np.array([1.0, 1.0, 1.0, -1.0, 0.0])
    assert metrics.hit_rate(r, p) == pytest.approx(2 / 4)
    assert metrics.hit_rate(r) == pytest.approx(2 / 3)  # quantstats' convention: non-zero bars
    assert metrics.win_rate([0.1, -0.2, 0.3]) == pytest.approx(2 / 3)
    assert metrics.win_rate([]) is None  # undefined when no trade closed, not 0


def test_jitter_is_neither_a_trade_nor_exposure():
    """Buy-and-hold with 1e-9 of noise on its position is one trade, fully exposed, with no win rate."""
    from hftraining.report import format_table
    from hftraining.tracker import ProfitTracker

    rng = np.random.default_rng(0)
    close = 100 * np.cumprod(1 + rng.normal(3e-4, 0.01, 300))
    held = 1.0 + rng.choice([-1e-9, 0.0, 1e-9], size=300)
    dust = np.full(300, 1e-9)                                     # a position of 1e-9 is flat
    for p, trades, exposure in ((held, 1, 1.0), (dust, 0, 0.0)):
        res = ProfitTracker(commission=0.0005, slippage=0.0005).run(p, close)
        changes = np.abs(np.diff(p[:-1], prepend=0.0))          # independent count, threshold 1e-6
        assert trades == np.count_nonzero(changes > 1e-6) == res.metrics["trade_count"]
        assert metrics.summarize(res.net_returns, p[:-1])["trade_count"] == trades
        assert res.metrics["exposure"] == exposure == np.mean(np.abs(p[:-1]) > 1e-6)
        assert res.metrics["win_rate"] is None and len(res.trades) == trades
    assert metrics.MIN_TRADE == 1e-6
    assert "n/a" in format_table({"buy_and_hold": res.metrics}, ["win_rate"])


def test_trade_spans_resize_flip_flat_and_breaks():
    p = np.array([0.0, 1.0, 0.5, -1.0, -1.0, 0.0, 1.0, 1.0])
    starts, ends = metrics.trade_spans(p)
    assert starts.tolist() == [1, 3, 6]  # the resize at bar 2 stays in the first trade
    assert ends.tolist() == [2, 4, 7]
    breaks = np.zeros(p.size, dtype=bool)
    breaks[6] = True  # stopped out during bar 6: bar 7 opens a new trade
    starts, ends = metrics.trade_spans(p, breaks)
    assert starts.tolist() == [1, 3, 6, 7]
    assert ends.tolist() == [2, 4, 6, 7]


def test_trade_stats_hand_computed():
    p = np.array([1.0, 1.0, 0.0, -0.5, -0.5])
    ret = np.array([0.1, -0.05, 0.2, -0.1, 0.04])
    c = 0.01
    stats = metrics.trade_stats(p, ret, cost=c)
    long_trade = (1 + 0.1 - c) * (1 - 0.05) * (1 - c) - 1  # entry cost, hold, exit cost at bar 2
    short_trade = (1 + 0.05 - 0.5 * c) * (1 - 0.02) - 1  # still open at the last bar: no exit cost
    np.testing.assert_allclose(stats["trade_returns"], [long_trade, short_trade], rtol=1e-12)
    assert stats["closed"].tolist() == [True, False]
    assert stats["closed_trades"] == 1
    assert stats["win_rate"] == (1.0 if long_trade > 0 else 0.0)
    assert stats["trade_count"] == 3  # bars 0, 2, 3 change the position


def test_summarize_keys_and_types():
    r = _random_returns(1, 50)
    p = np.sign(np.random.default_rng(2).normal(size=50))
    out = metrics.summarize(r, p, trades=np.array([0.1, -0.1, 0.2]), periods_per_year=P)
    for key in ("total_return", "sharpe_ratio", "sortino", "max_drawdown", "win_rate", "trade_count",
                "turnover", "exposure", "cagr", "calmar", "hit_rate", "n_bars"):
        assert key in out
        assert isinstance(out[key], (int, float)) and math.isfinite(out[key])
    assert out["n_bars"] == 50
    assert out["win_rate"] == pytest.approx(2 / 3)
    assert out["trade_count"] == int(np.count_nonzero(np.diff(p, prepend=0.0)))
    assert out["turnover"] == pytest.approx(np.abs(np.diff(p, prepend=0.0)).mean())
    with pytest.raises(ValueError, match="positions"):
        metrics.summarize(r, p[:-1])


# --- quantstats cross-check -------------------------------------------------------------------

@pytest.fixture(scope="module")
def qs():
    return pytest.importorskip("quantstats")


def _series(r: np.ndarray) -> pd.Series:
    return pd.Series(r, index=pd.bdate_range("2020-01-01", periods=len(r)))


@pytest.mark.parametrize("seed,periods,first", [(0, 252, None), (1, 252, -0.05), (2, 365, 0.02), (3, 52, None)])
def test_matches_quantstats(qs, seed, periods, first):
    r = _random_returns(seed)
    if first is not None:
        r[0] = first  # a first-bar loss: drawdown must be measured from the initial 1.0
    s = _series(r)
    tol = {"rel": 1e-9, "abs": 1e-12}
    assert metrics.sharpe_ratio(r, periods) == pytest.approx(qs.stats.sharpe(s, rf=0.0, periods=periods), **tol)
    assert metrics.sortino_ratio(r, periods) == pytest.approx(qs.stats.sortino(s, rf=0.0, periods=periods), **tol)
    assert metrics.max_drawdown(r) == pytest.approx(qs.stats.max_drawdown(s), **tol)
    assert metrics.total_return(r) == pytest.approx(qs.stats.comp(s), **tol)
    assert metrics.cagr(r, periods) == pytest.approx(qs.stats.cagr(s, periods=periods), **tol)
    assert metrics.calmar(r, periods) == pytest.approx(qs.stats.calmar(s, periods=periods), **tol)
    assert metrics.volatility(r, periods) == pytest.approx(qs.stats.volatility(s, periods=periods), **tol)
    assert metrics.hit_rate(r) == pytest.approx(qs.stats.win_rate(s), **tol)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_quantstats_degenerate_cases_differ_only_by_convention(qs):
    """quantstats gives nan/inf where we give a finite 0.0 (documented in hftraining.metrics)."""
    up = _series(np.array([0.01, 0.02, 0.005]))
    assert not math.isfinite(qs.stats.sortino(up)) and metrics.sortino_ratio(up.to_numpy()) == 0.0
    assert not math.isfinite(qs.stats.calmar(up)) and metrics.calmar(up.to_numpy()) == 0.0

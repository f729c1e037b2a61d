"""Baselines: the momentum rule by hand on a tiny series, its causality, and its simulation on a panel."""

import math

import numpy as np
import pandas as pd
import pytest

from hftraining.baselines import momentum, momentum_positions, single_asset_baselines, vol_long
from hftraining.config import Config, TrackerConfig
from hftraining.data.panel import Panel
from hftraining.evaluation import simulate


def reference_momentum(close, lookback, vol_window, target_vol, cap, periods_per_year):
    """Plain loops: position at t from closes <= t-1 only."""
    out = []
    for t in range(len(close)):
        last = t - 1
        if last - lookback < 0 or last - vol_window < 0:
            out.append(0.0)
            continue
        signal = math.copysign(1.0, close[last] / close[last - lookback] - 1.0)
        rets = [close[j] / close[j - 1] - 1.0 for j in range(last - vol_window + 1, last + 1)]
        vol = np.std(rets, ddof=1) * math.sqrt(periods_per_year)
        out.append(max(-cap, min(cap, signal * target_vol / vol)))
    return np.array(out)


def test_momentum_by_hand_on_a_tiny_series():
    close = np.array([100.0, 110.0, 99.0, 120.0, 130.0, 125.0, 140.0, 90.0])
    got = momentum_positions(close, lookback=2, vol_window=2, target_vol=0.1, max_position=10, periods_per_year=1)
    # t=3 uses closes 0..2: signal sign(99/100 - 1) = -1, vol = std([+10%, -10%]) = 0.1414 -> -0.7071
    assert got[3] == pytest.approx(-0.1 / np.std([0.1, 99 / 110 - 1], ddof=1))
    assert got[:3].tolist() == [0.0, 0.0, 0.0]                        # not enough history: flat
    np.testing.assert_allclose(got, reference_momentum(close, 2, 2, 0.1, 10, 1), rtol=1e-12)
    capped = momentum_positions(close, lookback=2, vol_window=2, target_vol=5.0, max_position=0.5, periods_per_year=1)
    assert np.abs(capped).max() == pytest.approx(0.5)


def test_momentum_defaults_match_the_reference():
    rng = np.random.default_rng(1)
    close = 50 * np.exp(np.cumsum(0.01 * rng.standard_normal(400) + 0.0003))
    np.testing.assert_allclose(momentum_positions(close), reference_momentum(close, 252, 63, 0.15, 1.0, 252),
                               rtol=1e-10, atol=1e-12)


def test_momentum_is_causal():
    rng = np.random.default_rng(2)
    close = 50 * np.exp(np.cumsum(0.01 * rng.standard_normal(600)))
    t = 450
    changed = close.copy()
    changed[t + 1:] *= np.exp(np.cumsum(0.05 * rng.standard_normal(600 - t - 1)))   # a different future
    a, b = momentum_positions(close), momentum_positions(changed)
    np.testing.assert_array_equal(a[: t + 2], b[: t + 2])      # the lag: even bar t+1 only sees closes <= t
    assert not np.array_equal(a[t + 2:], b[t + 2:])
    assert np.count_nonzero(a[:253]) == 0 and np.count_nonzero(a[253:]) > 0


def panel_of(close):
    n = len(close)
    ohlc = np.repeat(np.asarray(close)[:, None, None], 4, axis=2)
    returns = np.append(close[1:] / close[:-1] - 1, np.nan)[:, None]
    return Panel(["X"], pd.date_range("2019-01-01", periods=n, freq="B").to_numpy(), ["f"],
                 np.zeros((n, 1, 1), np.float32), ohlc, returns)


def test_momentum_simulation_uses_the_same_bars_and_costs():
    rng = np.random.default_rng(4)
    close = 50 * np.exp(np.cumsum(0.01 * rng.standard_normal(500) + 0.0005))
    panel = panel_of(close)
    decisions = range(300, 480)
    tracker = TrackerConfig(max_position_size=0.8)
    sim = momentum(panel, 0, decisions, tracker)
    expected = momentum_positions(close, max_position=0.8)[300:480]
    np.testing.assert_allclose(sim.positions, expected)
    direct = simulate(panel, 0, decisions, expected, tracker)
    np.testing.assert_allclose(sim.frame["net_return"], direct.frame["net_return"])
    both = single_asset_baselines(panel, 0, decisions, tracker)
    assert set(both) == {"buy_and_hold", "momentum"}
    assert (both["buy_and_hold"].positions == 0.8).all()
    assert len(both["buy_and_hold"].frame) == len(both["momentum"].frame) == len(decisions)


def test_vol_long_is_one_unit_of_risk_sized_from_earlier_returns_only():
    """+1 raw every bar, sized to sigma_target by a plain-loop EWMA volatility of returns closed before the bar."""
    from tests.test_sizing import reference_vol

    rng = np.random.default_rng(5)
    close = 50 * np.exp(np.cumsum(0.02 * rng.standard_normal(400)))
    panel, decisions = panel_of(close), range(250, 390)
    config = Config(tracker=TrackerConfig(max_position_size=0.9))
    sim = vol_long(panel, 0, decisions, config)
    returns = panel.returns[:, 0]
    span = config.profit.vol_span
    for k, t in enumerate(decisions):
        expected = min(0.9, config.profit.sigma_target / reference_vol(returns, t, span, 20))
        assert sim.positions[k] == pytest.approx(expected, rel=1e-9)
    assert 0.2 < sim.positions.mean() < 0.9                    # ~32% volatility: about half a unit
    later = close.copy()
    later[300:] *= np.exp(np.cumsum(0.05 * rng.standard_normal(100)))      # a wilder future from bar 300
    changed = vol_long(panel_of(later), 0, decisions, config)
    np.testing.assert_array_equal(changed.positions[: 300 - 250 + 1], sim.positions[: 300 - 250 + 1])
    assert not np.array_equal(changed.positions, sim.positions)
    direct = simulate(panel, 0, decisions, sim.positions, config.tracker)
    np.testing.assert_allclose(sim.frame["net_return"], direct.frame["net_return"])
    assert set(single_asset_baselines(panel, 0, decisions, config.tracker, config=config)) == {
        "buy_and_hold", "momentum", "vol_long"}
    fraction = config.model_copy(update={"profit": config.profit.model_copy(update={"position_sizing": "fraction"})})
    assert vol_long(panel, 0, decisions, fraction) is None      # it would be buy-and-hold again


def test_portfolio_momentum_book_against_plain_loops():
    """Each asset holds 1/A times its long momentum position at each rebalance, else cash; same costs."""
    from hftraining.portfolio_sim import baselines, rebalance_offsets, simulate_portfolio

    rng = np.random.default_rng(7)
    returns = rng.normal([4e-4, -4e-4], 0.01, size=(700, 2))
    decisions, every, cost = range(400, 699), 5, 0.001
    close = np.vstack([np.ones((1, 2)), np.cumprod(1 + returns, axis=0)])      # close[t+1] / close[t] = 1 + r[t]
    offsets = rebalance_offsets(len(decisions), every)
    bars = decisions.start + offsets
    targets = np.stack([np.clip(reference_momentum(close[:, i], 252, 63, 0.15, 1.0, 252)[bars], 0, 1) / 2
                        for i in range(2)], axis=1)
    book = baselines(returns, decisions, every, cost, ["AAA", "BBB"])["momentum"]
    expected = simulate_portfolio(returns[decisions.start:decisions.stop], offsets, targets, cost)
    np.testing.assert_allclose(book.targets, targets, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(book.net_returns, expected.net_returns, rtol=1e-12, atol=1e-15)
    assert (targets[:, 0] > 0).any() and (targets >= 0).all() and (targets.sum(axis=1) <= 1).all()

"""Risk-unit sizing: the ex-ante volatility against a hand computation, causality, and the tracker."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hftraining.baselines import oracle, oracle_positions
from hftraining.config import Config, ProfitConfig, TrackerConfig
from hftraining.data.panel import Panel
from hftraining.data.synthetic import generate_bars, hidden_drift
from hftraining.objective import net_returns
from hftraining.sizing import ex_ante_volatility, position_scale, risk_scale
from hftraining.tracker import ProfitTracker


def reference_vol(returns, t, span, min_periods, ppy=252):
    """EWMA std (bias-corrected weights) of returns[0 .. t-2], annualised: a plain loop, no pandas."""
    x = [v for v in returns[: max(t - 1, 0)] if not math.isnan(v)]
    if len(x) < min_periods:
        return math.nan
    alpha = 2 / (span + 1)
    w = [(1 - alpha) ** (len(x) - 1 - i) for i in range(len(x))]
    sw, sw2 = sum(w), sum(v * v for v in w)
    mean = sum(wi * xi for wi, xi in zip(w, x, strict=True)) / sw
    biased = sum(wi * (xi - mean) ** 2 for wi, xi in zip(w, x, strict=True)) / sw
    return math.sqrt(biased * sw * sw / (sw * sw - sw2)) * math.sqrt(ppy)


def test_ex_ante_volatility_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    returns = rng.standard_normal(120) * 0.02
    returns[-1] = np.nan                                   # the panel's last bar has no next return
    vol = ex_ante_volatility(returns, span=10, min_periods=5)
    for t in [0, 5, 6, 7, 30, 119]:
        expected = reference_vol(returns, t, span=10, min_periods=5)
        if math.isnan(expected):
            assert math.isnan(vol[t])
        else:
            assert vol[t] == pytest.approx(expected, rel=1e-9)


def test_volatility_and_scale_are_causal_and_lagged():
    """Perturbing returns from bar k on leaves every estimate up to decision bar k+1 unchanged."""
    rng = np.random.default_rng(1)
    returns = rng.standard_normal(300) * 0.01
    k = 150
    changed = returns.copy()
    changed[k:] *= 5
    a, b = risk_scale(returns, 0.15, 2.0), risk_scale(changed, 0.15, 2.0)
    np.testing.assert_array_equal(a[: k + 2], b[: k + 2])   # returns[k] closes at k+1; used from k+2 on
    assert not np.array_equal(a[k + 2:], b[k + 2:])


def test_risk_scale_targets_volatility_with_a_cap_and_no_position_before_an_estimate():
    returns = np.full(200, np.nan)
    rng = np.random.default_rng(2)
    returns[:-1] = rng.standard_normal(199) * 0.02        # ~32% annual volatility
    scale = risk_scale(returns, 0.15, cap=1.0)
    assert (scale[:21] == 0).all()                         # fewer than 20 returns known
    vol = ex_ante_volatility(returns)
    np.testing.assert_allclose(scale[30:], np.minimum(1.0, 0.15 / vol[30:]))
    calm = risk_scale(returns * 0.1, 0.15, cap=1.5)        # ~3% volatility: leverage capped at 1.5
    assert calm[30:].max() == 1.5


def panel_of(close, source="csv", symbol="X", dates=None):
    n = len(close)
    ohlc = np.repeat(np.asarray(close)[:, None, None], 4, axis=2)
    returns = np.append(close[1:] / close[:-1] - 1, np.nan)[:, None]
    dates = dates if dates is not None else pd.date_range("2019-01-01", periods=n, freq="B").to_numpy()
    return Panel([symbol], dates, ["f"], np.zeros((n, 1, 1), np.float32), ohlc, returns,
                 data_source={symbol: source})


def test_objective_on_traded_positions_matches_the_tracker():
    """Risk-sized positions: the training objective's net return equals the tracker's, bar for bar."""
    rng = np.random.default_rng(3)
    close = 40 * np.exp(np.cumsum(rng.standard_normal(400) * 0.015))
    panel = panel_of(close)
    profit, tracker = ProfitConfig(sigma_target=0.15), TrackerConfig(max_position_size=1.0)
    scale = position_scale(panel, profit, tracker)[:, 0]
    raw = np.tanh(rng.standard_normal(400))
    traded = raw * scale                                   # |traded| <= cap, so the tracker does not clip
    sim = ProfitTracker.from_config(tracker).run(traded, close=close)
    objective = net_returns(torch.from_numpy(np.append(0.0, traded[:-1]))[None],
                            torch.from_numpy(np.append(0.0, panel.returns[:-1, 0]))[None], 0.001)
    np.testing.assert_allclose(objective.numpy()[0], sim.net_returns, rtol=1e-12, atol=1e-15)


def test_fraction_sizing_keeps_raw_positions():
    panel = panel_of(np.linspace(10, 20, 50))
    scale = position_scale(panel, ProfitConfig(position_sizing="fraction"), TrackerConfig())
    assert (scale == 1).all()


def test_oracle_knows_the_planted_drift():
    """The oracle holds sign(drift_t) in risk units; on an edge-2 market its Sharpe is near 2, at edge 0 near 0."""
    config = Config()
    config.data.synthetic_bars, config.data.synthetic_seed, config.data.synthetic_edge = 5000, 3, 2.0
    bars = generate_bars("SYN", 5000, 3, edge=2.0)
    drift = hidden_drift("SYN", 5000, 3, edge=2.0)
    assert drift.index.equals(bars.index)
    close = bars["adj_close"].to_numpy()
    log_returns = np.diff(np.log(close))                  # the drift is the mean of bar t's log return
    assert np.corrcoef(log_returns, drift.to_numpy()[1:])[0, 1] > 0.05
    panel = panel_of(close, source="synthetic", symbol="SYN", dates=bars.index.to_numpy())
    decisions = range(100, 4998)
    sim = oracle(panel, 0, decisions, config)
    scale = position_scale(panel, config.profit, config.tracker)[100:4998, 0]
    np.testing.assert_allclose(sim.positions, np.sign(drift.to_numpy()[100:4998]) * scale)
    assert 1.3 < sim.metrics["sharpe_ratio"] < 3.5
    flat = Config()
    flat.data.synthetic_bars, flat.data.synthetic_seed, flat.data.synthetic_edge = 5000, 3, 0.0
    bars0 = generate_bars("SYN", 5000, 3, edge=0.0)
    panel0 = panel_of(bars0["adj_close"].to_numpy(), source="synthetic", symbol="SYN", dates=bars0.index.to_numpy())
    assert abs(oracle(panel0, 0, decisions, flat).metrics["sharpe_ratio"]) < 0.7
    assert oracle(panel_of(close), 0, decisions, config) is None          # real data: no drift known
    assert list(oracle_positions([0.2, -0.1, 0.0, np.nan])) == [1.0, -1.0, 0.0, 0.0]

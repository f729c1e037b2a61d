"""PSR, DSR, bootstrap interval and cost sensitivity against independent computations; the trial registry."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from hftraining import significance as sig
from hftraining.backtest import with_cost
from hftraining.config import TrackerConfig
from hftraining.data.panel import Panel
from hftraining.evaluation import simulate
from hftraining.trials import TrialScope, count_trials, read_trials, register_trial, trial_sharpes

stats = pytest.importorskip("scipy.stats")
P = 252


@pytest.fixture
def returns():
    """A fixed fat-tailed, left-skewed daily series with a small positive drift."""
    rng = np.random.default_rng(3)
    r = 0.0006 + 0.01 * rng.standard_t(4, 600)
    r[rng.random(600) < 0.02] -= 0.03
    return r


def hand_psr(r, benchmark_per_bar):
    sr = r.mean() / r.std(ddof=1)
    skew = stats.skew(r)
    kurt = stats.kurtosis(r, fisher=False)
    z = (sr - benchmark_per_bar) * math.sqrt(len(r) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr ** 2)
    return stats.norm.cdf(z)


def test_psr_matches_hand_formula(returns):
    assert sig.moments(returns) == pytest.approx((stats.skew(returns), stats.kurtosis(returns, fisher=False)))
    assert stats.skew(returns) < -0.1                  # the series really is skewed: the correction matters
    assert sig.probabilistic_sharpe_ratio(returns) == pytest.approx(hand_psr(returns, 0.0), abs=1e-12)
    assert sig.probabilistic_sharpe_ratio(returns, benchmark=0.5) == pytest.approx(
        hand_psr(returns, 0.5 / math.sqrt(P)), abs=1e-12)
    assert sig.probabilistic_sharpe_ratio(-returns) == pytest.approx(hand_psr(-returns, 0.0), abs=1e-12)


def test_dsr_matches_hand_formula(returns):
    trial_sharpes = [0.3, -0.2, 1.1, 0.5, 0.0, 0.8]
    n = 10
    variance = np.var(trial_sharpes, ddof=1) / P
    gamma = 0.5772156649015329
    sr0 = math.sqrt(variance) * ((1 - gamma) * stats.norm.ppf(1 - 1 / n) + gamma * stats.norm.ppf(1 - 1 / (n * math.e)))
    out = sig.deflated_sharpe_ratio(returns, n, trial_sharpes)
    assert out["sr0"] == pytest.approx(sr0 * math.sqrt(P), rel=1e-9)
    assert out["dsr"] == pytest.approx(hand_psr(returns, sr0), abs=1e-12)
    assert out["dsr"] < sig.probabilistic_sharpe_ratio(returns)          # more trials, less belief


def test_dsr_fallbacks(returns):
    one = sig.deflated_sharpe_ratio(returns, 1, [0.4, 0.9])
    assert one["sr0"] == 0 and one["dsr"] == pytest.approx(sig.probabilistic_sharpe_ratio(returns))
    few = sig.deflated_sharpe_ratio(returns, 5, [0.4])                   # < 2 Sharpes: null sampling variance
    sr0 = math.sqrt(1 / (len(returns) - 1)) * sig.expected_max_sharpe(5, 1.0)
    assert few["sr0"] == pytest.approx(sr0 * math.sqrt(P)) and "null" in few["variance_source"]
    assert math.isnan(sig.probabilistic_sharpe_ratio(np.full(10, 0.001)))


def test_bootstrap_contains_point_narrows_and_is_seeded():
    rng = np.random.default_rng(0)
    small, large = 0.0005 + 0.01 * rng.standard_normal(250), 0.0005 + 0.01 * rng.standard_normal(4000)
    a, b = sig.bootstrap_sharpe_ci(small, n_boot=1000, seed=1), sig.bootstrap_sharpe_ci(large, n_boot=1000, seed=1)
    for ci in (a, b):
        assert ci["low"] < ci["point"] < ci["high"]
    assert (a["high"] - a["low"]) > 2.5 * (b["high"] - b["low"])          # ~ sqrt(16) = 4 times narrower
    assert sig.bootstrap_sharpe_ci(small, n_boot=500, seed=7) == sig.bootstrap_sharpe_ci(small, n_boot=500, seed=7)
    # iid returns: the interval is close to the textbook +-1.96 * sqrt(P / n)
    assert b["high"] - b["low"] == pytest.approx(2 * 1.96 * math.sqrt(P / 4000), rel=0.25)


def test_stationary_bootstrap_indices_are_wrapped_blocks():
    idx = sig.stationary_bootstrap_indices(50, 200, 10.0, np.random.default_rng(0))
    assert idx.shape == (200, 50) and idx.min() >= 0 and idx.max() < 50
    continues = (idx[:, 1:] == (idx[:, :-1] + 1) % 50).mean()
    assert continues == pytest.approx(0.9, abs=0.03)                      # new block with probability 1/10


def constant_trend_panel(n=41, growth=0.001):
    close = 100 * (1 + growth) ** np.arange(n)
    ohlc = np.repeat(close[:, None, None], 4, axis=2)
    returns = np.append(close[1:] / close[:-1] - 1, np.nan)[:, None]
    return Panel(["X"], pd.date_range("2020-01-01", periods=n, freq="B").to_numpy(), ["f"],
                 np.zeros((n, 1, 1), np.float32), ohlc, returns)


def test_cost_sensitivity_monotone_and_break_even_exact():
    panel = constant_trend_panel()
    decisions = range(40)
    positions = np.tile([1.0, 0.5], 20)                 # asset earns 0.1% a bar; turnover 0.5 a bar after the first
    tracker = TrackerConfig(commission=0.0004, slippage=0.0001)
    grid = [0, 5, 10, 20, 50]
    costs = sig.cost_sensitivity(
        lambda bps: simulate(panel, 0, decisions, positions, with_cost(tracker, bps)).frame["net_return"].to_numpy(),
        grid)
    sharpes = [row["sharpe_ratio"] for row in costs["rows"]]
    totals = [row["total_return"] for row in costs["rows"]]
    assert all(np.diff(sharpes) < 0) and all(np.diff(totals) < 0)
    gross = 0.001 * positions.mean()                    # mean gross return per bar
    turnover = (1.0 + 0.5 * 39) / 40                    # mean |p_t - p_{t-1}| with p_{-1} = 0
    assert costs["break_even_bps"] == pytest.approx(gross / turnover * 1e4, rel=1e-9)
    assert costs["break_even_how"] == "interpolated"
    split = with_cost(tracker, 20)
    assert split.commission == pytest.approx(0.0016) and split.slippage == pytest.approx(0.0004)


def test_break_even_edge_cases():
    assert sig.break_even_cost([0, 10], [-1e-4, -2e-4]) == (None, "not profitable even at 0 bps")
    assert sig.break_even_cost([0, 10], [1e-4, 1e-4])[0] is None
    value, how = sig.break_even_cost([0, 5, 10], [3e-4, 2.5e-4, 2e-4])
    assert value == pytest.approx(30.0) and how.startswith("extrapolated")


def test_summary_is_json_ready(returns):
    out = sig.significance_summary(np.full(5, 0.001), n_trials=3, n_boot=50)
    json.dumps(out, allow_nan=False)
    assert out["psr"] is None
    full = sig.significance_summary(returns, n_trials=4, trial_sharpes=[0.1, 0.2, 0.9], n_boot=200)
    assert 0 < full["deflated"]["dsr"] < full["psr"] < 1


def test_trial_registry(tmp_path):
    register_trial(tmp_path, "r1", "single", ["aapl"], 0.5, 0.2)
    register_trial(tmp_path, "r2", "single", ["AAPL"], 0.7, float("nan"))
    register_trial(tmp_path, "r3", "portfolio", ["MSFT", "AAPL"], 1.0, 0.4)
    register_trial(tmp_path, "r1", "single", ["AAPL"], 0.6, 0.3)          # a resumed run replaces its line
    (tmp_path / "trials.jsonl").open("a").write("not json\n")
    assert count_trials(tmp_path) == 3
    assert count_trials(tmp_path, ["AAPL"]) == 2
    assert count_trials(tmp_path, ["AAPL", "MSFT"]) == 1
    assert trial_sharpes(tmp_path, ["AAPL"]) == [0.3]                      # NaN is stored as null and skipped
    assert [r["run_id"] for r in read_trials(tmp_path, ["AAPL"])] == ["r2", "r1"]
    # a new run being evaluated counts itself; a backtest of r1 does not add a trial
    assert TrialScope(tmp_path, ["AAPL"], run_id="r9").stats(1.5) == (3, [0.3, 1.5])
    assert TrialScope(tmp_path, ["AAPL"], run_id="r1", new_trial=False).stats() == (2, [0.3])
    assert TrialScope(tmp_path / "empty", ["AAPL"], run_id="x").stats(0.1) == (1, [0.1])

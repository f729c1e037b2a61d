"""ProfitTracker: hand-computed bars, the cost formula the objective uses, stops on the price path."""

import numpy as np
import pandas as pd
import pytest

from hftraining import metrics, tracker
from hftraining.config import TrackerConfig
from hftraining.tracker import ProfitTracker

# Five bars whose close-to-close returns are +10%, -10%, +10%, +10%.
CLOSE = np.array([100.0, 110.0, 99.0, 108.9, 119.79])
C = 0.002  # commission 0.001 + slippage 0.001 per unit of turnover


def costly(**kw) -> ProfitTracker:
    return ProfitTracker(commission=0.001, slippage=0.001, **kw)


def free(**kw) -> ProfitTracker:
    return ProfitTracker(commission=0.0, slippage=0.0, **kw)


def random_market(seed: int, T: int):
    rng = np.random.default_rng(seed)
    close = 100 * np.cumprod(1 + rng.normal(0.0003, 0.02, T))
    open_ = np.concatenate(([close[0]], close[:-1] * (1 + rng.normal(0, 0.01, T - 1))))
    high = np.maximum(open_, close) * (1 + rng.exponential(0.01, T))
    low = np.minimum(open_, close) * (1 - rng.exponential(0.01, T))
    # sticky targets in a few sizes so trades last several bars and repeat after stops
    levels = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], T)
    keep = rng.random(T) < 0.7
    positions = levels.copy()
    for t in range(1, T):
        if keep[t]:
            positions[t] = positions[t - 1]
    return positions, close, high, low, open_


# --- hand-computed 5-bar examples -------------------------------------------------------------

def test_long_hand_computed():
    res = costly().run(np.ones(5), CLOSE)
    np.testing.assert_allclose(res.net_returns, [0.1 - C, -0.1, 0.1, 0.1], rtol=1e-12)
    assert res.net_returns.size == 4  # the last bar's position earns nothing
    np.testing.assert_allclose(res.equity, 100_000 * np.cumprod([1, 1.1 - C, 0.9, 1.1, 1.1]), rtol=1e-12)
    (trade,) = res.trades.itertuples()
    assert (trade.side, trade.exit_reason) == ("long", "end")
    assert trade.entry_price == pytest.approx(100.1) and trade.exit_price == pytest.approx(119.79)
    assert res.metrics["trade_count"] == 1 and res.metrics["win_rate"] is None  # nothing closed


def test_short_hand_computed():
    res = costly().run(-np.ones(5), CLOSE)
    np.testing.assert_allclose(res.net_returns, [-0.1 - C, 0.1, -0.1, -0.1], rtol=1e-12)
    assert res.trades["entry_price"].iloc[0] == pytest.approx(99.9)  # a short sells: close * (1 - s)


def test_flip_hand_computed():
    res = costly().run([1.0, -1.0, -1.0, 1.0, 0.0], CLOSE)
    # a flip trades |1 - (-1)| = 2 units
    np.testing.assert_allclose(res.net_returns, [0.1 - C, 0.1 - 2 * C, -0.1, 0.1 - 2 * C], rtol=1e-12)
    t = res.trades
    assert t["side"].tolist() == ["long", "short", "long"]
    assert t["exit_reason"].tolist() == ["signal", "signal", "end"]
    assert t["entry_index"].tolist() == [0, 1, 3] and t["exit_index"].tolist() == [1, 3, 4]
    np.testing.assert_allclose(t["entry_price"], [100.1, 110 * 0.999, 108.9 * 1.001], rtol=1e-12)
    np.testing.assert_allclose(t["exit_price"], [110 * 0.999, 108.9 * 1.001, 119.79], rtol=1e-12)
    long_1 = (1 + 0.1 - C) * (1 - C) - 1
    short_1 = (1 + 0.1 - C) * (1 - 0.1) * (1 - C) - 1
    np.testing.assert_allclose(t["return"], [long_1, short_1, 0.1 - C], rtol=1e-12)
    assert long_1 > 0 > short_1
    assert res.metrics["win_rate"] == 0.5  # one of two closed trades won; the open one is not counted
    assert res.metrics["trade_count"] == 3
    assert res.metrics["turnover"] == pytest.approx((1 + 2 + 0 + 2) / 4)


def test_costs_only_on_turnover():
    res = costly().run([0.5, 0.5, 0.5, 0.0, 0.0], CLOSE)
    # entering costs c * 0.5 once; holding costs nothing; going flat costs c * 0.5
    np.testing.assert_allclose(res.net_returns, [0.05 - 0.5 * C, -0.05, 0.05, -0.5 * C], rtol=1e-12)
    np.testing.assert_allclose(res.costs, [0.5 * C, 0, 0, 0.5 * C], rtol=1e-12)
    flat = costly().run(np.zeros(5), CLOSE)
    assert np.all(flat.net_returns == 0) and flat.trades.empty and flat.metrics["trade_count"] == 0


def test_position_cap():
    res = costly(max_position_size=0.5).run([2.0, 1.0, -3.0, 0.25, 9.0], CLOSE)
    np.testing.assert_array_equal(res.positions, [0.5, 0.5, -0.5, 0.25])
    np.testing.assert_allclose(res.net_returns, [0.05 - 0.5 * C, -0.05, -0.05 - C, 0.025 - 0.75 * C], rtol=1e-12)


def test_entry_and_exit_prices_differ():
    """Prior defect 5: entry price equal to exit price made every trade return minus the fees."""
    res = free().run([1.0, 0.0, 0.0, 0.0, 0.0], CLOSE)
    (trade,) = res.trades.itertuples()
    assert trade.entry_price == 100.0 and trade.exit_price == 110.0
    assert trade.exit_reason == "signal"
    assert res.trades["return"].iloc[0] == pytest.approx(0.1)  # the price move, not minus the fees
    assert res.metrics["win_rate"] == 1.0


# --- the cost formula the training objective uses ---------------------------------------------

def test_net_equals_objective_formula_independently_computed():
    positions, close, *_ = random_market(0, 300)
    positions = positions * np.random.default_rng(1).uniform(0.2, 1.2, 300)  # some above the cap
    trk = ProfitTracker(commission=0.0007, slippage=0.0003, max_position_size=0.9)
    res = trk.run(positions, close)
    expected, prev = [], 0.0
    for t in range(len(close) - 1):
        p = min(max(positions[t], -0.9), 0.9)
        expected.append(p * (close[t + 1] / close[t] - 1) - 0.001 * abs(p - prev))
        prev = p
    np.testing.assert_allclose(res.net_returns, expected, rtol=1e-12, atol=1e-15)


def test_equity_compounds_and_frame_alignment():
    positions, close, *_ = random_market(2, 400)
    dates = pd.bdate_range("2021-01-01", periods=400)
    res = ProfitTracker(initial_capital=50_000).run(positions, close, dates=dates)
    assert res.equity.size == 400 and res.equity[0] == 50_000
    assert res.equity[-1] / 50_000 == pytest.approx(np.prod(1 + res.net_returns), rel=1e-12)
    assert res.metrics["total_return"] == pytest.approx(res.equity[-1] / 50_000 - 1, rel=1e-12)
    frame = res.to_frame()
    assert list(frame.columns[:5]) == ["date", "position", "asset_return", "gross_return", "cost"]
    assert len(frame) == 399 and frame["date"].iloc[0] == dates[0]
    np.testing.assert_allclose(frame["asset_return"], close[1:] / close[:-1] - 1)
    assert frame["equity"].iloc[-1] == res.equity[-1]
    assert (res.trades["exit_date"] == dates[res.trades["exit_index"]]).all()


def test_trade_returns_compound_to_equity_when_trades_do_not_touch():
    positions = np.array([0, 1, 1, 0.5, 0, 0, -1, -1, 0, 1, 1, 1, 0, 0, 0.7, 0.7], dtype=float)
    close = 100 * np.cumprod(1 + np.random.default_rng(3).normal(0, 0.02, positions.size))
    res = costly().run(positions, close)
    assert res.equity[-1] / res.equity[0] == pytest.approx(np.prod(1 + res.trades["return"]), rel=1e-12)


def test_tracker_trades_agree_with_metrics_trade_stats():
    positions, close, *_ = random_market(4, 500)
    res = costly().run(positions, close)
    stats = metrics.trade_stats(res.positions, res.asset_returns, cost=C)
    np.testing.assert_allclose(res.trades["return"], stats["trade_returns"], rtol=1e-12)
    assert res.metrics["win_rate"] == stats["win_rate"]
    assert res.metrics["trade_count"] == stats["trade_count"]


def test_causality_future_bars_do_not_change_past_returns():
    positions, close, high, low, open_ = random_market(5, 200)
    k = 120
    rng = np.random.default_rng(6)
    bump = np.ones(200)
    bump[k + 1:] = rng.uniform(0.5, 1.5, 200 - k - 1)
    positions2 = positions.copy()
    positions2[k:] = rng.choice([-1.0, 0.0, 1.0], 200 - k)
    for trk in (costly(), costly(stop_loss=0.02, take_profit=0.03)):
        a = trk.run(positions, close, high, low, open_)
        b = trk.run(positions2, close * bump, high * bump, low * bump, open_ * bump)
        # row t uses bars <= t+1 and positions <= t, so rows before k are untouched
        np.testing.assert_array_equal(a.net_returns[:k], b.net_returns[:k])
        np.testing.assert_array_equal(a.positions[:k], b.positions[:k])


# --- stops along the price path ---------------------------------------------------------------

def bars(close, low=None, high=None, open_=None):
    close = np.asarray(close, dtype=float)
    return {"close": close,
            "low": close if low is None else np.asarray(low, dtype=float),
            "high": close if high is None else np.asarray(high, dtype=float),
            "open": close if open_ is None else np.asarray(open_, dtype=float)}


def test_stop_loss_triggers_on_intrabar_low_not_close():
    b = bars([100, 101, 102, 103], low=[50, 94, 101, 102])  # bar 0's low precedes the entry
    res = free(stop_loss=0.05).run(np.ones(4), **b)
    assert res.net_returns[0] == pytest.approx(-0.05)  # filled at the level 95, though close rose
    assert res.stopped.tolist() == [True, False, False]
    np.testing.assert_array_equal(res.positions, [1, 0, 0])  # no re-entry: the target did not change
    (trade,) = res.trades.itertuples()
    assert trade.exit_reason == "stop_loss" and trade.exit_price == pytest.approx(95) and trade.exit_index == 1
    # checked against the close alone the position would never have stopped
    assert not free(stop_loss=0.05).run(np.ones(4), b["close"]).stopped.any()


def test_stop_loss_gap_through_fills_at_open():
    b = bars([100, 92, 93], low=[100, 88, 92], open_=[100, 90, 92])
    res = free(stop_loss=0.05).run([1, 1, 1], **b)
    assert res.net_returns[0] == pytest.approx(-0.10)
    assert res.trades["exit_price"].iloc[0] == pytest.approx(90)


def test_stop_is_checked_from_the_entry_price_along_the_path():
    close = [100, 99, 98, 97, 96, 95]
    b = bars(close, low=np.array(close) - 0.5, open_=[100, 99.5, 98.5, 97.5, 96.5, 95.5])
    res = free(stop_loss=0.035).run([1, 1, 0.5, 0.5, 0.5, 0.5], **b)  # the resize keeps the entry
    assert res.stopped.tolist() == [False, False, True, False, False]  # bar 3's low 96.5 = 100 * 0.965
    assert res.net_returns[2] == pytest.approx(0.5 * (96.5 / 98 - 1))
    np.testing.assert_array_equal(res.positions, [1, 1, 0.5, 0, 0])


def test_take_profit_and_gap_up():
    b = bars([100, 104, 104], high=[100, 108, 104])
    res = free(take_profit=0.05).run([1, 1, 1], **b)
    assert res.net_returns[0] == pytest.approx(0.05)
    assert res.trades["exit_reason"].iloc[0] == "take_profit"
    gap = bars([100, 111, 111], high=[100, 112, 111], open_=[100, 110, 111])
    assert free(take_profit=0.05).run([1, 1, 1], **gap).net_returns[0] == pytest.approx(0.10)


def test_both_levels_in_one_bar_assume_the_stop():
    b = bars([100, 100, 100], low=[100, 94, 100], high=[100, 106, 100])
    res = free(stop_loss=0.05, take_profit=0.05).run([1, 1, 1], **b)
    assert res.trades["exit_reason"].iloc[0] == "stop_loss" and res.net_returns[0] == pytest.approx(-0.05)


def test_short_stops_mirror():
    stop = free(stop_loss=0.05).run([-1, -1, -1], **bars([100, 101, 101], high=[100, 106, 101]))
    assert stop.net_returns[0] == pytest.approx(-0.05) and stop.trades["exit_reason"].iloc[0] == "stop_loss"
    gap = free(stop_loss=0.05).run([-1, -1, -1], **bars([100, 108, 108], high=[100, 109, 108],
                                                         open_=[100, 107, 108]))
    assert gap.net_returns[0] == pytest.approx(-0.07)
    take = free(take_profit=0.05).run([-1, -1, -1], **bars([100, 99, 99], low=[100, 94, 99]))
    assert take.net_returns[0] == pytest.approx(0.05) and take.trades["exit_reason"].iloc[0] == "take_profit"


def test_no_reentry_until_the_target_changes():
    b = bars([100, 101, 102, 103, 104], low=[100, 94, 102, 103, 104])
    same_then_resize = free(stop_loss=0.05).run([1, 1, 1, 0.5, 0.5], **b)
    np.testing.assert_array_equal(same_then_resize.positions, [1, 0, 0, 0.5])
    via_flat = free(stop_loss=0.05).run([1, 1, 0, 1, 1], **b)
    np.testing.assert_array_equal(via_flat.positions, [1, 0, 0, 1])
    assert via_flat.trades["exit_reason"].tolist() == ["stop_loss", "end"]


def test_stop_exit_pays_costs_and_counts_as_a_trade():
    b = bars([100, 101, 102], low=[100, 94, 102])
    res = costly(stop_loss=0.05).run([1, 1, 1], **b)
    level = 100 * 1.001 * 0.95  # from the entry fill price, slippage included
    assert res.net_returns[0] == pytest.approx(level / 100 - 1 - C - C)  # entry and exit
    assert res.trades["exit_price"].iloc[0] == pytest.approx(level * 0.999)
    assert res.trades["return"].iloc[0] == pytest.approx(res.net_returns[0])
    assert res.metrics["trade_count"] == 2 and res.metrics["turnover"] == pytest.approx(2 / 2)


def test_untriggered_stops_equal_the_vectorised_path_exactly():
    positions, close, *_ = random_market(7, 1000)
    plain = costly().run(positions, close)
    never = costly(stop_loss=0.999, take_profit=1e9).run(positions, close)
    np.testing.assert_array_equal(plain.net_returns, never.net_returns)
    pd.testing.assert_frame_equal(plain.trades, never.trades)
    assert plain.metrics == never.metrics


@pytest.mark.skipif(not tracker.HAVE_NUMBA, reason="numba not installed")
def test_numba_and_interpreted_kernels_agree():
    for seed in range(3):
        positions, close, high, low, open_ = random_market(10 + seed, 3000)
        trk = costly(stop_loss=0.02, take_profit=0.03)
        fast = trk.run(positions, close, high, low, open_, use_numba=True)
        slow = trk.run(positions, close, high, low, open_, use_numba=False)
        assert fast.stopped.sum() > 50  # the kernels are exercised, not trivially equal
        np.testing.assert_array_equal(fast.net_returns, slow.net_returns)
        np.testing.assert_array_equal(fast.positions, slow.positions)
        pd.testing.assert_frame_equal(fast.trades, slow.trades)


# --- construction and bad input ---------------------------------------------------------------

def test_from_config():
    trk = ProfitTracker.from_config(TrackerConfig(commission=0.001, slippage=0.0002, stop_loss=0.05),
                                    periods_per_year=365)
    assert trk.cost_rate == pytest.approx(0.0012) and trk.stop_loss == 0.05 and trk.take_profit is None
    assert trk.periods_per_year == 365 and trk.initial_capital == 100_000


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="positions has 4 bars"):
        ProfitTracker().run(np.ones(4), CLOSE)
    with pytest.raises(ValueError, match="NaN"):
        ProfitTracker().run([1, np.nan, 1, 1, 1], CLOSE)
    with pytest.raises(ValueError, match="non-positive"):
        ProfitTracker().run(np.ones(5), CLOSE * [1, 1, 0, 1, 1])
    with pytest.raises(ValueError, match="at least 2 bars"):
        ProfitTracker().run([1.0], [100.0])
    with pytest.raises(ValueError, match="low has 3"):
        ProfitTracker(stop_loss=0.1).run(np.ones(5), CLOSE, low=CLOSE[:3])
    with pytest.raises(ValueError, match="stop_loss"):
        ProfitTracker(stop_loss=1.5)


def test_bench_script_runs_and_writes_json(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_eval.py"
    spec = importlib.util.spec_from_file_location("bench_eval", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--bars", "2000", "--repeats", "1", "--skip-interpreted", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench" / "bench_eval.json").read_text())
    assert report["bars"] == 2000 and report["figures"]["stops"]["bars_per_second"] > 0

"""Portfolio simulation in numpy: weights drift with prices, each rebalance pays for its trade, equity compounds.

Alignment is the tracker's (hftraining.tracker): row t of `returns` is close t -> close t+1, and the
weights decided at the close of bar t earn it. At a rebalance bar the book moves from the weights
that drifted since the last rebalance to the target weights and pays
    cost * sum_i |w_target_i - w_drifted_i|     (risky assets only; the cash leg is free),
charged linearly on that bar like the tracker and the training objective (DESIGN invariant 4):
    net_t = sum_i w_t,i * r_t,i - cost * turnover_t.
Between rebalances w_{t+1,i} = w_t,i (1 + r_t,i) / (1 + sum_j w_t,j r_t,j); cash is 1 - sum_i w_t,i and
earns nothing. The book starts in cash (the first rebalance pays for buying in) and the last bar is
marked with no exit cost, as in the tracker.

Trade metrics of a book: trade_count = bars on which it trades (turnover > metrics.MIN_TRADE), as for
one asset; a book has no closed trades, so win_rate is None (undefined) and period_win_rate = share of
rebalance periods (rebalance bar to the bar before the next) whose compounded net return is positive
is its own metric, logged as profit/period_win_rate; rebal_turnover = mean traded fraction of equity per
rebalance. Every other metric is hftraining.metrics.summarize on the per-bar net returns (exposure =
share of bars with an invested share above MIN_TRADE).
Baselines (1/N rebalanced, buy-and-hold 1/N, each single asset, trailing minimum variance, long-only
time-series momentum) go through the same function on the same bars and costs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from hftraining import metrics

MIN_VARIANCE_LOOKBACK = 252   # bars of trailing returns behind each minimum-variance rebalance
MIN_HISTORY = 20              # fewer trailing bars than this: hold 1/N instead of estimating


@dataclass
class PortfolioSim:
    """One simulated book over N decision bars (row t = decided at close t, earned to close t+1)."""

    weights: np.ndarray        # [N, A] risky weights held during each bar (after rebalance / drift)
    net_returns: np.ndarray    # [N]
    gross_returns: np.ndarray  # [N]
    turnover: np.ndarray       # [N] traded fraction of equity (0 between rebalances)
    rebalance: np.ndarray      # [N] bool, True on rebalance bars
    targets: np.ndarray        # [R, A] target weights at the rebalance bars
    equity: np.ndarray         # [N + 1] compounded from 1.0
    metrics: dict[str, Any]

    @property
    def cash(self) -> np.ndarray:
        return 1.0 - self.weights.sum(axis=1)


def rebalance_offsets(n_bars: int, every: int) -> np.ndarray:
    """Offsets 0, k, 2k, ... inside a range of n_bars decision bars."""
    return np.arange(0, n_bars, every, dtype=np.int64)


def simulate_portfolio(returns: np.ndarray, offsets: np.ndarray, targets: np.ndarray, cost: float,
                       periods_per_year: int = metrics.PERIODS_PER_YEAR) -> PortfolioSim:
    """Drift, rebalance and charge costs bar by bar; see the module docstring for the rules.

    returns [N, A] simple returns of each bar; offsets [R] increasing rebalance bars (offsets[0] = 0);
    targets [R, A] non-negative risky weights with sum <= 1 (the rest is cash).
    """
    returns = np.asarray(returns, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.int64)
    n, a = returns.shape
    if targets.shape != (len(offsets), a):
        raise ValueError(f"targets {targets.shape} must be [rebalances={len(offsets)}, assets={a}]")
    if len(offsets) == 0 or offsets[0] != 0 or np.any(np.diff(offsets) <= 0) or offsets[-1] >= n:
        raise ValueError("offsets must start at 0, increase, and stay inside the bars")
    if not np.all(np.isfinite(returns)) or not np.all(np.isfinite(targets)):
        raise ValueError("returns and targets must be finite")
    if np.any(targets < -1e-9) or np.any(targets.sum(axis=1) > 1 + 1e-6):
        raise ValueError("targets must be long-only weights summing to at most 1 (the rest is cash)")

    is_rebalance = np.zeros(n, dtype=bool)
    is_rebalance[offsets] = True
    weights = np.empty((n, a))
    turnover = np.zeros(n)
    drifted = np.zeros(a)                      # the book starts in cash
    j = 0
    for t in range(n):
        if is_rebalance[t]:
            w = targets[j]
            turnover[t] = np.abs(w - drifted).sum()
            j += 1
        else:
            w = drifted
        weights[t] = w
        growth = 1.0 + w @ returns[t]
        drifted = w * (1.0 + returns[t]) / growth if growth > 0 else np.zeros(a)
    gross = (weights * returns).sum(axis=1)
    net = gross - cost * turnover
    summary = metrics.summarize(net, weights.sum(axis=1), None, periods_per_year,
                                turnover=float(turnover.mean()),
                                trade_count=int(np.count_nonzero(turnover > metrics.MIN_TRADE)))
    periods = period_returns(net, offsets)
    summary["period_win_rate"] = float(np.mean(periods > 0)) if periods.size else None
    summary["rebalances"] = int(len(offsets))
    summary["rebal_turnover"] = float(turnover[offsets].mean())
    return PortfolioSim(weights=weights, net_returns=net, gross_returns=gross, turnover=turnover,
                        rebalance=is_rebalance, targets=targets, equity=metrics.equity_curve(net), metrics=summary)


def period_returns(net: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Compounded net return of each rebalance period [R]."""
    return np.multiply.reduceat(1.0 + np.asarray(net, dtype=np.float64), offsets) - 1.0


# --- minimum variance on trailing data -----------------------------------------------------------

def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {w >= 0, sum w = 1} (sort-based, Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    k = np.arange(1, v.size + 1)
    rho = np.flatnonzero(u - cumulative / k > 0)[-1]
    return np.maximum(v - cumulative[rho] / (rho + 1), 0.0)


def min_variance_weights(history: np.ndarray, iterations: int = 500) -> np.ndarray:
    """Long-only, fully invested weights minimising w' S w for the sample covariance S of history [n, A].

    Projected gradient descent with step 1/L (L = the largest eigenvalue of 2S): converges for this
    convex problem and needs nothing beyond numpy.
    """
    a = history.shape[1]
    if history.shape[0] < MIN_HISTORY:
        return np.full(a, 1.0 / a)
    cov = np.cov(history, rowvar=False).reshape(a, a) + 1e-12 * np.eye(a)
    step = 1.0 / (2.0 * np.linalg.eigvalsh(cov)[-1])
    w = np.full(a, 1.0 / a)
    for _ in range(iterations):
        updated = project_simplex(w - step * 2.0 * cov @ w)
        if np.abs(updated - w).max() < 1e-10:
            return updated
        w = updated
    return w


def min_variance_targets(returns: np.ndarray, bars: np.ndarray, lookback: int = MIN_VARIANCE_LOOKBACK) -> np.ndarray:
    """Target weights [R, A] at each decision bar t in `bars` from returns[t - lookback : t] only.

    returns[s] is close s -> close s+1, so rows < t use closes <= t: known at the close of t.
    """
    return np.stack([min_variance_weights(returns[max(0, t - lookback):t]) for t in np.asarray(bars)])


def baselines(panel_returns: np.ndarray, decisions: range, every: int, cost: float, symbols: list[str],
              periods_per_year: int = metrics.PERIODS_PER_YEAR,
              lookback: int = MIN_VARIANCE_LOOKBACK) -> dict[str, PortfolioSim]:
    """The comparison books on the same bars, schedule and costs as the policy.

    panel_returns [T, A] is the whole panel (the minimum-variance estimate reads the bars before
    each rebalance, which may precede the decision range).
    """
    r = panel_returns[decisions.start:decisions.stop]
    n, a = r.shape
    offsets = rebalance_offsets(n, every)
    equal = np.full((len(offsets), a), 1.0 / a)
    out = {
        "equal_weight": simulate_portfolio(r, offsets, equal, cost, periods_per_year),
        "buy_and_hold_equal": simulate_portfolio(r, offsets[:1], equal[:1], cost, periods_per_year),
        "min_variance": simulate_portfolio(
            r, offsets, min_variance_targets(panel_returns, decisions.start + offsets, lookback), cost,
            periods_per_year),
    }
    out["momentum"] = simulate_portfolio(r, offsets, momentum_targets(panel_returns, decisions.start + offsets),
                                         cost, periods_per_year)
    for i, symbol in enumerate(symbols):
        only = np.zeros((1, a))
        only[0, i] = 1.0
        out[f"hold_{symbol}"] = simulate_portfolio(r, offsets[:1], only, cost, periods_per_year)
    return out


def momentum_targets(panel_returns: np.ndarray, bars: np.ndarray, periods_per_year: int = 252) -> np.ndarray:
    """Long-only momentum book [R, A]: each asset gets 1/A of the book times its single-asset momentum position
    (hftraining.baselines: volatility-scaled 12-month sign, one bar of lag) when that is long, else cash.

    Prices are rebuilt from the returns (close_0 = 1), so the signal at bar t reads closes up to t-1 only.
    """
    from hftraining.baselines import momentum_positions

    returns = np.asarray(panel_returns, dtype=np.float64)
    close = np.vstack([np.ones((1, returns.shape[1])), np.cumprod(1.0 + returns, axis=0)])[:-1]   # close_t
    positions = np.stack([momentum_positions(close[:, i], periods_per_year=periods_per_year)
                          for i in range(returns.shape[1])], axis=1)
    return np.clip(positions[np.asarray(bars)], 0.0, 1.0) / returns.shape[1]


def clean_metrics(values: dict, keep: Optional[list[str]] = None) -> dict:
    """Plain JSON numbers (non-finite -> None), optionally only some keys."""
    out = {}
    for key, value in values.items():
        if keep is not None and key not in keep:
            continue
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        out[key] = value
    return out

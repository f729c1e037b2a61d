"""How much of the synthetic market's edge can any model capture? Prints the ceiling, net of costs.

The oracle knows the hidden drift. A model sees prices only, so the best it can do is estimate the
drift from past returns. For the generator's AR(1) drift, the best causal estimate is a Kalman
filter that knows the generator's own parameters; no model trained on finite data can beat it on
average. This script simulates long paths of `hftraining.data.synthetic`, sizes every strategy in
risk units exactly as the product does (hftraining.sizing) and charges the same costs, and prints:

    oracle (sign of the true drift), Kalman filter (sign and linear), 12-month momentum,
    and each one's share of the oracle's Sharpe: the "edge captured" a perfect learner would reach.

Usage: python scripts/synthetic_ceiling.py [--edge 2] [--bars 200000] [--cost-bps 10]
"""

from __future__ import annotations

import argparse

import numpy as np

from hftraining.baselines import momentum_positions
from hftraining.data.synthetic import DRIFT_PERSISTENCE, PERIODS_PER_YEAR, simulate_returns
from hftraining.metrics import sharpe_ratio
from hftraining.sizing import risk_scale


def kalman_drift(log_returns: np.ndarray, persistence: float, drift_std: float, noise_var: np.ndarray) -> np.ndarray:
    """Filtered drift after observing log_returns[: t + 1], for every t (state AR(1), known parameters)."""
    q = drift_std ** 2 * (1 - persistence ** 2)
    estimate, variance = 0.0, drift_std ** 2
    out = np.empty_like(log_returns)
    for t, y in enumerate(log_returns):
        gain = variance / (variance + noise_var[t])
        estimate += gain * (y - estimate)
        variance *= 1 - gain
        out[t] = estimate
        estimate, variance = persistence * estimate, persistence ** 2 * variance + q
    return out


def net_sharpe(raw: np.ndarray, simple: np.ndarray, scale: np.ndarray, cost: float) -> float:
    """Sharpe of raw positions sized by `scale` (decided at t, earning simple[t + 1]), net of turnover costs."""
    traded = raw * scale
    pnl = traded[:-1] * simple[1:] - cost * np.abs(np.diff(np.concatenate([[0.0], traded])))[:-1]
    return sharpe_ratio(pnl, PERIODS_PER_YEAR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge", type=float, default=2.0)
    parser.add_argument("--bars", type=int, default=200_000)
    parser.add_argument("--cost-bps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    daily_vol = 0.015
    path = simulate_returns(rng, args.bars, edge=args.edge, daily_vol=daily_vol)
    log_r = path.log_returns
    simple = np.expm1(log_r)                        # simple[t]: close t-1 -> close t
    close = 100 * np.exp(np.cumsum(log_r))
    next_returns = np.append(simple[1:], np.nan)    # the panel's convention: close t -> t+1
    scale = risk_scale(next_returns, 0.15, cap=1.0)
    cost = args.cost_bps / 1e4
    drift_std = args.edge / np.sqrt(PERIODS_PER_YEAR) * daily_vol / np.sqrt(2 / np.pi)
    filtered = kalman_drift(log_r, DRIFT_PERSISTENCE, drift_std, path.sigma ** 2)
    rows = {
        "oracle: sign(true drift)": net_sharpe(np.sign(path.drift), simple, scale, cost),
        "Kalman filter, sign": net_sharpe(np.sign(filtered), simple, scale, cost),
        "Kalman filter, linear (unit mean |position|)": net_sharpe(
            filtered / np.abs(filtered).mean(), simple, scale, cost),
        "12-month momentum (the baseline)": sharpe_ratio(
            _momentum_pnl(close, simple, cost), PERIODS_PER_YEAR),
    }
    oracle = rows["oracle: sign(true drift)"]
    print(f"synthetic market, edge {args.edge:g}, {args.bars} bars, net of {args.cost_bps:g} bps, risk-sized")
    for name, value in rows.items():
        print(f"  {name:<48} Sharpe {value:5.2f}   share of oracle {value / oracle:5.2f}")


def _momentum_pnl(close: np.ndarray, simple: np.ndarray, cost: float) -> np.ndarray:
    p = momentum_positions(close)
    return p[:-1] * simple[1:] - cost * np.abs(np.diff(np.concatenate([[0.0], p])))[:-1]


if __name__ == "__main__":
    main()

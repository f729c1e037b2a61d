"""A portfolio policy judged on a range of bars: its target weights at each rebalance, the simulated book
net of costs, the validation record (TensorBoard tags), significance and cost sensitivity, and the
test report files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hftraining import atomic
from hftraining.config import Config
from hftraining.deflated import deflated
from hftraining.portfolio_data import PairStockDataset
from hftraining.portfolio_objective import horizon_net_returns, loss_from_config
from hftraining.portfolio_policy import CASH, PortfolioPolicy, predict_weights, prior_logits
from hftraining.portfolio_sim import PortfolioSim, clean_metrics, rebalance_offsets, simulate_portfolio
from hftraining.report_data import save_series
from hftraining.significance import (
    DEFAULT_COSTS_BPS,
    cost_sensitivity,
    probabilistic_sharpe_ratio,
    significance_summary,
)
from hftraining.tensorboard_log import RunLogger
from hftraining.trials import TrialScope


def simulate_policy(policy: PortfolioPolicy, x: torch.Tensor, returns: np.ndarray, decisions: range, every: int,
                    cost: float, periods_per_year: int) -> tuple[PortfolioSim, np.ndarray]:
    """The policy's book over decision bars: targets [R, M] at decisions.start, +every, ..., simulated net of cost.

    One function for a run's validation/test and for `hftrain backtest`, so a backtest trades as the run did.
    returns [T, A] is the whole panel's next-bar returns (finite), x [T, A, F] its scaled features.
    """
    bars = torch.arange(decisions.start, decisions.stop, every, device=x.device)
    prior = torch.from_numpy(prior_logits(returns, policy.prior, policy.vol_span)).float().to(x.device)
    weights = predict_weights(policy, x, bars, prior=prior)
    sim = simulate_portfolio(returns[decisions.start:decisions.stop], rebalance_offsets(len(decisions), every),
                             weights[:, :policy.n_assets], cost, periods_per_year)
    return sim, weights


@dataclass
class Evaluation:
    sim: PortfolioSim
    weights: np.ndarray      # [R, M] targets incl. cash
    loss: float


def evaluate_policy(policy: PortfolioPolicy, data: PairStockDataset, decisions: range, config: Config) -> Evaluation:
    """Simulate the policy over a split with the tracker's costs; the objective's loss on its periods."""
    sim, weights = simulate_policy(policy, data.x, data.returns, decisions, data.every,
                                   config.cost_per_turnover, config.data.periods_per_year)
    loss = 0.0
    if len(weights) > 1:
        bars = data.rebalance_bars(decisions)
        w = torch.from_numpy(weights).float()[None]
        g = data.growth(bars, decisions.stop).cpu()[None]
        net = horizon_net_returns(w, g, config.profit.transaction_cost_bps / 1e4)
        loss = loss_from_config(net, config).item()
    return Evaluation(sim, weights, loss)


def log_evaluation(logger: RunLogger, step: int, ev: Evaluation, symbols: list[str]) -> None:
    """The DESIGN profit tags (validation, net of costs) plus the mean target weight per asset and turnover."""
    logger.evaluation(step, ev.sim.metrics, {}, ev.loss)
    for name, value in zip(symbols + [CASH], ev.weights.mean(axis=0), strict=False):
        logger.scalar(f"portfolio/weight/{name}", value, step)
    logger.scalar("portfolio/turnover", ev.sim.metrics["rebal_turnover"], step)


def book_frame(dates, sim: PortfolioSim) -> pd.DataFrame:
    """date, position (invested share), net_return of one simulated book: a strategy's curve in report.html."""
    return pd.DataFrame({"date": dates, "position": sim.weights.sum(axis=1), "net_return": sim.net_returns})


def write_portfolio_report(report_dir: Path, panel, decisions: range, symbols: list[str], test: Evaluation,
                           others: dict[str, PortfolioSim], info: dict) -> dict:
    """metrics.json (policy vs baselines), test_returns.csv (held weights and net return per bar), weights.csv,
    and series.csv (every book's net returns, so report.html draws the baselines' curves next to the policy's)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    sim = test.sim
    dates = pd.to_datetime(panel.dates[decisions.start:decisions.stop]).strftime("%Y-%m-%d")
    names = symbols + [CASH]
    mean_weights = dict(zip(names, np.append(sim.targets.mean(axis=0), 1.0 - sim.targets.sum(axis=1).mean()),
                            strict=True))
    summary = {
        "test_start": dates[0], "test_end": dates[-1], "test_bars": len(dates),
        "model": clean_metrics(sim.metrics),
        "baselines": {name: clean_metrics(b.metrics) for name, b in others.items()},
        "mean_weights": {k: float(v) for k, v in mean_weights.items()},
        "definitions": {
            "period_win_rate": "share of rebalance periods with a positive compounded net return",
            "win_rate": "undefined (null): a book has no closed trades",
            "trade_count": "bars on which the book trades (turnover > 1e-6, i.e. rebalances that trade)",
            "rebal_turnover": "mean of sum_i |w_target_i - w_drifted_i| over rebalances (cash excluded)",
            "max_drawdown": "negative number: worst equity / running peak - 1",
        },
        **info,
    }
    held = pd.DataFrame(sim.weights, columns=[f"weight_{s}" for s in symbols])
    held.insert(0, "date", dates)
    held[f"weight_{CASH}"] = sim.cash
    held["turnover"] = sim.turnover
    held["net_return"] = sim.net_returns
    targets = pd.DataFrame(sim.targets, columns=[f"weight_{s}" for s in symbols])
    targets.insert(0, "date", dates[sim.rebalance])
    targets[f"weight_{CASH}"] = 1.0 - sim.targets.sum(axis=1)
    targets["turnover"] = sim.turnover[sim.rebalance]
    atomic.write_json(report_dir / "metrics.json", summary)
    atomic.write_text(report_dir / "test_returns.csv", held.to_csv(index=False, float_format="%.10g"))
    atomic.write_text(report_dir / "weights.csv", targets.to_csv(index=False, float_format="%.10g"))
    save_series(report_dir, {name: book_frame(dates, book) for name, book in {"model": sim, **others}.items()})
    return summary


def significance_and_costs(sim: PortfolioSim, others: dict[str, PortfolioSim], returns: np.ndarray, cost: float,
                           ppy: int, trials: TrialScope, seed: int) -> dict:
    """PSR of every book (added to its metrics), the policy's significance, and its targets re-simulated at other costs.

    returns [N, A] are the decision bars' returns the books were simulated on.
    """
    for book in [sim, *others.values()]:
        book.metrics["psr"] = probabilistic_sharpe_ratio(book.net_returns, 0.0, ppy)
    n_trials, sharpes = trials.stats(sim.metrics["sharpe_ratio"])      # its own Sharpe is one of the trials'
    offsets = np.flatnonzero(sim.rebalance)
    costs = cost_sensitivity(lambda bps: simulate_portfolio(returns, offsets, sim.targets, bps / 1e4, ppy).net_returns,
                             sorted({*DEFAULT_COSTS_BPS, round(cost * 1e4, 6)}), ppy)
    significance = significance_summary(sim.net_returns, n_trials, sharpes, ppy, seed=seed)
    significance["deflated"] = deflated(trials, sim.net_returns, sim.metrics["sharpe_ratio"], ppy)
    return {"significance": significance, "cost_sensitivity": costs, "cost_per_turnover": cost}

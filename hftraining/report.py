"""The test-range report of a run: metrics.json (model vs baselines, same bars and costs) and test_returns.csv.

Every number here comes from decision bars after the validation range and its embargo, which the
model never trained on and which did not pick its checkpoint. `evaluate_and_report` is the one
evaluation `single`, `backtest`, walk-forwards and ensembles share: simulate, compare with baselines,
add significance and cost sensitivity, write the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from hftraining import atomic
from hftraining.baselines import single_asset_baselines
from hftraining.config import Config, TrackerConfig
from hftraining.data.panel import Panel
from hftraining.deflated import deflated
from hftraining.evaluation import Simulation, simulate
from hftraining.metrics import COUNTS, at_volatility
from hftraining.report_data import save_series
from hftraining.significance import (
    DEFAULT_COSTS_BPS,
    cost_sensitivity,
    probabilistic_sharpe_ratio,
    significance_summary,
)
from hftraining.trials import TrialScope


def _clean(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def returns_csv(sim: Simulation) -> str:
    frame = sim.frame[["date", "position", "asset_return", "net_return"]].copy()
    frame["date"] = frame["date"].astype("datetime64[ns]").dt.strftime("%Y-%m-%d")
    return frame.to_csv(index=False, float_format="%.10g")


def write_test_report(report_dir: Path, model: Simulation, baselines: dict[str, Simulation], info: dict,
                      prefix: str = "") -> dict:
    """Write metrics.json and test_returns.csv (prefix names per-symbol files of multi-symbol runs)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    frame = model.frame
    summary = {
        "symbol": model.symbol,
        "test_start": str(frame["date"].iloc[0])[:10],
        "test_end": str(frame["date"].iloc[-1])[:10],
        "test_bars": int(len(frame)),
        "model": _clean(model.metrics),
        "baselines": {name: _clean(sim.metrics) for name, sim in baselines.items()},
        **info,
    }
    atomic.write_json(report_dir / f"{prefix}metrics.json", summary)
    atomic.write_text(report_dir / f"{prefix}test_returns.csv", returns_csv(model))
    return summary


TABLE_KEYS = ["total_return", "sharpe_ratio", "max_drawdown", "volatility", "mean_abs_position", "win_rate",
              "trade_count"]


def format_table(rows: dict[str, dict], keys: Optional[list[str]] = None) -> str:
    """A plain-text table of metrics (rows = strategies) for the terminal.

    A column no row has is left out; an undefined value (None) reads n/a, a missing one "-". Counts
    (metrics.COUNTS) print as integers.
    """
    keys = [k for k in keys or TABLE_KEYS if any(k in metrics for metrics in rows.values())]
    width = max(len(name) for name in rows) + 2
    cols = [max(15, len(k) + 2) for k in keys]
    lines = [" " * width + "".join(f"{k:>{w}}" for k, w in zip(keys, cols, strict=True))]
    for name, metrics in rows.items():
        cells = []
        for k, w in zip(keys, cols, strict=True):
            v = metrics.get(k, "-")
            if v is None:
                v = "n/a"
            elif k in COUNTS and isinstance(v, (int, float)):
                v = int(round(v))
            elif isinstance(v, float):
                v = f"{v:.4f}"
            cells.append(f"{v:>{w}}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


# --- evaluation shared by `single`, `backtest`, walk-forwards and ensembles ------------------------

def with_cost(tracker: TrackerConfig, bps: float) -> TrackerConfig:
    """Tracker settings whose commission + slippage total `bps`, split in the configured proportion."""
    return tracker.with_cost_bps(bps)


@dataclass
class Evaluation:
    """The model and its baselines on one decision range, and the summary written to metrics.json."""

    model: Simulation
    baselines: dict[str, Simulation]
    summary: dict


def evaluate_and_report(report_dir: Path, panel: Panel, symbol: int, decisions: range, positions: np.ndarray,
                        config: Config, info: dict, prefix: str = "", trials: TrialScope | None = None,
                        extra_baselines: dict[str, Simulation] | None = None) -> Evaluation:
    """Simulate, compare with baselines, add significance and cost sensitivity, write metrics + series."""
    ppy = config.data.periods_per_year
    sim = simulate(panel, symbol, decisions, positions, config.tracker, ppy)
    baselines = {**single_asset_baselines(panel, symbol, decisions, config.tracker, ppy, config),
                 **(extra_baselines or {})}
    for each in [sim, *baselines.values()]:
        add_row_metrics(each, config.profit.sigma_target, ppy)
    net = sim.frame["net_return"].to_numpy()
    n_trials, sharpes = trials.stats(sim.metrics["sharpe_ratio"]) if trials else (1, [])
    current_bps = config.cost_per_turnover * 1e4
    costs = cost_sensitivity(
        lambda bps: simulate(panel, symbol, decisions, positions, with_cost(config.tracker, bps), ppy)
        .frame["net_return"].to_numpy(),
        sorted({*DEFAULT_COSTS_BPS, round(current_bps, 6)}), ppy)
    analysis = {"significance": significance_summary(net, n_trials, sharpes, ppy, seed=config.training.seed),
                "cost_sensitivity": costs, "cost_per_turnover": current_bps / 1e4,
                "sigma_target": config.profit.sigma_target}
    if trials:                  # with where N came from, so every rewrite of the report can count again
        analysis["significance"]["deflated"] = deflated(trials, net, sim.metrics["sharpe_ratio"], ppy)
    if "oracle" in baselines:
        analysis["edge_captured"] = edge_captured(sim.metrics["sharpe_ratio"],
                                                  baselines["oracle"].metrics["sharpe_ratio"])
    summary = write_test_report(report_dir, sim, baselines, {**info, **analysis}, prefix=prefix)
    save_series(report_dir, {"model": sim, **baselines}, prefix)
    return Evaluation(sim, baselines, summary)


def add_row_metrics(sim: Simulation, sigma_target: float, periods_per_year: int) -> None:
    """What every row of a report shows beside the tracker's metrics: PSR, mean |position| (the last
    position earns nothing and is left out) and the totals at the target volatility."""
    net = sim.frame["net_return"].to_numpy()
    sim.metrics["psr"] = probabilistic_sharpe_ratio(net, 0.0, periods_per_year)
    sim.metrics["mean_abs_position"] = float(np.abs(sim.frame["position"].to_numpy()[:-1]).mean())
    sim.metrics.update(at_volatility(net, sigma_target, periods_per_year))


def edge_captured(model_sharpe: float | None, oracle_sharpe: float | None) -> float | None:
    """Model Sharpe / oracle Sharpe on the same bars; None when the oracle has no edge to share."""
    if model_sharpe is None or oracle_sharpe is None or oracle_sharpe <= 0:
        return None
    return float(model_sharpe / oracle_sharpe)

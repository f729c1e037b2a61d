"""`hftrain backtest --model <portfolio run>`: run a trained allocation over chosen dates, exactly as it was trained.

The rules of hftraining.backtest (prior defects 12-13), for a group: the panel is built by the same
feature code with the run's own config from the run's data start (`--end` selects decisions, it never
cuts bars before featurising), transformed by the run's saved scaler (pooled across the group, never
refitted), and a differing feature list is refused. The policy's target weights at each rebalance go
through the portfolio simulator used in training (`portfolio.simulate_policy`: drift, cost on the
rebalance trade, `--cost-bps` = total cost per unit turnover) next to 1/N, buy-and-hold 1/N, each asset
alone and minimum variance on the same bars, with significance and cost sensitivity. A range that
overlaps the run's training or validation dates is flagged IN SAMPLE in the log, the metadata and the
report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hftraining import atomic
from hftraining import checkpoint as ckpt
from hftraining.backtest import (
    _check_features,
    _output_root,
    backtest_setup,
    decision_range,
    in_sample_overlap,
    print_backtest_table,
)
from hftraining.data.panel import build_panel
from hftraining.deflated import deflated
from hftraining.layout import Layout, new_run_id
from hftraining.portfolio import (
    TABLE_KEYS,
    Evaluation,
    build_policy,
    rebalance_every,
    simulate_policy,
    write_portfolio_report,
)
from hftraining.portfolio_sim import PortfolioSim, baselines, simulate_portfolio
from hftraining.significance import (
    DEFAULT_COSTS_BPS,
    cost_sensitivity,
    probabilistic_sharpe_ratio,
    significance_summary,
)
from hftraining.trainer import resolve_device
from hftraining.trials import TrialScope

log = logging.getLogger("hftraining")


@dataclass
class PortfolioBacktest:
    backtest_id: str
    model_dir: Path
    report_dir: Path
    symbols: list[str]
    start: str                       # first and last decision dates simulated
    end: str
    in_sample: bool
    overlap: list[str]
    simulation: PortfolioSim
    weights: np.ndarray              # [R, A+1] target weights at the rebalances (cash last, if the policy has it)
    baselines: dict[str, PortfolioSim]
    summary: dict                    # metrics.json, plus report_html
    html: Path | None = None

    @property
    def metrics(self) -> dict:
        return self.summary["model"]


def backtest_portfolio(model_dir, start_date=None, end_date=None, cost_bps=None, config_path=None, overrides=None,
                       source=None, data_dir=None, device=None, out=None, html: bool = True) -> PortfolioBacktest:
    """Backtest a portfolio run over decision dates [start_date, end_date].

    Defaults as `backtest_model`: from the run's test start to the data's last decision bar, which on
    the run's own data is exactly its test range. Rebalances fall every `rebalance_every` bars from the
    first decision bar. Writes metrics.json, test_returns.csv, weights.csv, series.csv, backtest.json
    and report.html under <root>/reports/backtest-<id>/.
    """
    model_dir = Path(model_dir)
    run = ckpt.open_run(model_dir)
    start, end, config = backtest_setup(run, start_date, end_date, cost_bps, config_path, overrides, source,
                                        data_dir, device)
    symbols = list(run.metadata.get("symbols") or run.scaler.symbols)

    root = _output_root(model_dir, Path(out) if out else None, config)
    Layout.at(root).ensure_writable()
    config.paths.root = str(root)
    panel = build_panel(symbols, config, root, progress=False, min_bars=config.data.context_length + 1)
    _check_features(run, panel)
    decisions = decision_range(panel, config.data.context_length, start, end)

    torch_device = resolve_device(config.training.device)
    policy = build_policy(len(panel.feature_names), len(symbols), config)
    ckpt.load_weights(policy, run.weights, model_dir / ckpt.WEIGHTS)
    policy.to(torch_device)
    x = torch.from_numpy(run.scaler.transform(panel)).to(torch_device)
    returns = np.nan_to_num(panel.returns, nan=0.0)
    every = rebalance_every(config)
    cost, ppy = config.tracker.commission + config.tracker.slippage, config.data.periods_per_year
    sim, weights = simulate_policy(policy, x, returns, decisions, every, cost, ppy)
    others = baselines(returns, decisions, every, cost, symbols, ppy)

    first, last = panel.date_str(decisions.start), panel.date_str(decisions.stop - 1)
    overlap = in_sample_overlap(run.metadata, first, last)
    if overlap:
        log.warning("IN SAMPLE: backtest %s .. %s overlaps the model's %s", first, last, " and ".join(overlap))
    backtest_id = new_run_id("backtest-")
    report_dir = Layout.at(root).report(backtest_id)
    report_dir.mkdir(parents=True, exist_ok=False)
    metadata = {
        "kind": "backtest", "backtest_id": backtest_id, "model_dir": str(model_dir.resolve()),
        "model_run_id": run.metadata.get("run_id"), "model_kind": "portfolio", "symbols": symbols,
        "symbol": "_".join(symbols), "requested_start": start_date, "requested_end": end_date,
        "first_decision": first, "last_decision": last, "in_sample": bool(overlap), "overlap": overlap,
        "rebalance_every": every, "include_cash": config.portfolio.include_cash, "report_dir": str(report_dir),
        "data_source": panel.data_source, "data_origin": panel.data_origin,
        "synthetic": any(v == "synthetic" for v in panel.data_source.values()),
        "forecast_backend": {s: panel.forecast.get(s, {}).get("backend", "none") for s in symbols},
        "forecast": panel.forecast, "device": str(torch_device), "versions": ckpt.versions(),
    }
    analysis = significance_and_costs(sim, others, returns[decisions.start:decisions.stop], cost, ppy,
                                      TrialScope(root, symbols, run_id=run.metadata.get("run_id"), new_trial=False),
                                      config.training.seed)
    summary = write_portfolio_report(report_dir, panel, decisions, symbols, Evaluation(sim, weights, 0.0), others,
                                     {**metadata, **analysis})
    atomic.write_json(report_dir / "backtest.json", {**metadata, "cost_per_turnover": cost})
    html_path = None
    if html:
        from hftraining.html_report import write_html_report

        html_path = write_html_report(report_dir, model_dir)
    summary["report_html"] = str(html_path) if html_path else None
    return PortfolioBacktest(backtest_id, model_dir, report_dir, symbols, first, last, bool(overlap), overlap, sim,
                             weights, others, summary, html_path)


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


def print_portfolio_backtest(result: PortfolioBacktest, console=None) -> None:
    from rich.console import Console

    console = console or Console(stderr=True)
    s = result.summary
    print_backtest_table(console, f"portfolio {s['symbol']} (rebalance every {s['rebalance_every']})", result,
                         {"policy": s["model"], **s["baselines"]}, TABLE_KEYS)
    weights = ", ".join(f"{k} {v:.2f}" for k, v in s["mean_weights"].items())
    console.print(f"mean target weights: {weights}\nreport: {result.html or result.report_dir}")

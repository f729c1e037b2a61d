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
from hftraining.data.panel import build_panel
from hftraining.layout import Layout, new_run_id
from hftraining.portfolio_data import rebalance_every
from hftraining.portfolio_eval import Evaluation, significance_and_costs, simulate_policy, write_portfolio_report
from hftraining.portfolio_sim import PortfolioSim, baselines
from hftraining.replay import backtest_setup, check_features, decision_range, in_sample_overlap, output_root
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

    root = output_root(model_dir, Path(out) if out else None, config)
    Layout.at(root).ensure_writable()
    config.paths.root = str(root)
    panel = build_panel(symbols, config, root, progress=False, min_bars=config.data.context_length + 1)
    check_features(run, panel)
    decisions = decision_range(panel, config.data.context_length, start, end)

    torch_device = resolve_device(config.training.device)
    policy = run.model(torch_device)
    x = torch.from_numpy(run.scaler.transform(panel)).to(torch_device)
    returns = np.nan_to_num(panel.returns, nan=0.0)
    every = rebalance_every(config)
    cost, ppy = config.cost_per_turnover, config.data.periods_per_year
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

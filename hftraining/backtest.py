"""`hftrain backtest`: run a trained model over chosen dates, exactly as it was trained, and report it.

Why it is built this way (prior defects 12-13): the panel is built by the same feature code with
the run's own config, the run's saved scaler transforms it (never refitted), and a feature list
that differs from the scaler's is refused. Bars are loaded from the run's data start and never cut
at the backtest's end before featurising, so each position is decided from the same history the
training saw; positions at dates <= D do not change when later bars exist (tested through the CLI).
The model's positions go through the ProfitTracker with costs on turnover, next to buy-and-hold and
momentum on the same bars, with significance and cost sensitivity (`evaluate_and_report`, shared
with `hftrain single`). A range that overlaps the run's training or validation dates is flagged
IN SAMPLE in the log, the metadata and the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hftraining import atomic
from hftraining import checkpoint as ckpt
from hftraining.errors import UserError
from hftraining.evaluation import Simulation
from hftraining.layout import Layout, new_run_id, normalize_symbol
from hftraining.replay import (
    backtest_setup,
    check_features,
    decision_range,
    in_sample_overlap,
    output_root,
)
from hftraining.report import edge_captured, evaluate_and_report, with_cost  # noqa: F401  (importable from here)
from hftraining.trials import TrialScope

log = logging.getLogger("hftraining")


# --- backtest ------------------------------------------------------------------------------------

@dataclass
class BacktestResult:
    backtest_id: str
    model_dir: Path
    report_dir: Path
    symbol: str
    start: str                       # first and last decision dates simulated
    end: str
    in_sample: bool
    overlap: list[str]
    simulation: Simulation
    baselines: dict[str, Simulation]
    summary: dict                    # metrics.json
    html: Path | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def metrics(self) -> dict:
        return self.summary["model"]


def backtest_model(model_path: str | Path, start_date: str | None = None, end_date: str | None = None,
                   stock: str | None = None, cost_bps: float | None = None, *,
                   config_path: Path | None = None, overrides: list[str] | None = None,
                   source: str | None = None, data_dir: str | Path | None = None, device: str | None = None,
                   out: str | Path | None = None, progress: bool = False, html: bool = True) -> BacktestResult:
    """Backtest a trained run over decision dates [start_date, end_date] (default: its test start .. the end).

    `cost_bps` sets commission + slippage so one unit of turnover costs that many bps. Portfolio runs
    go to hftraining.portfolio.backtest_portfolio.
    """
    import torch

    from hftraining.data.panel import build_panel
    from hftraining.evaluation import model_positions
    from hftraining.trainer import resolve_device

    model_dir = Path(model_path)
    run = ckpt.open_run(model_dir)
    if run.metadata.get("kind") == "portfolio":
        return _portfolio_backtest(model_dir, start_date, end_date, cost_bps, config_path=config_path,
                                   overrides=overrides, source=source, data_dir=data_dir, device=device, out=out)
    start, end, config = backtest_setup(run, start_date, end_date, cost_bps, config_path, overrides, source,
                                        data_dir, device)
    trained_on = list(run.metadata.get("symbols") or run.scaler.symbols)
    if stock is None:
        if len(trained_on) != 1:
            raise UserError(f"--stock is required: this model was trained on {', '.join(trained_on)}")
        stock = trained_on[0]
    symbol = normalize_symbol(stock)

    root = output_root(model_dir, Path(out) if out else None, config)
    Layout.at(root).ensure_writable()
    config.paths.root = str(root)
    panel = build_panel([symbol], config, root, progress=progress, min_bars=config.data.context_length + 1)
    check_features(run, panel)
    decisions = decision_range(panel, config.data.context_length, start, end)

    torch_device = resolve_device(config.training.device)
    model = run.model(torch_device)
    x = torch.from_numpy(run.scaler.transform(panel)).to(torch_device)
    positions = model_positions(model, x, panel, 0, decisions, config)

    first, last = panel.date_str(decisions.start), panel.date_str(decisions.stop - 1)
    unseen = symbol not in run.scaler.symbols
    if unseen:
        warn_unseen(run, symbol, trained_on, first, last, start_date is None)
    overlap = in_sample_overlap(run.metadata, first, last)
    if overlap:
        log.warning("IN SAMPLE: backtest %s .. %s overlaps the model's %s%s", first, last, " and ".join(overlap),
                    "" if symbol in trained_on else f" (trained on {', '.join(trained_on)}, tested on {symbol})")
    backtest_id = new_run_id("backtest-")
    layout = Layout.at(root)
    report_dir = layout.report(backtest_id)
    report_dir.mkdir(parents=True, exist_ok=False)
    metadata = {
        "kind": "backtest", "backtest_id": backtest_id, "model_dir": str(model_dir.resolve()),
        "model_run_id": run.metadata.get("run_id"), "model_kind": run.metadata.get("kind"),
        "trained_on": trained_on, "symbol": symbol, "requested_start": start_date, "requested_end": end_date,
        "first_decision": first, "last_decision": last, "in_sample": bool(overlap), "overlap": overlap,
        "data_source": panel.data_source.get(symbol), "data_origin": panel.data_origin.get(symbol),
        "synthetic": panel.data_source.get(symbol) == "synthetic",
        "forecast_backend": panel.forecast.get(symbol, {}).get("backend", "none"), "forecast": panel.forecast,
        "device": str(torch_device), "versions": ckpt.versions(),
        "unseen_symbol": unseen, "scaler_symbols": list(run.scaler.symbols),
        "prior": run.metadata.get("prior"),          # the model run held the always-long prior (hftraining.prior)
    }
    trials = TrialScope(root, trained_on, run_id=run.metadata.get("run_id"), new_trial=False)
    evaluation = evaluate_and_report(report_dir, panel, 0, decisions, positions, config, metadata, trials=trials)
    atomic.write_json(report_dir / "backtest.json", {**metadata, "cost_per_turnover": config.cost_per_turnover})
    html_path = None
    if html:
        from hftraining.html_report import write_html_report

        html_path = write_html_report(report_dir, model_dir)
    return BacktestResult(backtest_id, model_dir, report_dir, symbol, first, last, bool(overlap), overlap,
                          evaluation.model, evaluation.baselines, evaluation.summary, html_path, metadata)


def warn_unseen(run: ckpt.RunFiles, symbol: str, trained_on: list[str], first: str, last: str,
                default_dates: bool) -> None:
    """A model applied to a symbol it never saw (as `finetune` warns): which scaler and which dates it used."""
    scaled = run.scaler.symbols
    train = (run.metadata.get("splits") or {}).get("train") or {}
    stats = (f"{scaled[0]}'s" if len(scaled) == 1 else f"the pooled {', '.join(scaled)}") + " training statistics"
    fitted = f", fitted on {train['start']} .. {train['end']}" if train else ""
    dates = " (the run's own test dates, as no --start was given)" if default_dates else ""
    log.warning("%s: this model was trained on %s and never saw %s; its features are scaled with %s (the run's "
                "scaler.json%s); decisions %s .. %s%s", symbol, ", ".join(trained_on), symbol, stats, fitted, first,
                last, dates)


def _portfolio_backtest(model_dir: Path, start_date, end_date, cost_bps, **kwargs):
    from hftraining.portfolio import backtest_portfolio

    return backtest_portfolio(model_dir, start_date=start_date, end_date=end_date, cost_bps=cost_bps, **kwargs)

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
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from hftraining import atomic
from hftraining import checkpoint as ckpt
from hftraining.baselines import single_asset_baselines
from hftraining.config import Config, TrackerConfig, apply_overrides, parse_yaml, validate
from hftraining.data.panel import Panel
from hftraining.deflated import deflated
from hftraining.errors import UserError
from hftraining.evaluation import Simulation, simulate
from hftraining.layout import Layout, new_run_id, normalize_symbol
from hftraining.metrics import at_volatility
from hftraining.report import format_table, write_test_report
from hftraining.significance import (
    DEFAULT_COSTS_BPS,
    cost_sensitivity,
    probabilistic_sharpe_ratio,
    significance_summary,
)
from hftraining.trials import TrialScope

log = logging.getLogger("hftraining")


# --- evaluation shared by `single` and `backtest` ------------------------------------------------

def with_cost(tracker: TrackerConfig, bps: float) -> TrackerConfig:
    """Tracker settings whose commission + slippage total `bps`, split in the configured proportion."""
    total = tracker.commission + tracker.slippage
    rate = bps / 1e4
    commission = tracker.commission * rate / total if total > 0 else rate
    return tracker.model_copy(update={"commission": commission, "slippage": rate - commission})


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
    from hftraining.html_report import save_series

    ppy = config.data.periods_per_year
    sim = simulate(panel, symbol, decisions, positions, config.tracker, ppy)
    baselines = {**single_asset_baselines(panel, symbol, decisions, config.tracker, ppy, config),
                 **(extra_baselines or {})}
    for each in [sim, *baselines.values()]:
        each.metrics["psr"] = probabilistic_sharpe_ratio(each.frame["net_return"].to_numpy(), 0.0, ppy)
        each.metrics["mean_abs_position"] = float(np.abs(each.frame["position"].to_numpy()[:-1]).mean())
        each.metrics.update(at_volatility(each.frame["net_return"].to_numpy(), config.profit.sigma_target, ppy))
    net = sim.frame["net_return"].to_numpy()
    n_trials, sharpes = trials.stats(sim.metrics["sharpe_ratio"]) if trials else (1, [])
    current_bps = (config.tracker.commission + config.tracker.slippage) * 1e4
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


def edge_captured(model_sharpe: float | None, oracle_sharpe: float | None) -> float | None:
    """Model Sharpe / oracle Sharpe on the same bars; None when the oracle has no edge to share."""
    if model_sharpe is None or oracle_sharpe is None or oracle_sharpe <= 0:
        return None
    return float(model_sharpe / oracle_sharpe)


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


def _day(value: str | None, flag: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        return pd.Timestamp(date.fromisoformat(str(value)))
    except ValueError:
        raise UserError(f"{flag} {value!r}: expected a date YYYY-MM-DD") from None


def forecast_backend_used(metadata: dict) -> str | None:
    """The forecaster that actually produced the run's features (after any fallback), when one did for all symbols.

    A run that asked for Toto on a machine without CUDA trained on the statistical fallback; whatever
    re-featurises its data later (backtest, paper trading, an ensemble) must use that, not the request.
    """
    used = {info.get("backend", "none") for info in (metadata.get("forecast") or {}).values()}
    return used.pop() if len(used) == 1 else None


def pin_forecast_backend(config: Config, metadata: dict) -> Config:
    """A copy of a run's config whose data.forecast_backend is the one its features came from."""
    used = forecast_backend_used(metadata)
    if used is None or used == config.data.resolved_forecast_backend:
        return config
    pinned = config.model_copy(deep=True)
    pinned.data.forecast_backend = used
    return pinned


def backtest_setup(run: ckpt.RunFiles, start_date, end_date, cost_bps, config_path, overrides, source, data_dir,
                   device) -> tuple[pd.Timestamp | None, pd.Timestamp | None, Config]:
    """The checked date range (start defaults to the run's test start) and the config a backtest of `run`
    uses, single-stock and portfolio alike."""
    start, end = _day(start_date, "--start"), _day(end_date, "--end")
    if start is not None and end is not None and start > end:
        raise UserError(f"--start {start_date} is after --end {end_date}")
    if cost_bps is not None and cost_bps < 0:
        raise UserError(f"--cost-bps {cost_bps}: a cost cannot be negative")
    if source is None and data_dir is not None:
        source = "csv"
    config = backtest_config(run.config, config_path, overrides, {
        "data.source": source, "data.data_dir": str(data_dir) if data_dir else None,
        "training.device": device}, forecast_backend=forecast_backend_used(run.metadata))
    if cost_bps is not None:
        config.tracker = with_cost(config.tracker, cost_bps)
    if start is None:                               # default: the run's own test range, out of sample
        test = (run.metadata.get("splits") or {}).get("test")
        start = _day(test["start"], "test start") if test else None
    return start, end, config


def backtest_config(run_config: Config, config_path: Path | None = None, overrides: list[str] | None = None,
                    updates: dict | None = None, forecast_backend: str | None = None) -> Config:
    """The run's config, then a --config file, --set overrides and flag updates on top.

    data.end is cleared: the backtest's end selects decisions after featurising, it does not cut bars.
    `forecast_backend` (what the run actually used) is pinned before the user's overrides: forecast
    feature names do not say which backend made them, so a backtest on a CUDA machine must not
    silently swap the statistical features a CPU-trained model learned for Toto's.
    """
    raw = run_config.model_dump(mode="json")
    if forecast_backend is not None:
        raw["data"]["forecast_backend"] = forecast_backend
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        for section, values in (parse_yaml(path.read_text(), where=str(path)) or {}).items():
            if isinstance(values, dict) and isinstance(raw.get(section), dict):
                raw[section].update(values)
            else:
                raw[section] = values
    apply_overrides(raw, overrides, updates)
    raw["data"]["end"] = None
    raw["paths"]["run_name"] = None
    return validate(raw, f"{config_path or 'the run config.yaml'} for the backtest")


def _output_root(model_dir: Path, out: Path | None, config: Config) -> Path:
    """--out, else the root the run lives under (the folder above `models/`), else paths.root."""
    if out is not None:
        return Path(out)
    parts = model_dir.resolve().parts
    if "models" in parts:
        return Path(*parts[: len(parts) - 1 - parts[::-1].index("models")])
    return Path(config.paths.root)


def decision_range(panel: Panel, context_length: int, start: pd.Timestamp | None,
                   end: pd.Timestamp | None) -> range:
    """Decision bars with start <= date <= end, a full window behind them and a next bar to earn."""
    dates = pd.DatetimeIndex(panel.dates)
    first = max(context_length - 1, int(dates.searchsorted(start)) if start is not None else 0)
    last = min(panel.n_time - 2, int(dates.searchsorted(end, side="right")) - 1 if end is not None else panel.n_time)
    if last < first:
        raise UserError(
            f"{panel.symbols[0]}: no decision bars between {start.date() if start is not None else 'start'} and "
            f"{end.date() if end is not None else 'end'} with {context_length} bars of history and a next bar "
            f"(data covers {panel.date_str(0)} .. {panel.date_str(panel.n_time - 1)})")
    return range(first, last + 1)


def in_sample_overlap(metadata: dict, first: str, last: str) -> list[str]:
    """Which training / validation date ranges of the run, or of the base run it started from, [first, last]
    overlaps, as text."""
    hits = []
    for key, whose in (("splits", ""), ("base_splits", "base ")):
        for name in ("train", "val"):
            span = (metadata.get(key) or {}).get(name)
            if span and span["start"] <= last and first <= span["end"]:
                label = "training" if name == "train" else "validation"
                hits.append(f"{whose}{label} {span['start']} .. {span['end']}")
    return hits


def _check_features(run: ckpt.RunFiles, panel: Panel) -> None:
    saved = run.scaler.feature_names
    listed = ckpt.read_json(run.path / ckpt.FEATURES) if (run.path / ckpt.FEATURES).is_file() else saved
    if list(listed) != list(saved):
        raise UserError(f"--model {run.path}: features.json and scaler.json list different features")
    if list(panel.feature_names) != list(saved):
        missing = sorted(set(saved) - set(panel.feature_names))
        extra = sorted(set(panel.feature_names) - set(saved))
        raise UserError(f"--model {run.path}: the data's features differ from the model's (missing {missing[:4]}, "
                        f"unexpected {extra[:4]}{', order differs' if not (missing or extra) else ''}); "
                        "backtest with the run's forecast backend and feature settings")


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
    from hftraining.model import build_model
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

    root = _output_root(model_dir, Path(out) if out else None, config)
    Layout.at(root).ensure_writable()
    config.paths.root = str(root)
    panel = build_panel([symbol], config, root, progress=progress, min_bars=config.data.context_length + 1)
    _check_features(run, panel)
    decisions = decision_range(panel, config.data.context_length, start, end)

    torch_device = resolve_device(config.training.device)
    model = build_model(len(run.scaler.feature_names), config.data.context_length, config.data.horizon, config.model)
    ckpt.load_weights(model, run.weights, model_dir / ckpt.WEIGHTS)
    model.to(torch_device)
    x = torch.from_numpy(run.scaler.transform(panel)).to(torch_device)
    positions = model_positions(model, x, panel, 0, decisions, config)

    first, last = panel.date_str(decisions.start), panel.date_str(decisions.stop - 1)
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
    }
    trials = TrialScope(root, trained_on, run_id=run.metadata.get("run_id"), new_trial=False)
    evaluation = evaluate_and_report(report_dir, panel, 0, decisions, positions, config, metadata, trials=trials)
    atomic.write_json(report_dir / "backtest.json", {**metadata, "cost_per_turnover": config.tracker.commission
                                                     + config.tracker.slippage})
    html_path = None
    if html:
        from hftraining.html_report import write_html_report

        html_path = write_html_report(report_dir, model_dir)
    return BacktestResult(backtest_id, model_dir, report_dir, symbol, first, last, bool(overlap), overlap,
                          evaluation.model, evaluation.baselines, evaluation.summary, html_path, metadata)


def _portfolio_backtest(model_dir: Path, start_date, end_date, cost_bps, **kwargs):
    from hftraining.portfolio import backtest_portfolio

    return backtest_portfolio(model_dir, start_date=start_date, end_date=end_date, cost_bps=cost_bps, **kwargs)


def significance_line(summary: dict) -> str:
    """One terminal line: PSR, DSR, the bootstrap interval and the break-even cost."""
    def num(value, pattern):
        return "-" if value is None else format(value, pattern)

    sig, costs = summary.get("significance") or {}, summary.get("cost_sensitivity") or {}
    boot, dsr = sig.get("bootstrap") or {}, sig.get("deflated") or {}
    return (f"significance: PSR(SR>0) {num(sig.get('psr'), '.3f')}, DSR {num(dsr.get('dsr'), '.3f')} "
            f"(N={dsr.get('n_trials', '-')}), net Sharpe {num(sig.get('sharpe_ratio'), '.2f')} "
            f"95% CI [{num(boot.get('low'), '.2f')}, {num(boot.get('high'), '.2f')}], break-even cost "
            f"{num(costs.get('break_even_bps'), '.1f')} bps ({costs.get('break_even_how', '-')})")


def print_backtest_table(console, title: str, result, rows: dict, keys: list[str] | None = None) -> None:
    """The part every backtest printout shares: a flagged title, the in-sample warning, the table, significance."""
    s = result.summary
    flags = (" [bold red](SYNTHETIC market)[/]" if s.get("synthetic") else "") + (
        " [bold yellow]IN SAMPLE[/]" if result.in_sample else "")
    console.print(f"\n[bold]backtest {title}[/]{flags} {result.start} .. {result.end} ({s['test_bars']} bars, "
                  f"net of {s['cost_per_turnover'] * 1e4:g} bps per unit turnover)")
    if result.in_sample:
        console.print(f"[yellow]IN SAMPLE: overlaps the model's {' and '.join(result.overlap)}[/]")
    console.print(format_table(rows, keys), markup=False, highlight=False, soft_wrap=True)
    console.print(significance_line(s), markup=False, highlight=False)


def print_backtest(result: BacktestResult, console=None) -> None:
    from rich.console import Console

    console = console or Console(stderr=True)
    s = result.summary
    print_backtest_table(console, result.symbol, result, {"model": s["model"], **s["baselines"]})
    console.print(f"forecaster: {s['forecast_backend']}\nreport: {result.html or result.report_dir}")


def run_backtest_command(model, stock=None, cost_bps=None, config=None, set_=None, out=None, source=None,
                         data_dir=None, start=None, end=None, device=None, json_=False, **_):
    """`hftrain backtest --model RUN_DIR [--stock X] [--start D] [--end D] [--cost-bps N]`."""
    result = backtest_model(model, start_date=start, end_date=end, stock=stock, cost_bps=cost_bps,
                            config_path=config, overrides=set_, source=source, data_dir=data_dir, device=device,
                            out=out)
    if isinstance(result, BacktestResult):
        print_backtest(result)
        if json_:
            from hftraining.cli import emit_json

            emit_json({"backtest_id": result.backtest_id, "report_dir": str(result.report_dir),
                       "report_html": str(result.html) if result.html else None, "symbol": result.symbol,
                       "start": result.start, "end": result.end, "in_sample": result.in_sample,
                       "overlap": result.overlap, "model": result.metrics, "baselines": result.summary["baselines"],
                       "significance": result.summary["significance"],
                       "cost_sensitivity": result.summary["cost_sensitivity"]})
    else:                                             # a portfolio run (hftraining.portfolio_backtest)
        from hftraining.portfolio_backtest import print_portfolio_backtest

        print_portfolio_backtest(result)
        if json_:
            from hftraining.cli import emit_json

            emit_json(result.summary)
    return result

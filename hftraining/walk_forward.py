"""Walk-forward evaluation (`hftrain single --walk-forward`): retrain as time passes, test only on the future.

Each fold trains on bars up to a cut (an expanding window from the first bar, or a rolling window of
the first fold's training length), picks its checkpoint on a validation slice at the end of that
window, and trades the next `retrain_every` bars, with an embargo between training and validation and
between validation and test (as in `make_splits`). The folds' test segments tile the same stretch of
bars that `hftrain single` tests on (the last `data.test_fraction` of the history; raise it to walk
over more years), so the two numbers are comparable, and are stitched into one series that the
ProfitTracker simulates in one pass (costs at fold boundaries included), against buy-and-hold and
momentum on the same bars, with the significance tests of `hftrain backtest`. Every fold fits its own
scaler on its own training rows and is a full run folder. `hftrain portfolio --walk-forward` does the
same for a group of assets (`run_walk_forward_portfolio`; its folds use the group-pooled scaler of a
portfolio run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from hftraining import atomic, run_log
from hftraining import checkpoint as ckpt
from hftraining.config import Config
from hftraining.data.panel import Panel, Scaler, Splits, build_panel, make_splits
from hftraining.errors import UserError
from hftraining.evaluation import buy_and_hold, model_positions, simulate
from hftraining.html_report import write_report_html
from hftraining.layout import Layout, new_run_id, normalize_symbol
from hftraining.lifecycle import RunSpec, Tested, train_run
from hftraining.prepare import Prepared
from hftraining.report import _clean, evaluate_and_report
from hftraining.trainer import resolve_device
from hftraining.trials import TrialScope, register_trial

log = logging.getLogger("hftraining")

Window = Literal["expanding", "rolling"]


@dataclass(frozen=True)
class Fold:
    """Decision-bar ranges of one fold: train | embargo | val | embargo | test."""

    index: int
    train: range
    val: range
    test: range
    embargo: int

    @property
    def splits(self) -> Splits:
        return Splits(train=self.train, val=self.val, test=self.test, embargo=self.embargo)


def check_options(retrain_every: int, window: str) -> None:
    if retrain_every < 1:
        raise UserError(f"--retrain-every {retrain_every}: must be at least 1 bar")
    if window not in ("expanding", "rolling"):
        raise UserError(f"--walk-forward-window {window!r}: expected expanding or rolling")


def make_folds(n_time: int, config: Config, retrain_every: int, window: Window = "expanding") -> list[Fold]:
    """Folds whose test segments tile [test start of make_splits, last decision bar] exactly once.

    A last segment shorter than half of `retrain_every` joins the fold before it (no model is trained
    for a handful of bars).
    """
    check_options(retrain_every, window)
    base = make_splits(n_time, config)
    embargo, n_train, n_val = base.embargo, len(base.train), len(base.val)
    first, last = base.train.start, base.test.stop - 1
    starts = list(range(base.test.start, last + 1, retrain_every))
    if len(starts) > 1 and last + 1 - starts[-1] < retrain_every / 2:
        starts.pop()
    folds = []
    for k, start in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else last + 1
        val = range(start - embargo - n_val, start - embargo)
        train_stop = val.start - embargo
        train_start = first if window == "expanding" else max(first, train_stop - n_train)
        folds.append(Fold(k, range(train_start, train_stop), val, range(start, stop), embargo))
    return folds


def fit_fold_scaler(panel: Panel, train: range, context: int) -> Scaler:
    """Scaler over the feature rows the fold's training windows can see, and no other rows.

    The rows are copied to a C-ordered float64 block so the statistics are summed row by row in float64:
    the same rows give the same bits whatever the rest of the panel holds or where it sits in memory.
    """
    lo = max(0, train.start - context + 1)
    view = replace(panel, features=np.ascontiguousarray(panel.features[lo:train.stop], dtype=np.float64))
    return Scaler.fit(view, range(train.stop - lo))


@dataclass
class FoldResult:
    fold: Fold
    run_id: str
    run_dir: Path
    positions: np.ndarray      # one per test bar of the fold (portfolio: target weights per rebalance)
    validation: dict
    test: dict
    best_step: int
    prior: Optional[dict] = None     # the always-long prior check (hftraining.prior), when it ran


def train_fold(fold: Fold, panel: Panel, symbol: str, config: Config, group_id: str,
               progress: bool = True) -> FoldResult:
    """Train one fold as a full run folder and return its out-of-sample positions on its test bars."""
    layout = Layout.at(config.paths.root)
    scaler = fit_fold_scaler(panel, fold.train, config.data.context_length)
    run_id = f"{group_id}-fold{fold.index:02d}"
    spec = RunSpec(kind="walk_forward_fold", label=f"walk-forward {symbol} fold {fold.index}", run_id=run_id,
                   run_dir=layout.finetuned_model(symbol, run_id),
                   tensorboard_dir=layout.tensorboard("finetuned", run_id, [symbol]), config=config,
                   prepared=Prepared(panel, fold.splits, scaler), learning_rate=config.training.learning_rate,
                   max_steps=config.training.max_steps,
                   metadata={"walk_forward": {"group_id": group_id, "fold": fold.index}}, progress=progress)

    def test(result, run_dir, meta) -> Tested:
        s = panel.symbol_index(symbol)
        x = torch.from_numpy(scaler.transform(panel)).to(next(result.model.parameters()).device)
        positions = model_positions(result.model, x, panel, s, fold.test, config)
        sim = simulate(panel, s, fold.test, positions, config.tracker, config.data.periods_per_year)
        return Tested({"test": _clean(sim.metrics)}, value=positions)

    done = train_run(spec, test=test)
    return FoldResult(fold, run_id, done.run_dir, done.tested.value, done.fit.best_metrics,
                      done.metadata["test"], done.fit.best_step, done.metadata.get("prior"))


def _span(panel: Panel, r: range) -> dict:
    return {"start": panel.date_str(r.start), "end": panel.date_str(r.stop - 1), "bars": len(r)}


@dataclass
class WalkForwardResult:
    group_id: str
    report_dir: Path
    folds: list[FoldResult]
    stitched: range
    summary: dict


@run_log.captured
def run_walk_forward(stock: str, config: Config, retrain_every: int = 252, window: Window = "expanding",
                     progress: bool = True) -> WalkForwardResult:
    """Train every fold, stitch their test segments, simulate once, and write the reports."""
    check_options(retrain_every, window)
    symbol = normalize_symbol(stock)
    config = config.model_copy(deep=True)
    config.data.symbols = [symbol]
    layout = Layout.at(config.paths.root)
    layout.ensure_writable()
    resolve_device(config.training.device)
    panel = build_panel([symbol], config, Path(config.paths.root), progress=progress)
    folds = make_folds(panel.n_time, config, retrain_every, window)
    group_id = config.paths.run_name or new_run_id("wf-")
    run_log.attach(config.paths.root, group_id)
    report_dir = layout.report(group_id)
    log.info("walk-forward %s: %d folds of %d bars (%s window), embargo %d", symbol, len(folds), retrain_every,
             window, folds[0].embargo)
    results = [train_fold(fold, panel, symbol, config, group_id, progress) for fold in folds]

    stitched = range(folds[0].test.start, folds[-1].test.stop)
    s = panel.symbol_index(symbol)
    positions = np.concatenate([r.positions for r in results])
    tracker, ppy = config.tracker, config.data.periods_per_year
    synthetic = any(v == "synthetic" for v in panel.data_source.values())
    info = {"run_id": group_id, "kind": "walk_forward", "folds": len(folds), "window": window,
            "retrain_every": retrain_every, "synthetic": synthetic,
            "fold_runs": [str(r.run_dir) for r in results]}
    # the stitched strategy is one trial (its folds are parts of it, not competing tries)
    trials = TrialScope(config.paths.root, [symbol], run_id=group_id)
    report = evaluate_and_report(report_dir, panel, s, stitched, positions, config, info, trials=trials).summary
    val_sharpes = [r.validation.get("sharpe_ratio") for r in results if r.validation.get("sharpe_ratio") is not None]
    register_trial(config.paths.root, group_id, "walk_forward", [symbol],
                   float(np.mean(val_sharpes)) if val_sharpes else None, report["model"].get("sharpe_ratio"))
    fold_rows = []
    for r in results:
        bh = buy_and_hold(panel, s, r.fold.test, tracker, ppy)
        fold_rows.append({"fold": r.fold.index, "run_id": r.run_id, "run_dir": str(r.run_dir),
                          "train": _span(panel, r.fold.train), "val": _span(panel, r.fold.val),
                          "test": _span(panel, r.fold.test), "best_step": r.best_step,
                          "validation": _clean(r.validation), "test_metrics": r.test,
                          "buy_and_hold": _clean(bh.metrics)})
    document = {"group_id": group_id, "symbol": symbol, "window": window, "retrain_every": retrain_every,
                "embargo": folds[0].embargo, "synthetic": synthetic, "folds": fold_rows,
                "stitched": {**_span(panel, stitched), "model": report["model"], "baselines": report["baselines"],
                             "significance": report.get("significance")}}
    atomic.write_json(report_dir / "walk_forward.json", document)
    summary = {"group_id": group_id, "symbol": symbol, "report_dir": str(report_dir),
               "report_html": write_report_html(report_dir, None), "folds": len(folds),
               "window": window, "retrain_every": retrain_every, "synthetic": synthetic,
               "test_start": report["test_start"], "test_end": report["test_end"], "test_bars": report["test_bars"],
               "test": report["model"], "buy_and_hold": report["baselines"]["buy_and_hold"],
               "baselines": report["baselines"], "significance": report.get("significance"),
               "cost_sensitivity": report.get("cost_sensitivity"), "fold_runs": [r.run_id for r in results]}
    return WalkForwardResult(group_id, report_dir, results, stitched, summary)


# --- portfolio groups --------------------------------------------------------------------------------

@run_log.captured
def run_walk_forward_portfolio(symbols: list[str], config: Config, retrain_every: int = 252,
                               window: Window = "expanding", base_run: Path | None = None,
                               progress: bool = True) -> WalkForwardResult:
    """Walk-forward for `hftrain portfolio`: each fold is a full portfolio run (portfolio.run_prepared).

    `retrain_every` is rounded up to a multiple of the rebalance interval, so the stitched book keeps
    one rebalance schedule; the stitched targets are simulated in one pass (the book drifts across fold
    boundaries instead of restarting in cash) against the portfolio baselines on the same bars. Each fold
    scales with the group-pooled scaler of a portfolio run, fitted on that fold's training rows only.
    """
    from hftraining.portfolio import run_prepared
    from hftraining.portfolio_data import pooled_scaler, rebalance_every
    from hftraining.portfolio_eval import Evaluation, significance_and_costs, write_portfolio_report
    from hftraining.portfolio_sim import baselines, rebalance_offsets, simulate_portfolio

    check_options(retrain_every, window)
    symbols = [normalize_symbol(s) for s in symbols]
    config = config.model_copy(deep=True)
    config.data.symbols = symbols
    base = ckpt.open_base(base_run) if base_run is not None else None
    if base is not None:
        config.model = base.config.model.model_copy()      # the encoder must have the base run's shape
    layout = Layout.at(config.paths.root)
    layout.ensure_writable()
    resolve_device(config.training.device)
    every = rebalance_every(config)
    step = -(-retrain_every // every) * every
    if step != retrain_every:
        log.info("walk-forward portfolio %s: retraining every %d bars (a multiple of the rebalance interval %d)",
                 "_".join(symbols), step, every)
    panel = build_panel(symbols, config, Path(config.paths.root), progress=progress)
    folds = make_folds(panel.n_time, config, step, window)
    if base is not None:            # every fold's test bars out of the base's sample, checked before any training
        from hftraining.base_dates import check_out_of_sample

        check_out_of_sample(panel, folds[0].test, base, config.data.resolved_embargo, "first walk-forward test")
    group_id = config.paths.run_name or new_run_id("wf-")
    run_log.attach(config.paths.root, group_id)
    runs = []
    for fold in folds:
        fold_cfg = config.model_copy(deep=True)
        fold_cfg.paths.run_name = f"{group_id}-fold{fold.index:02d}"
        scaler = pooled_scaler(panel, fold.train, config.data.context_length)      # as run_portfolio scales
        runs.append(run_prepared(Prepared(panel, fold.splits, scaler), fold_cfg, base, progress))

    stitched = range(folds[0].test.start, folds[-1].test.stop)
    returns = np.nan_to_num(panel.returns, nan=0.0)
    cost, ppy = config.cost_per_turnover, config.data.periods_per_year
    targets = np.concatenate([r.test.targets for r in runs])
    sim = simulate_portfolio(returns[stitched.start:stitched.stop], rebalance_offsets(len(stitched), every),
                             targets, cost, ppy)
    others = baselines(returns, stitched, every, cost, symbols, ppy)
    synthetic = any(v == "synthetic" for v in panel.data_source.values())
    report_dir = layout.report(group_id)
    info = {"run_id": group_id, "kind": "walk_forward_portfolio", "symbols": symbols, "folds": len(folds),
            "window": window, "retrain_every": step, "rebalance_every": every, "cost_per_turnover": cost,
            "synthetic": synthetic, "fold_runs": [str(r.run_dir) for r in runs]}
    # the stitched book is one trial (its folds are parts of it, not competing tries)
    info.update(significance_and_costs(sim, others, returns[stitched.start:stitched.stop], cost, ppy,
                                       TrialScope(config.paths.root, symbols, run_id=group_id), config.training.seed))
    report = write_portfolio_report(report_dir, panel, stitched, symbols, Evaluation(sim, targets, 0.0), others, info)
    val_sharpes = [r.fit.best_metrics.get("sharpe_ratio") for r in runs
                   if r.fit.best_metrics.get("sharpe_ratio") is not None]
    register_trial(config.paths.root, group_id, "walk_forward_portfolio", symbols,
                   float(np.mean(val_sharpes)) if val_sharpes else None, report["model"].get("sharpe_ratio"))
    fold_rows = [{"fold": fold.index, "run_id": run.summary["run_id"], "run_dir": str(run.run_dir),
                  "train": _span(panel, fold.train), "val": _span(panel, fold.val), "test": _span(panel, fold.test),
                  "best_step": run.fit.best_step, "validation": _clean(run.fit.best_metrics),
                  "test_metrics": run.summary["test"]} for fold, run in zip(folds, runs, strict=True)]
    atomic.write_json(report_dir / "walk_forward.json", {
        "group_id": group_id, "symbols": symbols, "window": window, "retrain_every": step, "embargo": folds[0].embargo,
        "synthetic": synthetic, "folds": fold_rows,
        "stitched": {**_span(panel, stitched), "model": report["model"], "baselines": report["baselines"]}})
    summary = {"group_id": group_id, "symbol": "_".join(symbols), "report_dir": str(report_dir),
               "report_html": write_report_html(report_dir, None), "folds": len(folds),
               "window": window, "retrain_every": step, "synthetic": synthetic, "test_start": report["test_start"],
               "test_end": report["test_end"], "test_bars": report["test_bars"], "test": report["model"],
               "baselines": report["baselines"], "significance": report.get("significance"),
               "cost_sensitivity": report.get("cost_sensitivity"), "fold_runs": [r.summary["run_id"] for r in runs]}
    fold_results = [FoldResult(fold, run.summary["run_id"], run.run_dir, run.test.targets, run.fit.best_metrics,
                               run.summary["test"], run.fit.best_step) for fold, run in zip(folds, runs, strict=True)]
    return WalkForwardResult(group_id, report_dir, fold_results, stitched, summary)

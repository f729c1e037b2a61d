"""`hftrain portfolio`: learn softmax weights over a group of assets, rebalanced every horizon, judged out of sample.

setup (aligned panel, splits, pooled scaler, run folder) -> train by gradient through the drifted,
cost-charged horizon returns of short episodes (trainer.fit with the portfolio task: resume, AMP,
torchrun DDP, the NaN guard) -> keep the checkpoint with the best validation net Sharpe -> test once
against 1/N, buy-and-hold, each asset alone, a trailing minimum-variance book and momentum -> report.
The parts: hftraining.portfolio_policy (the policy), portfolio_data (the group's data),
portfolio_objective (the loss), portfolio_task (what the trainer trains), portfolio_eval
(simulation, logging, report files).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from hftraining import checkpoint as ckpt
from hftraining import distributed, run_log
from hftraining.config import Config
from hftraining.data.panel import fingerprint
from hftraining.errors import UserError
from hftraining.layout import Layout, new_run_id, normalize_symbol
from hftraining.lifecycle import RunSpec, Tested, Trial, resumed_data, train_run
from hftraining.portfolio_data import PairStockDataset, pooled_scaler, prepare_aligned, rebalance_every  # noqa: F401
from hftraining.portfolio_eval import Evaluation, evaluate_policy, write_portfolio_report  # noqa: F401
from hftraining.portfolio_objective import horizon_net_returns, loss_from_config, portfolio_loss  # noqa: F401
from hftraining.portfolio_policy import CASH_PRIOR, PortfolioPolicy, build_policy, prior_logits  # noqa: F401
from hftraining.portfolio_sim import PortfolioSim, baselines
from hftraining.portfolio_task import PORTFOLIO_EVALUATIONS, load_base_encoder, portfolio_job  # noqa: F401
from hftraining.prepare import Prepared
from hftraining.trainer import FitResult, fit, resolve_device

log = logging.getLogger("hftraining")


def fit_policy(policy: PortfolioPolicy, data: PairStockDataset, config: Config, best_path: Path,
               tensorboard_dir: Path, progress: bool = True) -> FitResult:
    """Train `policy` in place on `data` with trainer.fit, as `hftrain portfolio` does (scripts compare settings
    with it); the best validation weights end in `best_path.parent / model.safetensors` and in `policy`."""
    best_path.parent.mkdir(parents=True, exist_ok=True)
    return fit(portfolio_job(config, data, best_path.parent, tensorboard_dir, policy=policy, progress=progress))


@dataclass
class PortfolioRun:
    model: PortfolioPolicy
    run_dir: Path
    report_dir: Path
    tensorboard_dir: Path
    fit: FitResult
    test: Optional[PortfolioSim]                # rank 0 only (None on the other ranks under torchrun)
    baselines: dict[str, PortfolioSim]
    summary: dict


@run_log.captured
def run_portfolio(symbols: list[str], config: Config, base_run: Optional[Path] = None, progress: bool = True,
                  resume: Optional[Path] = None) -> PortfolioRun:
    """Train, select on validation and test once a softmax allocation over one group of symbols.

    `resume`: continue that run folder from its last checkpoint (its own config, base and data).
    Under torchrun every rank trains its slice of each batch of episodes; rank 0 alone writes the run
    folder, TensorBoard and the report, and only its PortfolioRun carries the test and the summary.
    """
    device = resolve_device(config.training.device)    # fail before loading data on a bad device
    with distributed.session(device) as ctx:
        return _run_portfolio(symbols, config, base_run, progress and ctx.is_main, resume)


def _run_portfolio(symbols: list[str], config: Config, base_run: Optional[Path], progress: bool,
                   resume: Optional[Path]) -> PortfolioRun:
    symbols = [normalize_symbol(s) for s in symbols]
    if len(set(symbols)) < 2:
        raise UserError(f"portfolio {','.join(symbols)}: a group needs at least two different symbols")
    config = config.model_copy(deep=True)
    config.check_costs()
    config.data.symbols = symbols
    if resume is not None:                  # the base it started from, if any
        base_run = ckpt.read_json(Path(resume) / ckpt.METADATA).get("base_run")
    base = ckpt.open_base(base_run) if base_run is not None else None
    if base is not None:
        config.model = base.config.model.model_copy()      # the encoder must have the base run's shape
    Layout.at(config.paths.root).ensure_writable()
    prepared = distributed.main_first(lambda: prepare_aligned(symbols, config, progress))
    distributed.agree(fingerprint(prepared.panel), "training data")
    if base is not None:        # the base's dates: its training and validation bars never become test bars
        from hftraining.base_dates import inherit_splits

        splits = inherit_splits(prepared.panel, base, config.data.context_length, config.data.resolved_embargo)
        prepared = Prepared(prepared.panel, splits, prepared.scaler)
    pooled = Prepared(prepared.panel, prepared.splits,
                      pooled_scaler(prepared.panel, prepared.splits.train, config.data.context_length))
    if resume is not None:
        pooled = resumed_data(Path(resume).resolve(), pooled)
    return run_prepared(pooled, config, base, progress, resume=resume, trial=True)


def run_prepared(prepared: Prepared, config: Config, base: Optional[ckpt.RunFiles] = None,
                 progress: bool = True, resume: Optional[Path] = None, trial: bool = False,
                 on_step=None) -> PortfolioRun:
    """The job after the data is ready (tests and walk-forward folds hand in their own Prepared).

    The scaler is used as given; run_portfolio and each walk-forward fold pass pooled_scaler, fitted on
    their training rows. `trial`: register the run in trials.jsonl (a walk-forward's folds are parts of
    one trial, not trials).
    """
    panel = prepared.panel
    symbols = list(panel.symbols)
    layout = Layout.at(config.paths.root)
    if resume is not None:
        run_dir = Path(resume).resolve()
        run_id = ckpt.read_json(run_dir / ckpt.METADATA)["run_id"]
    else:
        run_id = distributed.broadcast(config.paths.run_name or new_run_id())
        run_dir = layout.portfolio_model(symbols, run_id)
    report_dir = layout.report(run_id)
    if (report_dir / "metrics.json").exists():
        raise UserError(f"{report_dir}: a report already exists for run {run_id}; pick another --set paths.run_name")
    device = distributed.rank_device(resolve_device(config.training.device), distributed.context())
    every = rebalance_every(config)
    data = PairStockDataset(prepared, every, config.portfolio.episode_rebalances, device, config.portfolio.prior,
                            config.profit.vol_span)            # a too-short training range fails here, before any file
    base_meta: dict = {"base_run": None, "base_tensors_copied": 0, "base_splits": None}
    if base is not None:
        from hftraining.base_dates import base_spans, check_out_of_sample

        check_out_of_sample(panel, prepared.splits.test, base, config.data.resolved_embargo)
        with torch.random.fork_rng(devices=[]):        # checks the base's encoder fits, leaves the RNG untouched
            copied = load_base_encoder(build_policy(len(panel.feature_names), len(symbols), config), base,
                                       panel.feature_names)
        base_meta = {"base_run": str(base.path), "base_tensors_copied": copied, "base_splits": base_spans(base)}
    window = min(config.portfolio.context_length or config.data.context_length, config.data.context_length)
    world_size = distributed.context().world_size      # under torchrun each rank trains batch_size episodes a step
    spec = RunSpec(kind="portfolio", label=f"portfolio {'_'.join(symbols)}", run_id=run_id, run_dir=run_dir,
                   tensorboard_dir=layout.tensorboard("portfolio", run_id, symbols), config=config, prepared=prepared,
                   learning_rate=config.portfolio.learning_rate, max_steps=config.portfolio.max_steps,
                   metadata={"rebalance_every": every, "include_cash": config.portfolio.include_cash,
                             "window": window, **base_meta, "world_size": world_size,
                             "global_batch_size": config.portfolio.batch_size * world_size},
                   resume=resume is not None, progress=progress, on_step=on_step,
                   trials=[Trial("portfolio", symbols)] if trial else [],
                   job=lambda spec, run_dir, meta: portfolio_job(config, data, run_dir, spec.tensorboard_dir, base,
                                                                 metadata=meta, resume=spec.resume,
                                                                 progress=spec.progress, on_step=spec.on_step))

    def test(result: FitResult, run_dir: Path, meta: dict) -> Tested:
        tested = evaluate_policy(result.model, data, prepared.splits.test, config)
        cost = config.cost_per_turnover
        others = baselines(data.returns, prepared.splits.test, every, cost, symbols, config.data.periods_per_year)
        info = {"run_id": run_id, "kind": "portfolio", "symbols": symbols, "run_dir": str(run_dir),
                "best_step": result.best_step,
                "rebalance_every": every, "include_cash": config.portfolio.include_cash, "cost_per_turnover": cost,
                "forecast_backend": {s: panel.forecast.get(s, {}).get("backend", "none") for s in symbols},
                "synthetic": meta.get("synthetic", False), "base_run": meta["base_run"]}
        from hftraining.portfolio_eval import significance_and_costs
        from hftraining.trials import TrialScope

        test_range = prepared.splits.test
        info.update(significance_and_costs(tested.sim, others, data.returns[test_range.start:test_range.stop], cost,
                                           config.data.periods_per_year,
                                           TrialScope(config.paths.root, symbols, run_id=run_id), config.training.seed))
        report = write_portfolio_report(report_dir, panel, test_range, symbols, tested, others, info)
        return Tested({"report_dir": str(report_dir), "test": report["model"]}, report["model"].get("sharpe_ratio"),
                      report_dir, (tested, others, report, info))

    done = train_run(spec, test=test)
    result, tb_dir = done.fit, spec.tensorboard_dir
    if done.tested.value is None:                       # not rank 0: rank 0 writes the report
        return PortfolioRun(result.model, done.run_dir, report_dir, tb_dir, result, None, {}, {})
    tested, others, report, info = done.tested.value
    summary = {**info, "report_dir": str(report_dir), "tensorboard_dir": str(tb_dir),
               "checkpoint": str(done.run_dir / ckpt.WEIGHTS), "steps_done": result.steps_done,
               "test_start": report["test_start"], "test_end": report["test_end"], "test_bars": report["test_bars"],
               "validation": result.best_metrics, "test": report["model"], "mean_weights": report["mean_weights"],
               "baselines": report["baselines"], "report_html": done.report_html,
               "log": run_log.log_path(config.paths.root, run_id)}
    return PortfolioRun(result.model, done.run_dir, report_dir, tb_dir, result, tested.sim, others, summary)


def backtest_portfolio(model_dir, *args, **kwargs):
    """`hftrain backtest` of a portfolio run: hftraining.portfolio_backtest.backtest_portfolio (imported late:
    that module builds on this one)."""
    from hftraining.portfolio_backtest import backtest_portfolio as backtest

    return backtest(model_dir, *args, **kwargs)

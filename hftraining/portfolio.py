"""`hftrain portfolio`: learn softmax weights over a group of assets, rebalanced every horizon, judged out of sample.

setup (aligned panel, splits, pooled scaler, run folder) -> train by gradient through the drifted,
cost-charged horizon returns of short episodes -> keep the checkpoint with the best validation net
Sharpe -> test once against 1/N, buy-and-hold, each asset alone and a trailing minimum-variance book
-> report. The parts: hftraining.portfolio_policy (the policy), portfolio_data (the group's data),
portfolio_objective (the loss), portfolio_eval (simulation, logging, report files).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from hftraining import checkpoint as ckpt
from hftraining.config import Config
from hftraining.errors import UserError
from hftraining.layout import Layout, claim_run_dir, new_run_id, normalize_symbol
from hftraining.portfolio_data import PairStockDataset, pooled_scaler, prepare_aligned, rebalance_every
from hftraining.portfolio_eval import Evaluation, evaluate_policy, log_evaluation, write_portfolio_report  # noqa: F401
from hftraining.portfolio_objective import horizon_net_returns, loss_from_config, portfolio_loss  # noqa: F401
from hftraining.portfolio_policy import CASH_PRIOR, PortfolioPolicy, build_policy, prior_logits  # noqa: F401
from hftraining.portfolio_sim import PortfolioSim, baselines, clean_metrics
from hftraining.prepare import Prepared, run_metadata
from hftraining.tensorboard_log import RunLogger
from hftraining.trainer import TrainingDiverged, learning_rate_at, resolve_device

log = logging.getLogger("hftraining")

# A policy is validated at least this many times (at most every training.eval_every steps), so the best-checkpoint
# choice has a few candidates.
PORTFOLIO_EVALUATIONS = 4


# --- training and selection ------------------------------------------------------------------------

@dataclass
class PolicyFit:
    best_step: int
    best_metrics: dict
    steps_done: int
    stopped_early: bool
    history: list = field(default_factory=list)


def fit_policy(policy: PortfolioPolicy, data: PairStockDataset, config: Config, best_path: Path,
               tensorboard_dir: Path, progress: bool = True) -> PolicyFit:
    """AdamW with warmup + cosine over portfolio.max_steps; evaluate on validation, keep the best weights.

    With portfolio.prior_candidate the untrained policy (the prior's book) is evaluated first, as step 0:
    training is kept only where a checkpoint beats it on validation, else the prior is (best_step 0).
    portfolio.turnover_penalty_bps is charged per unit of rebalance turnover in training only.
    """
    pcfg, tcfg = config.portfolio, config.training
    total = pcfg.max_steps
    schedule = config.with_steps(total, evaluations=PORTFOLIO_EVALUATIONS).training   # the one schedule rule
    warmup, eval_every = schedule.warmup_steps, schedule.eval_every
    optimizer = torch.optim.AdamW(policy.parameters(), lr=pcfg.learning_rate, weight_decay=tcfg.weight_decay)
    generator = torch.Generator().manual_seed(tcfg.seed)
    cost = config.profit.transaction_cost_bps / 1e4
    train_cost = cost + pcfg.turnover_penalty_bps / 1e4
    logger = RunLogger(tensorboard_dir)
    logger.text("metadata/data", "; ".join(f"{s}: {o}" for s, o in data.origins.items()), 0)
    bar = logger.progress(total, enabled=progress, description=f"portfolio {'_'.join(data.symbols)}")
    bar.start(0)
    best_value, best_step, best_metrics, bad_evals, history = None, -1, {}, 0, []
    stopped_early = False
    step = 0

    def validate() -> bool:
        """Evaluate on validation, keep the weights if they are the best so far; True = stop early."""
        nonlocal best_value, best_step, best_metrics, bad_evals
        ev = evaluate_policy(policy, data, data.splits.val, config)
        metrics = ev.sim.metrics
        log_evaluation(logger, step, ev, data.symbols)
        bar.update(step, sharpe=metrics["sharpe_ratio"])
        value = ev.loss if tcfg.selection_metric == "loss" else metrics[tcfg.selection_metric]
        history.append({"step": step, "val_loss": ev.loss, **clean_metrics(metrics)})
        improved = best_value is None or (value < best_value if tcfg.selection_metric == "loss"
                                          else value > best_value)
        if improved:
            best_value, best_step, best_metrics, bad_evals = value, step, clean_metrics(metrics), 0
            ckpt.save_tensors(best_path, policy.state_dict())
        else:
            bad_evals += 1
        if tcfg.early_stopping_patience and bad_evals >= tcfg.early_stopping_patience:
            log.info("early stop at step %d: validation %s has not improved for %d evaluations",
                     step, tcfg.selection_metric, bad_evals)
            return True
        return False

    try:
        if pcfg.prior_candidate:
            validate()
        policy.train()
        while step < total:
            lr = learning_rate_at(step, pcfg.learning_rate, warmup, total, tcfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            bars = data.sample_episodes(pcfg.batch_size, generator)                  # [B, P]
            batch, periods = bars.shape
            flat = bars.reshape(-1)
            weights = policy(data.windows(flat, policy.context_length), data.priors(flat)).reshape(batch, periods, -1)
            growth = data.growth(flat, data.splits.train.stop).reshape(batch, periods, -1)
            loss = loss_from_config(horizon_net_returns(weights, growth, train_cost), config)
            if not bool(torch.isfinite(loss)):
                raise TrainingDiverged(f"portfolio loss became NaN/inf at step {step + 1}; lower "
                                       "portfolio.learning_rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), tcfg.grad_clip)
            optimizer.step()
            step += 1
            if step % tcfg.log_every == 0 or step == total:
                logger.scalar("train/loss", loss.item(), step)
                logger.scalar("train/learning_rate", lr, step)
                bar.update(step, loss=loss.item())
            else:
                bar.update(step)
            if (step % eval_every == 0 or step == total) and validate():
                stopped_early = True
                break
    finally:
        bar.stop()
        logger.close()
    ckpt.load_weights(policy, ckpt.load_tensors(best_path), best_path)
    policy.eval()
    return PolicyFit(best_step, best_metrics, step, stopped_early, history)


# --- base initialisation -----------------------------------------------------------------------------

def load_base_encoder(policy: PortfolioPolicy, base: ckpt.RunFiles, feature_names: list[str]) -> int:
    """Copy a base run's encoder weights into the policy; one line and no copy when anything does not fit."""
    where = f"--base {base.path}"
    if list(base.scaler.feature_names) != list(feature_names):
        differ = sorted(set(base.scaler.feature_names) ^ set(feature_names)) or ["order"]
        raise UserError(f"{where}: its features differ from this run's ({', '.join(differ[:4])}); use the same "
                        "data.forecast_backend and data.toto_horizon as the base run")
    expected = policy.encoder.state_dict()
    copied = {}
    for name, tensor in expected.items():
        if name not in base.weights:
            if name.startswith(("position_head.", "aux_head.")):
                continue
            raise UserError(f"{where}: the base weights have no {name}; not an AllocationTransformer run")
        if tuple(base.weights[name].shape) != tuple(tensor.shape):
            raise UserError(f"{where}: encoder weight {name} has shape {tuple(base.weights[name].shape)}, the "
                            f"portfolio encoder needs {tuple(tensor.shape)} (different data.context_length, "
                            "features or model size)")
        copied[name] = base.weights[name]
    policy.encoder.load_state_dict(copied, strict=False)
    return len(copied)


# --- the whole job -------------------------------------------------------------------------------------

@dataclass
class PortfolioRun:
    model: PortfolioPolicy
    run_dir: Path
    report_dir: Path
    tensorboard_dir: Path
    fit: PolicyFit
    test: PortfolioSim
    baselines: dict[str, PortfolioSim]
    summary: dict


def run_portfolio(symbols: list[str], config: Config, base_run: Optional[Path] = None,
                  progress: bool = True) -> PortfolioRun:
    """Train, select on validation and test once a softmax allocation over one group of symbols."""
    symbols = [normalize_symbol(s) for s in symbols]
    if len(set(symbols)) < 2:
        raise UserError(f"portfolio {','.join(symbols)}: a group needs at least two different symbols")
    config = config.model_copy(deep=True)
    config.data.symbols = symbols
    base = ckpt.open_base(base_run) if base_run is not None else None
    if base is not None:
        config.model = base.config.model.model_copy()      # the encoder must have the base run's shape
    Layout.at(config.paths.root).ensure_writable()
    resolve_device(config.training.device)
    prepared = prepare_aligned(symbols, config, progress)
    if base is not None:        # the base's dates: its training and validation bars never become test bars
        from hftraining.base_dates import inherit_splits

        splits = inherit_splits(prepared.panel, base, config.data.context_length, config.data.resolved_embargo)
        prepared = Prepared(prepared.panel, splits, prepared.scaler)
    pooled = pooled_scaler(prepared.panel, prepared.splits.train, config.data.context_length)
    run = run_prepared(Prepared(prepared.panel, prepared.splits, pooled), config, base, progress)
    from hftraining.trials import register_trial

    register_trial(config.paths.root, run.summary["run_id"], "portfolio", symbols,
                   run.summary["validation"].get("sharpe_ratio"), run.summary["test"].get("sharpe_ratio"),
                   run_dir=str(run.run_dir))
    return run


def run_prepared(prepared: Prepared, config: Config, base: Optional[ckpt.RunFiles] = None,
                 progress: bool = True) -> PortfolioRun:
    """The job after the data is ready (tests and walk-forward folds hand in their own Prepared).

    The scaler is used as given; run_portfolio and each walk-forward fold pass pooled_scaler, fitted on
    their training rows.
    """
    panel = prepared.panel
    symbols = list(panel.symbols)
    layout = Layout.at(config.paths.root)
    run_id = config.paths.run_name or new_run_id()
    report_dir = layout.report(run_id)
    if (report_dir / "metrics.json").exists():
        raise UserError(f"{report_dir}: a report already exists for run {run_id}; pick another --set paths.run_name")
    device = resolve_device(config.training.device)
    every = rebalance_every(config)
    data = PairStockDataset(prepared, every, config.portfolio.episode_rebalances, device, config.portfolio.prior,
                            config.profit.vol_span)
    torch.manual_seed(config.training.seed)
    policy = build_policy(len(panel.feature_names), len(symbols), config)
    copied = 0
    if base is not None:
        from hftraining.base_dates import base_spans, check_out_of_sample

        check_out_of_sample(panel, prepared.splits.test, base, config.data.resolved_embargo)
        copied = load_base_encoder(policy, base, panel.feature_names)
    policy.to(device)

    run_dir = claim_run_dir(layout.portfolio_model(symbols, run_id))
    meta = run_metadata("portfolio", run_id, config, prepared, rebalance_every=every,
                        include_cash=config.portfolio.include_cash, window=policy.window,
                        base_run=str(base.path) if base is not None else None, base_tensors_copied=copied,
                        base_splits=base_spans(base) if base is not None else None)
    ckpt.save_run_files(run_dir, config, prepared.scaler, meta)
    tb_dir = layout.tensorboard("portfolio", run_id, symbols)
    result = fit_policy(policy, data, config, run_dir / ckpt.WEIGHTS, tb_dir, progress)

    test = evaluate_policy(policy, data, prepared.splits.test, config)
    cost = config.cost_per_turnover
    others = baselines(data.returns, prepared.splits.test, every, cost, symbols, config.data.periods_per_year)
    backend = {s: panel.forecast.get(s, {}).get("backend", "none") for s in symbols}
    info = {"run_id": run_id, "symbols": symbols, "run_dir": str(run_dir), "best_step": result.best_step,
            "rebalance_every": every, "include_cash": config.portfolio.include_cash, "cost_per_turnover": cost,
            "forecast_backend": backend, "synthetic": meta.get("synthetic", False),
            "base_run": meta["base_run"]}
    from hftraining.portfolio_eval import significance_and_costs
    from hftraining.trials import TrialScope

    test_range = prepared.splits.test
    info.update(significance_and_costs(test.sim, others, data.returns[test_range.start:test_range.stop], cost,
                                       config.data.periods_per_year,
                                       TrialScope(config.paths.root, symbols, run_id=run_id), config.training.seed))
    report = write_portfolio_report(report_dir, panel, prepared.splits.test, symbols, test, others, info)
    ckpt.update_metadata(run_dir, status="completed", best_step=result.best_step, steps_done=result.steps_done,
                         stopped_early=result.stopped_early, device=str(device), report_dir=str(report_dir),
                         validation=result.best_metrics, test=report["model"])
    summary = {**info, "report_dir": str(report_dir), "tensorboard_dir": str(tb_dir),
               "checkpoint": str(run_dir / ckpt.WEIGHTS), "steps_done": result.steps_done,
               "test_start": report["test_start"], "test_end": report["test_end"], "test_bars": report["test_bars"],
               "validation": result.best_metrics, "test": report["model"], "mean_weights": report["mean_weights"],
               "baselines": report["baselines"]}
    from hftraining.html_report import write_report_html

    summary["report_html"] = write_report_html(report_dir, run_dir)
    return PortfolioRun(policy, run_dir, report_dir, tb_dir, result, test.sim, others, summary)


def backtest_portfolio(model_dir, *args, **kwargs):
    """`hftrain backtest` of a portfolio run: hftraining.portfolio_backtest.backtest_portfolio (imported late:
    that module builds on this one)."""
    from hftraining.portfolio_backtest import backtest_portfolio as backtest

    return backtest(model_dir, *args, **kwargs)

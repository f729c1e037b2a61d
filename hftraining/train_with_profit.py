"""`hftrain single`: train one stock's model, pick it on validation profit, report it on the test range.

setup (data, splits, scaler, run folder) -> fit -> test evaluation vs buy-and-hold -> report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hftraining import checkpoint as ckpt
from hftraining import distributed
from hftraining.config import Config
from hftraining.data.panel import Scaler, fingerprint, symbol_views
from hftraining.errors import UserError
from hftraining.evaluation import model_positions
from hftraining.html_report import write_report_html
from hftraining.layout import Layout, claim_run_dir, new_run_id, normalize_symbol
from hftraining.prepare import Prepared, prepare, run_metadata
from hftraining.report import evaluate_and_report
from hftraining.trainer import FitResult, TrainingJob, fit, resolve_device
from hftraining.trials import TrialScope, register_trial

log = logging.getLogger("hftraining")


def evaluate_test(fitted, prepared: Prepared, config: Config, report_dir: Path, info: dict,
                  symbols: Optional[list[str]] = None) -> dict[str, dict]:
    """Test-range simulation of the best checkpoint vs baselines, with significance, per symbol; writes the report."""
    import torch

    panel, splits = prepared.panel, prepared.splits
    device = next(fitted.parameters()).device
    x = torch.from_numpy(prepared.scaler.transform(panel)).to(device)
    summaries = {}
    symbols = symbols or panel.symbols
    for symbol, one, s, rows, test in symbol_views(panel, x, splits.test):   # ragged: each on its own bars
        if symbol not in symbols:
            continue
        positions = model_positions(fitted, rows, one, s, test, config)
        prefix = "" if len(symbols) == 1 else f"{symbol}_"
        trials = TrialScope(config.paths.root, panel.symbols, run_id=info.get("run_id"))
        summaries[symbol] = evaluate_and_report(report_dir, one, s, test, positions, config, info,
                                                prefix=prefix, trials=trials).summary
    for symbol in symbols:
        if symbol not in summaries:
            log.warning("%s: no bars in the test dates; it has no test report", symbol)
    return summaries


@dataclass
class SingleRun:
    model: object
    run_dir: Path
    checkpoint: Path
    report_dir: Path
    tensorboard_dir: Path
    fit: FitResult
    test: dict
    summary: dict


def run_single(symbol: str, config: Config, resume: Optional[Path] = None, progress: bool = True,
               on_step=None) -> SingleRun:
    """Train, select on validation, evaluate on test; the whole `hftrain single` job.

    Under torchrun every rank trains its slice of each batch (hftraining.distributed); rank 0 alone
    writes the run folder, TensorBoard and the report, and only its SingleRun carries test/summary.
    """
    device = resolve_device(config.training.device)    # fail before loading data on a bad device
    with distributed.session(device) as ctx:
        return _run_single(symbol, config, resume, progress and ctx.is_main, on_step, ctx)


def _run_single(symbol: str, config: Config, resume: Optional[Path], progress: bool, on_step,
                ctx: distributed.Context) -> SingleRun:
    symbol = normalize_symbol(symbol)
    layout = Layout.at(config.paths.root)
    layout.ensure_writable()
    if resume is not None:
        run_dir = Path(resume).resolve()
        meta = ckpt.read_json(run_dir / ckpt.METADATA)
        run_id = meta["run_id"]
    prepared = distributed.main_first(lambda: prepare([symbol], config, progress=progress))
    distributed.agree(fingerprint(prepared.panel), "training data")
    if resume is not None:
        prepared = _same_data_as_before(run_dir, meta, prepared)
    if resume is None:
        run_id = distributed.broadcast(config.paths.run_name or new_run_id())
        tcfg = config.training
        meta = run_metadata("single", run_id, config, prepared, world_size=ctx.world_size,
                            global_batch_size=tcfg.batch_size * tcfg.grad_accum_steps * ctx.world_size)

        def claim() -> Path:
            folder = claim_run_dir(layout.finetuned_model(symbol, run_id))
            try:                    # reports/<run> is shared by every symbol: a reused run name must not overwrite it
                claim_run_dir(layout.report(run_id))
            except UserError:
                folder.rmdir()
                raise
            ckpt.save_run_files(folder, config, prepared.scaler, meta)
            return folder

        run_dir = distributed.on_main(claim)
    tb_dir = layout.tensorboard("finetuned", run_id, [symbol])
    job = TrainingJob(config=config, panel=prepared.panel, splits=prepared.splits, scaler=prepared.scaler,
                      run_dir=run_dir, tensorboard_dir=tb_dir, kind=f"single {symbol}",
                      learning_rate=config.training.learning_rate, max_steps=config.training.max_steps,
                      metadata=meta, resume=resume is not None, progress=progress, on_step=on_step)
    result = fit(job)
    report_dir = layout.report(run_id)
    if not ctx.is_main:                                 # rank 0 writes the report
        return SingleRun(result.model, run_dir, result.best_path, report_dir, tb_dir, result, {}, {})
    info = {"run_id": run_id, "run_dir": str(run_dir), "best_step": result.best_step,
            "forecast_backend": prepared.panel.forecast.get(symbol, {}).get("backend", "none"),
            "synthetic": meta.get("synthetic", False),
            "cost_per_turnover": config.cost_per_turnover}
    test = evaluate_test(result.model, prepared, config, report_dir, info)[symbol]
    ckpt.update_metadata(run_dir, status="completed", best_step=result.best_step, steps_done=result.steps_done,
                         stopped_early=result.stopped_early, device=result.device, report_dir=str(report_dir),
                         validation=result.best_metrics, test=test["model"], tensorboard_dir=str(tb_dir),
                         history=result.history, nan_skipped=result.nan_skipped)
    register_trial(config.paths.root, run_id, "single", [symbol], result.best_metrics.get("sharpe_ratio"),
                   test["model"].get("sharpe_ratio"), run_dir=str(run_dir))
    from hftraining.tensorboard_log import RunLogger

    hp = RunLogger(tb_dir)
    hp.hparams({"symbol": symbol, "hidden_size": config.model.hidden_size, "num_layers": config.model.num_layers,
                "learning_rate": config.training.learning_rate, "context_length": config.data.context_length,
                "cost_bps": config.profit.transaction_cost_bps},
               {"val_sharpe": result.best_metrics.get("sharpe_ratio", 0.0),
                "test_sharpe": test["model"]["sharpe_ratio"] or 0.0})
    hp.close()
    summary = {"run_id": run_id, "symbol": symbol, "run_dir": str(run_dir),
               "checkpoint": str(result.best_path), "report_dir": str(report_dir), "tensorboard_dir": str(tb_dir),
               "best_step": result.best_step, "steps_done": result.steps_done,
               "forecast_backend": info["forecast_backend"], "synthetic": info["synthetic"],
               "validation": result.best_metrics, "test": test["model"],
               "buy_and_hold": test["baselines"]["buy_and_hold"], "edge_captured": test.get("edge_captured"),
               "report_html": write_report_html(report_dir, run_dir)}
    return SingleRun(result.model, run_dir, result.best_path, report_dir, tb_dir, result, test, summary)


def _same_data_as_before(run_dir: Path, meta: dict, prepared: Prepared) -> Prepared:
    """A resumed run continues on the bars it started with, scaled by its saved scaler (never refitted)."""
    now = prepared.splits.as_dict(prepared.panel)
    for name in ("train", "val", "test"):
        then = (meta.get("splits") or {}).get(name)
        if then is not None and then != now[name]:
            raise UserError(
                f"--resume {run_dir}: the data changed since this run started ({name} was {then['start']} .. "
                f"{then['end']}, {then['bars']} bars; now {now[name]['start']} .. {now[name]['end']}, "
                f"{now[name]['bars']} bars); pin data.start/data.end to the run's dates or start a new run")
    scaler = Scaler.from_dict(ckpt.read_json(run_dir / ckpt.SCALER))
    if scaler.feature_names != prepared.panel.feature_names:
        raise UserError(f"--resume {run_dir}: the features differ from the run's scaler.json; "
                        "resume with the run's own config")
    return Prepared(prepared.panel, prepared.splits, scaler)


def train_single_stock_with_profit(stock: str = "AAPL", config: Optional[Config] = None,
                                   max_steps: Optional[int] = None, progress: bool = True):
    """The guide's API: train one stock and return (model, checkpoint_path)."""
    config = (config or Config()).model_copy(deep=True)
    if max_steps is not None:
        config = config.with_steps(max_steps)
    run = run_single(stock, config, progress=progress)
    return run.model, run.checkpoint

"""`hftrain single`: train one stock's model, pick it on validation profit, report it on the test range.

setup (data, splits, scaler, run folder) -> fit -> test evaluation vs buy-and-hold -> report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hftraining import checkpoint as ckpt
from hftraining import distributed, run_log
from hftraining.baselines import validation_sharpes
from hftraining.config import Config
from hftraining.data.panel import fingerprint, symbol_views
from hftraining.evaluation import model_positions
from hftraining.layout import Layout, new_run_id, normalize_symbol
from hftraining.lifecycle import RunSpec, Tested, Trial, resumed_data, train_run
from hftraining.prepare import Prepared, prepare
from hftraining.report import evaluate_and_report
from hftraining.trainer import FitResult, resolve_device
from hftraining.trials import TrialScope

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


@run_log.captured
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
        run_id = ckpt.read_json(run_dir / ckpt.METADATA)["run_id"]
    prepared = distributed.main_first(lambda: prepare([symbol], config, progress=progress))
    distributed.agree(fingerprint(prepared.panel), "training data")
    if resume is not None:
        prepared = resumed_data(run_dir, prepared)
    else:
        run_id = distributed.broadcast(config.paths.run_name or new_run_id())
        run_dir = layout.finetuned_model(symbol, run_id)
    tcfg = config.training
    report_dir = layout.report(run_id)
    spec = RunSpec(kind="single", label=f"single {symbol}", run_id=run_id, run_dir=run_dir,
                   tensorboard_dir=layout.tensorboard("finetuned", run_id, [symbol]), config=config,
                   prepared=prepared, learning_rate=tcfg.learning_rate, max_steps=tcfg.max_steps,
                   metadata={"world_size": ctx.world_size,
                             "global_batch_size": tcfg.batch_size * tcfg.grad_accum_steps * ctx.world_size},
                   also_claim=(report_dir,), resume=resume is not None, progress=progress, on_step=on_step,
                   trials=[Trial("single", [symbol])])

    def test(result: FitResult, run_dir: Path, meta: dict) -> Tested:
        info = {"run_id": run_id, "kind": "single", "run_dir": str(run_dir), "best_step": result.best_step,
                "forecast_backend": prepared.panel.forecast.get(symbol, {}).get("backend", "none"),
                "synthetic": meta.get("synthetic", False), "cost_per_turnover": config.cost_per_turnover}
        tested = evaluate_test(result.model, prepared, config, report_dir, info)[symbol]
        tested["validation_baselines"] = validation_sharpes(prepared.panel, 0, prepared.splits.val, config)
        log_hparams(spec, result, tested)
        return Tested({"report_dir": str(report_dir), "test": tested["model"],
                       "tensorboard_dir": str(spec.tensorboard_dir)}, tested["model"].get("sharpe_ratio"),
                      report_dir, {**tested, "info": info})

    done = train_run(spec, test=test)
    result, tb_dir = done.fit, spec.tensorboard_dir
    if not ctx.is_main:                                 # rank 0 writes the report
        return SingleRun(result.model, done.run_dir, result.best_path, report_dir, tb_dir, result, {}, {})
    tested = done.tested.value
    info = tested.pop("info")
    summary = {"run_id": run_id, "symbol": symbol, "run_dir": str(done.run_dir),
               "checkpoint": str(result.best_path), "report_dir": str(report_dir), "tensorboard_dir": str(tb_dir),
               "best_step": result.best_step, "steps_done": result.steps_done,
               "forecast_backend": info["forecast_backend"], "synthetic": info["synthetic"],
               "validation": result.best_metrics, "prior": done.metadata.get("prior"),
               "validation_baselines": tested["validation_baselines"],
               "test": tested["model"],
               "buy_and_hold": tested["baselines"]["buy_and_hold"], "baselines": tested["baselines"],
               "significance": tested.get("significance"), "cost_sensitivity": tested.get("cost_sensitivity"),
               "edge_captured": tested.get("edge_captured"), "report_html": done.report_html,
               "log": run_log.log_path(config.paths.root, run_id)}
    return SingleRun(result.model, done.run_dir, result.best_path, report_dir, tb_dir, result, tested, summary)


def log_hparams(spec: RunSpec, result: FitResult, tested: dict) -> None:
    """TensorBoard's hparams view of a single run: its settings next to its validation and test Sharpe."""
    from hftraining.tensorboard_log import log_hparams as write_hparams

    write_hparams(spec.tensorboard_dir, spec.config, {"symbol": spec.prepared.panel.symbols[0]},
                  {"val_sharpe": result.best_metrics.get("sharpe_ratio"),
                   "test_sharpe": tested["model"]["sharpe_ratio"]})


def train_single_stock_with_profit(stock: str = "AAPL", config: Optional[Config] = None,
                                   max_steps: Optional[int] = None, progress: bool = True):
    """The guide's API: train one stock and return (model, checkpoint_path)."""
    config = (config or Config()).model_copy(deep=True)
    if max_steps is not None:
        config = config.with_steps(max_steps)
    run = run_single(stock, config, progress=progress)
    return run.model, run.checkpoint

"""`hftrain base` / `finetune` / `pipeline` and the seed's `BaseModelTrainer`: one base model on many stocks,
fine-tuned per stock, compared on test.

base (windows of every listed stock, each on its own full history, per-symbol scalers, calendar
splits shared by all; hftraining.data.ragged) -> fine-tune each stock from the base weights
(hftraining.finetune) -> comparison (hftraining.comparison): per stock, on the same test bars and
costs, the base alone, the fine-tuned model, buy-and-hold (and a single model from scratch on request).
The portfolio stage (hftraining.portfolio, imported lazily) closes the pipeline. `python -m
hftraining.base_model_trainer ...` (the guide's `python base_model_trainer.py ...`) is `hftrain base ...`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hftraining import checkpoint as ckpt
from hftraining import distributed, run_log
from hftraining.comparison import report_info, simulate_test_range, stock_significance, write_comparison
from hftraining.config import Config
from hftraining.data.panel import fingerprint, symbol_slice
from hftraining.errors import UserError
from hftraining.evaluation import Simulation
from hftraining.finetune import FinetuneRun, finetune_config_from_base, finetune_stock
from hftraining.html_report import write_report_html
from hftraining.layout import Layout, new_run_id, parse_symbols, short_symbols
from hftraining.lifecycle import RunSpec, Trial, train_run
from hftraining.prepare import Prepared, prepare
from hftraining.trainer import FitResult, resolve_device

log = logging.getLogger("hftraining")


# --- base stage --------------------------------------------------------------------------------

@dataclass
class BaseRun:
    run_id: str
    run_dir: Path
    checkpoint: Path
    tensorboard_dir: Path
    model: torch.nn.Module
    fit: FitResult
    prepared: Prepared


def train_base(symbols: list[str], config: Config, steps: int | None = None, run_id: str | None = None,
               progress: bool = True, on_step: Callable[[int], None] | None = None) -> BaseRun:
    """One model on the windows of every symbol (batches mix symbols; no window crosses two)."""
    symbols = parse_symbols(symbols)
    if not symbols:
        raise UserError("hftrain base: no stocks given; use --stocks AAPL MSFT ...")
    config = config.with_steps(steps or config.training.max_steps)
    config.data.symbols = symbols
    layout = Layout.at(config.paths.root)
    layout.ensure_writable()
    resolve_device(config.training.device)
    ctx = distributed.context()             # under torchrun: rank 0 builds the data first, alone writes files
    prepared = distributed.main_first(lambda: prepare(symbols, config, progress=progress, ragged=True))
    distributed.agree(fingerprint(prepared.panel), "training data")
    run_id = distributed.broadcast(run_id or config.paths.run_name or new_run_id())
    tcfg = config.training
    spec = RunSpec(kind="base", label=f"base {short_symbols(prepared.panel.symbols)}", run_id=run_id,
                   run_dir=layout.base_model(run_id),
                   tensorboard_dir=layout.tensorboard("base", run_id), config=config, prepared=prepared,
                   learning_rate=tcfg.learning_rate, max_steps=tcfg.max_steps,
                   metadata={**ragged_summary(prepared), "steps": tcfg.max_steps, "batch_size": tcfg.batch_size,
                             "learning_rate": tcfg.learning_rate, "world_size": ctx.world_size,
                             "global_batch_size": tcfg.batch_size * tcfg.grad_accum_steps * ctx.world_size},
                   progress=progress, on_step=on_step,      # a try on each stock; a comparison adds its test Sharpe
                   trials=[Trial("base", [s], f"{run_id}/base/{s}") for s in prepared.panel.symbols])
    done = train_run(spec)
    result = done.fit
    return BaseRun(run_id, done.run_dir, result.best_path, spec.tensorboard_dir, result.model, result, prepared)


def ragged_summary(prepared: Prepared) -> dict:
    """For the metadata of a run on a ragged panel: its size and every symbol's decisions per split."""
    panel = prepared.panel
    if not hasattr(prepared.splits, "per_symbol"):
        return {}
    return {"panel": {"layout": "ragged (each symbol on its own history)", "rows": panel.n_rows,
                      "decisions_per_symbol": prepared.splits.per_symbol(panel)}}


# --- the base pipeline: base -> fine-tunes -> report -------------------------------------------

@dataclass
class BasePipelineRun:
    base: BaseRun
    finetuned: dict[str, FinetuneRun]
    report_dir: Path
    report: dict
    summary: dict = field(default_factory=dict)


def scratch_model(symbol: str, prepared: Prepared, config: Config, run_id: str, progress: bool):
    """A single-stock model from random weights on the same bars: does the base help at all?"""
    layout = Layout.at(config.paths.root)
    done = train_run(RunSpec(kind="single", label=f"single {symbol}", run_id=run_id,
                             run_dir=layout.finetuned_model(symbol, run_id),
                             tensorboard_dir=layout.tensorboard("finetuned", run_id, [symbol]), config=config,
                             prepared=prepared, learning_rate=config.training.learning_rate,
                             max_steps=config.training.max_steps, metadata={"compared_with": "base fine-tune"},
                             progress=progress))
    return done.fit.model, done.run_dir


@run_log.captured
def run_base_pipeline(symbols: list[str], config: Config, finetune: bool = True,
                      base_steps: int | None = None, finetune_epochs: int | None = None,
                      compare_single: bool = False, progress: bool = True) -> BasePipelineRun:
    """The whole `hftrain base` job. Fine-tunes use the stock's slice of the base panel: same test bars.

    Under torchrun every rank trains its slice of each batch of every stage (hftraining.distributed);
    rank 0 alone writes the run folders and the report, and only its BasePipelineRun carries report/summary.
    """
    device = resolve_device(config.training.device)    # fail before loading data on a bad device
    with distributed.session(device) as ctx:
        return _run_base_pipeline(symbols, config, finetune, base_steps, finetune_epochs, compare_single,
                                  progress and ctx.is_main, ctx)


def _run_base_pipeline(symbols: list[str], config: Config, finetune: bool, base_steps: int | None,
                       finetune_epochs: int | None, compare_single: bool, progress: bool,
                       ctx: distributed.Context) -> BasePipelineRun:
    single_config = config.model_copy(deep=True)
    run_id = distributed.broadcast(config.paths.run_name or new_run_id())
    layout = Layout.at(config.paths.root)
    planned = [layout.base_model(run_id), layout.report(run_id)]
    for symbol in parse_symbols(symbols):
        planned += [layout.finetuned_model(symbol, run_id)] if finetune else []
        planned += [layout.finetuned_model(symbol, f"{run_id}-scratch")] if compare_single else []

    def check_free() -> None:                           # say so now, not after the base has trained
        taken = [str(p) for p in planned if p.exists()]
        if taken:
            raise UserError(f"run {run_id}: {taken[0]} already exists; pick another --set paths.run_name")

    distributed.on_main(check_free)
    base = train_base(symbols, config, steps=base_steps, run_id=run_id, progress=progress)
    panel = base.prepared.panel
    finetuned: dict[str, FinetuneRun] = {}
    sims: dict[str, dict[str, Simulation]] = {}
    runs: dict[str, dict] = {}
    for symbol in panel.symbols:
        stock = Prepared(*symbol_slice(panel, base.prepared.splits, symbol), base.prepared.scaler)
        if not len(stock.splits.test):          # a ragged universe: this symbol has no bars in the test dates
            log.warning("%s: no bars in the base run's test dates; no fine-tune and no report for it", symbol)
            continue
        models = {"base": base.model}
        runs[symbol] = {"base": str(base.run_dir)}
        trainable = len(stock.splits.train) > 0 and len(stock.splits.val) > 0
        if (finetune or compare_single) and not trainable:
            log.warning("%s: no %s bars in the base run's split dates; reported with the base model only",
                        symbol, "training" if not len(stock.splits.train) else "validation")
        if finetune and trainable:
            ft = finetune_stock(symbol, base.run_dir, config=finetune_config_from_base(base.run_dir),
                                epochs=finetune_epochs, run_id=base.run_id,
                                data=(stock.panel, stock.splits), progress=progress)
            finetuned[symbol] = ft
            models["finetuned"] = ft.model
            runs[symbol]["finetuned"] = str(ft.run_dir)
        if compare_single and trainable:
            single_cfg = single_config.with_steps(single_config.training.max_steps)
            single_cfg.data.symbols = [symbol]
            models["single"], single_dir = scratch_model(symbol, stock, single_cfg, f"{base.run_id}-scratch",
                                                         progress)
            runs[symbol]["single"] = str(single_dir)
        if ctx.is_main:
            sims[symbol] = simulate_test_range(models, stock, config)
    report_dir = layout.report(base.run_id)
    if not ctx.is_main:                                 # rank 0 writes the report
        return BasePipelineRun(base, finetuned, report_dir, {}, {})
    info = {**report_info(base.run_id, config, base.prepared), "kind": "base", "base_run": str(base.run_dir),
            "symbols": panel.symbols}
    report = write_comparison(report_dir, sims, info, runs, trials_root=layout.root,
                              new_models=("base", "finetuned", "single"))
    log_comparison_hparams(base.tensorboard_dir, config, base.fit, report, "base", {"symbols": ",".join(panel.symbols)})
    for symbol, ft in finetuned.items():
        log_comparison_hparams(ft.tensorboard_dir, ft.config, ft.fit, report, "finetuned", {"symbol": symbol},
                               symbol)
    ckpt.update_metadata(base.run_dir, report_dir=str(report_dir),
                         test={s: v["strategies"]["base"] for s, v in report["stocks"].items()})
    summary = {"run_id": base.run_id, "base_run": str(base.run_dir), "checkpoint": str(base.checkpoint),
               "tensorboard_dir": str(base.tensorboard_dir), "report_dir": str(report_dir),
               "finetuned": {s: str(ft.run_dir) for s, ft in finetuned.items()},
               "synthetic": info["synthetic"], "average": report["average"],
               "stocks": {s: v["strategies"] for s, v in report["stocks"].items()},
               "significance": {s: stock_significance(report_dir, s) for s in report["stocks"]},
               "report_html": write_report_html(report_dir, base.run_dir),
               "log": run_log.log_path(config.paths.root, base.run_id)}
    return BasePipelineRun(base, finetuned, report_dir, report, summary)


@run_log.captured
def run_finetune(symbol: str, base: str | Path, config: Config | None = None, epochs: int | None = None,
                 steps: int | None = None, progress: bool = True):
    """The whole `hftrain finetune` job: fine-tune, then compare with the base alone and buy-and-hold.

    Under torchrun every rank trains its slice of each batch; rank 0 alone writes the run folder and the
    report, and the other ranks return empty report and summary dicts.
    """
    if config is None:
        config = finetune_config_from_base(ckpt.open_base(base).path.resolve())
    device = resolve_device(config.training.device)    # fail before loading data on a bad device
    with distributed.session(device) as ctx:
        ft = finetune_stock(symbol, base, config=config, epochs=epochs, steps=steps,
                            progress=progress and ctx.is_main)
        if not ctx.is_main:
            return ft, {}, {}
        return _finetune_report(ft)


def _finetune_report(ft: FinetuneRun):
    """Rank 0's (or the only process's) comparison of the fine-tune with the base alone and buy-and-hold."""
    config = ft.config
    report_dir = Layout.at(config.paths.root).report(ft.run_id)
    models = {"finetuned": ft.model, "base": ft.base_model}
    sims = {ft.symbol: simulate_test_range(models, ft.prepared, config)}
    info = {**report_info(ft.run_id, config, ft.prepared), "kind": "finetune", "base_run": ft.metadata["base_run"],
            "symbols": [ft.symbol], "symbol_in_base": ft.metadata["symbol_in_base"]}
    report = write_comparison(report_dir, sims, info, {ft.symbol: {"base": ft.metadata["base_run"],
                                                                   "finetuned": str(ft.run_dir)}},
                              trials_root=Path(config.paths.root), new_models=("finetuned",))
    log_comparison_hparams(ft.tensorboard_dir, config, ft.fit, report, "finetuned", {"symbol": ft.symbol}, ft.symbol)
    ckpt.update_metadata(ft.run_dir, report_dir=str(report_dir),
                         test=report["stocks"][ft.symbol]["strategies"]["finetuned"])
    summary = {"run_id": ft.run_id, "symbol": ft.symbol, "run_dir": str(ft.run_dir),
               "checkpoint": str(ft.checkpoint), "base_run": ft.metadata["base_run"],
               "tensorboard_dir": str(ft.tensorboard_dir), "report_dir": str(report_dir),
               "steps": ft.metadata["steps"], "synthetic": info["synthetic"],
               "test": report["stocks"][ft.symbol]["strategies"],
               "significance": stock_significance(report_dir, ft.symbol),
               "report_html": write_report_html(report_dir, ft.run_dir),
               "log": run_log.log_path(config.paths.root, ft.run_id)}
    return ft, report, summary


def log_comparison_hparams(logdir: Path, config: Config, fit: FitResult, report: dict, model: str, params: dict,
                           symbol: str | None = None) -> None:
    """TensorBoard hparams of a base or fine-tune, as single runs log theirs: its validation Sharpe and the
    test Sharpe of `model` in the comparison (one stock's, or the average over stocks)."""
    from hftraining.tensorboard_log import log_hparams

    rows = report["stocks"][symbol]["strategies"] if symbol is not None else report["average"]
    log_hparams(logdir, config, params, {"val_sharpe": fit.best_metrics.get("sharpe_ratio"),
                                         "test_sharpe": (rows.get(model) or {}).get("sharpe_ratio")})


# --- the seed's Python API ---------------------------------------------------------------------

class BaseModelTrainer:
    """The guide's API: base model on many stocks, fine-tune per stock, portfolios over pairs."""

    def __init__(self, base_stocks: list[str], config: Config | None = None, progress: bool = True):
        self.base_stocks = parse_symbols(base_stocks)
        self.config = (config or Config()).model_copy(deep=True)
        self.progress = progress
        self.base_run: Path | None = None
        self.pipeline_run: BasePipelineRun | None = None

    def train_base_model(self, max_steps: int | None = None, batch_size: int | None = None):
        """Train the base model; returns (model, checkpoint_path)."""
        config = self.config.model_copy(deep=True)
        if batch_size is not None:
            config.training.batch_size = batch_size
        run = train_base(self.base_stocks, config, steps=max_steps, progress=self.progress)
        self.base_run = run.run_dir
        return run.model, run.checkpoint

    def finetune_for_stock(self, stock_symbol: str, base_checkpoint_path: str | Path | None = None,
                           num_epochs: int | None = None):
        """Fine-tune the base (this trainer's, or the run holding `base_checkpoint_path`); (model, path)."""
        base = base_checkpoint_path or self.base_run
        if base is None:
            raise UserError("finetune_for_stock: no base model yet; call train_base_model() or pass "
                            "base_checkpoint_path")
        ft = finetune_stock(stock_symbol, base, epochs=num_epochs, progress=self.progress)
        return ft.model, ft.checkpoint

    def train_pair_portfolio(self, symbols: list[str]):
        """Portfolio stage over one group (hftraining.portfolio), initialised from this trainer's base."""
        from hftraining.portfolio import run_portfolio  # written by the portfolio stage

        group = parse_symbols(list(symbols))
        config = self.config.model_copy(deep=True)
        if self.base_run is not None:                       # runs/reports/<base run>-A_B, next to the base's
            config.paths.run_name = f"{self.base_run.name}-{'_'.join(group)}"
        return run_portfolio(group, config, base_run=self.base_run, progress=self.progress)

    def run_complete_pipeline(self, pair_symbols: list[tuple[str, ...]] | None = None,
                              base_steps: int | None = None, finetune_epochs: int | None = None,
                              compare_single: bool = False) -> dict:
        """base -> fine-tune every base stock -> one portfolio per group; what each stage produced."""
        pairs = [parse_symbols(list(p)) for p in pair_symbols or default_pairs(self.base_stocks)]
        run = run_base_pipeline(self.base_stocks, self.config, base_steps=base_steps,
                                finetune_epochs=finetune_epochs, compare_single=compare_single,
                                progress=self.progress)
        self.base_run, self.pipeline_run = run.base.run_dir, run
        portfolios = {}
        for group in pairs:
            portfolio = self.train_pair_portfolio(group)
            portfolios["_".join(group)] = {"run_dir": str(portfolio.run_dir),
                                           "report_dir": str(portfolio.report_dir),
                                           "summary": portfolio.summary}
        return {"base": str(run.base.run_dir), "base_checkpoint": str(run.base.checkpoint),
                "finetuned": {s: str(ft.run_dir) for s, ft in run.finetuned.items()},
                "report": str(run.report_dir), "comparison": run.summary["stocks"], "portfolios": portfolios}


def default_pairs(symbols: list[str]) -> list[list[str]]:
    """Consecutive pairs of the base stocks: (AAPL, GOOGL), (MSFT, TSLA), ..."""
    return [list(p) for p in zip(symbols[0::2], symbols[1::2], strict=False)]   # an odd one out sits out


def parse_groups(values: list[str]) -> list[list[str]]:
    """`--pairs AAPL,MSFT --pairs GOOGL,TSLA` (or one quoted 'AAPL,MSFT GOOGL,TSLA') -> groups of >= 2."""
    groups = []
    for value in values:
        for text in value.split():
            group = parse_symbols(text.split(","))
            if len(group) < 2:
                raise UserError(f"--pairs {text}: a group needs at least two symbols, e.g. --pairs AAPL,MSFT")
            groups.append(group)
    if not groups:
        raise UserError("--pairs: give at least one group, e.g. --pairs AAPL,MSFT")
    return groups


# The guide's `python base_model_trainer.py --base-stocks ...` is `hftrain base --base-stocks ...`.
if __name__ == "__main__":
    from hftraining.cli import main

    raise SystemExit(main(["base", *sys.argv[1:]]))

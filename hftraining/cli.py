"""`hftrain`: parse the command line and call the commands layer (hftraining.commands). No work lives here.

Mistakes the user can fix (a bad flag, config, data file or symbol) print one line on stderr and
exit with code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from hftraining.errors import UserError

CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, context_settings=CONTEXT,
                  help="Train trading models on market bars and judge them by out-of-sample net profit.")
data_app = typer.Typer(no_args_is_help=True, context_settings=CONTEXT, help="Fetch, validate and inspect bars.")
config_app = typer.Typer(no_args_is_help=True, context_settings=CONTEXT, help="Show or validate configs.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")

# Options that take several values after one flag (`--stocks AAPL MSFT`); main() rewrites them.
MULTI_VALUE_OPTIONS = {"--stocks", "--base-stocks", "--models", "--seeds", "--symbols"}

STATE: dict[str, Any] = {"debug": False}


def _bare_flags_in_help() -> None:
    """typer's rich help prints a type after every flag (`--json <bool>`) as if it took a value; show flags bare."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "bare_flags", False):     # another typer: nothing to fix, or done
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag and not self.count else shown(self, ctx)

    display_type_rich.bare_flags = True
    TyperOption.display_type_rich = display_type_rich


_bare_flags_in_help()


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hftraining")
    except PackageNotFoundError:
        import hftraining

        return getattr(hftraining, "__version__", "unknown")


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"hftrain {package_version()}\n")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Train trading models on market bars and judge them by out-of-sample net profit."""


def _at_least_one(ctx: typer.Context, param: typer.CallbackParam, value):
    """A count that must be positive (steps, epochs, bars): `--steps 0: must be at least 1`, exit 2."""
    if value is not None and value < 1:
        raise UserError(f"{param.opts[0]} {value}: must be at least 1")
    return value


# --- common options ----------------------------------------------------------------------------

ConfigOpt = typer.Option(None, "--config", "-c", metavar="PATH", help="YAML config (see configs/).")
SetOpt = typer.Option(None, "--set", metavar="KEY=VALUE",
                      help="Override a config key: --set training.max_steps=100 (repeatable).")
OutOpt = typer.Option(None, "--out", metavar="DIR", help="Output root (default runs/; paths.root).")
SourceOpt = typer.Option(None, "--source", metavar="SOURCE", help="auto | yahoo | csv | synthetic.")
DataDirOpt = typer.Option(None, "--data-dir", metavar="DIR",
                          help="Folder of <SYMBOL>.csv files (implies --source csv when auto).")
StartOpt = typer.Option(None, "--start", metavar="YYYY-MM-DD",
                        help="First date; features warm up on earlier bars when the data has them.")
EndOpt = typer.Option(None, "--end", metavar="YYYY-MM-DD", help="Last date.")
StepsOpt = typer.Option(None, "--steps", metavar="N", callback=_at_least_one,
                        help="Optimizer steps: the same as --set training.max_steps=N (warmup and eval_every "
                             "fitted to it).")
DeviceOpt = typer.Option(None, "--device", metavar="DEVICE", help="auto | cpu | cuda.")
SeedOpt = typer.Option(None, "--seed", metavar="N", help="Random seed (training.seed).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON summary as the last line of stdout.")
BackendOpt = typer.Option(None, "--forecast-backend", metavar="BACKEND",
                          help="auto | toto | chronos | statistical | none (auto: toto on CUDA, else statistical).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")
NprocOpt = typer.Option(None, "--nproc", metavar="N", callback=_at_least_one,
                        help="Train data-parallel on N processes (GPUs) of this machine: re-runs the command under "
                             "torchrun (DDP).")
StocksFileOpt = typer.Option(None, "--stocks-file", metavar="FILE",
                             help="File of tickers, one per line (# comments); adds to --stocks.")
RetrainOpt = typer.Option(None, "--retrain-every", metavar="N", callback=_at_least_one,
                          help="Walk-forward: bars per fold (252).")
WindowOpt = typer.Option(None, "--walk-forward-window", metavar="WINDOW",
                         help="Walk-forward training window: expanding (default) or rolling.")
WalkForwardOpt = typer.Option(False, "--walk-forward", help="Retrain every N bars; stitch the test segments.")


def _stocks_opt(what: str) -> Any:
    return typer.Option(None, "--stocks", metavar="SYMBOL ...",
                        help=f"{what} (space or comma separated). Required, or --stocks-file.")


def _renamed(value: Any, old: Any, name: str, old_name: str) -> Any:
    """`name`, or its old spelling `old_name` with a warning (one name per idea); both, disagreeing, is refused."""
    if old is None:
        return value
    if value is not None and value != old:
        raise UserError(f"{old_name} {old} and {name} {value} disagree; use {name}")
    logging.getLogger("hftraining").warning("%s is deprecated; use %s %s", old_name, name, old)
    return old


def _options(config: Optional[Path] = None, set_: Optional[List[str]] = None, out: Optional[Path] = None,
             source: Optional[str] = None, data_dir: Optional[Path] = None, start: Optional[str] = None,
             end: Optional[str] = None, steps: Optional[int] = None, device: Optional[str] = None,
             seed: Optional[int] = None, forecast_backend: Optional[str] = None):
    from hftraining.commands.common import ConfigOptions

    return ConfigOptions(config, list(set_) if set_ else None, out, source, data_dir, start, end, steps, device, seed,
                         forecast_backend)


def _relaunch_under_torchrun(nproc: Optional[int], device: Optional[str]) -> None:
    """`--nproc N` (N > 1): run this same command line under torchrun instead, and exit with its code."""
    if nproc is not None and nproc > 1:
        from hftraining.distributed import relaunch

        raise typer.Exit(relaunch(STATE["argv"], nproc, device or "auto"))


# --- training commands -------------------------------------------------------------------------

@app.command()
def single(
    stock: Optional[str] = typer.Option(None, "--stock", "-s", metavar="SYMBOL",
                                        help="Ticker to train on (default: the config's first data.symbols, AAPL)."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="RUN_DIR",
                                          help="Continue the run in this folder, with its own config."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, steps: Optional[int] = StepsOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt, json_: bool = JsonOpt,
    quiet: bool = QuietOpt, walk_forward: bool = WalkForwardOpt, retrain_every: Optional[int] = RetrainOpt,
    walk_forward_window: Optional[str] = WindowOpt,
    seeds: Optional[List[int]] = typer.Option(None, "--seeds", metavar="N ...",
                                              help="Train one run per seed: --seeds 0 1 2."),
    nproc: Optional[int] = NprocOpt,
):
    """Train one stock: data -> features -> model -> profit objective -> validation -> test report."""
    from hftraining.commands import single as command

    if nproc is not None and nproc > 1 and (walk_forward or seeds):
        raise UserError("--nproc cannot be combined with --walk-forward or --seeds yet")
    _relaunch_under_torchrun(nproc, device)
    command.single(stock, _options(config, set_, out, source, data_dir, start, end, steps, device, seed,
                                   forecast_backend), resume=resume, walk_forward=walk_forward,
                   retrain_every=retrain_every, walk_forward_window=walk_forward_window, seeds=seeds, json_=json_,
                   quiet=quiet)


@app.command()
def study(
    stocks: List[str] = typer.Option(None, "--stocks", metavar="SYMBOL ...",
                                     help="Tickers (space or comma separated). Required, or --stocks-file, except "
                                          "with --mode portfolio (--pairs)."),
    stocks_file: Optional[Path] = StocksFileOpt,
    mode: str = typer.Option("single", "--mode", metavar="MODE",
                             help="single: one model per ticker; base: one pooled model; walk_forward: retrain every "
                                  "--retrain-every bars; portfolio: one allocation policy per --pairs group."),
    pairs: List[str] = typer.Option(None, "--pairs", metavar="A,B[,C]",
                                    help="Portfolio mode: a group like AAPL,MSFT (repeatable)."),
    seeds: Optional[List[int]] = typer.Option(None, "--seeds", metavar="N ...",
                                              help="Model seeds: --seeds 0 1 2 (default: --seed)."),
    walk_forward: bool = typer.Option(False, "--walk-forward", help="Same as --mode walk_forward."),
    retrain_every: int = typer.Option(252, "--retrain-every", metavar="N", callback=_at_least_one,
                                      help="Walk-forward: bars per fold."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt,
    steps: Optional[int] = typer.Option(None, "--steps", metavar="N", callback=_at_least_one,
                                        help="Optimizer steps of each model (training.max_steps; with --mode "
                                             "portfolio the policy's, portfolio.max_steps)."),
    device: Optional[str] = DeviceOpt, seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt,
    json_: bool = JsonOpt, quiet: bool = QuietOpt,
):
    """One config over many tickers: test net Sharpe vs buy-and-hold, momentum (and the oracle), with a DSR."""
    from hftraining.commands import single as command

    command.study(stocks, stocks_file, mode, pairs, seeds, walk_forward, retrain_every,
                  _options(config, set_, out, source, data_dir, start, end, steps, device, seed, forecast_backend),
                  json_=json_, quiet=quiet)


@app.command()
def forecast(
    stocks: List[str] = _stocks_opt("Tickers"),
    stocks_file: Optional[Path] = StocksFileOpt,
    backend: Optional[str] = typer.Option(None, "--forecast-backend", metavar="BACKEND",
                                          help="statistical | chronos | toto (default: the config's, auto). A "
                                               "model that cannot run here is an error, never a fallback."),
    old_backend: Optional[str] = typer.Option(None, "--backend", hidden=True,
                                              help="Deprecated spelling of --forecast-backend."),
    model: Optional[str] = typer.Option(None, "--model", metavar="PATH_OR_ID",
                                        help="Model id or local folder for the backend."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, device: Optional[str] = DeviceOpt, json_: bool = JsonOpt, quiet: bool = QuietOpt,
    shard: Optional[str] = typer.Option(
        None, "--shard", metavar="I/N", help="Only shard i of n of the symbols (i/n, e.g. 0/4; default under "
                                             "torchrun: RANK/WORLD_SIZE), to spread them over GPUs or machines "
                                             "sharing --out."),
):
    """Precompute forecast features into the cache and report windows, seconds and cache hits."""
    from hftraining.commands import data as command

    backend = _renamed(backend, old_backend, "--forecast-backend", "--backend")
    command.forecast(stocks, stocks_file, _options(config, set_, out, source, data_dir, start, end, device=device),
                     backend=backend, model=model, shard=shard, json_=json_, quiet=quiet)


FinetuneEpochsOpt = typer.Option(None, "--finetune-epochs", metavar="N", callback=_at_least_one,
                                 help="Fine-tune passes over each stock's training windows "
                                      "(training.finetune_epochs).")
OldEpochsOpt = typer.Option(None, "--epochs", hidden=True, callback=_at_least_one,
                            help="Deprecated spelling of --finetune-epochs.")




@app.command()
def base(
    stocks: List[str] = typer.Option(None, "--stocks", "--base-stocks", metavar="SYMBOL ...",
                                     help="Tickers for the base model (space or comma separated). Required, or "
                                          "--stocks-file."),
    stocks_file: Optional[Path] = StocksFileOpt,
    finetune: bool = typer.Option(True, "--finetune/--no-finetune", help="Fine-tune each stock after base."),
    base_steps: Optional[int] = typer.Option(None, "--base-steps", metavar="N", callback=_at_least_one,
                                             help="Optimizer steps of the base model (default: --steps)."),
    finetune_epochs: Optional[int] = FinetuneEpochsOpt, epochs: Optional[int] = OldEpochsOpt,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", metavar="N", callback=_at_least_one,
                                             help="Windows per optimizer step."),
    compare_single: bool = typer.Option(False, "--compare-single", help="Also train each stock from scratch."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, steps: Optional[int] = StepsOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt, json_: bool = JsonOpt,
    quiet: bool = QuietOpt, nproc: Optional[int] = NprocOpt,
):
    """Train one base model on many stocks, then fine-tune it per stock."""
    finetune_epochs = _renamed(finetune_epochs, epochs, "--finetune-epochs", "--epochs")
    _relaunch_under_torchrun(nproc, device)
    from hftraining.commands import base as command

    command.base(stocks, stocks_file, _options(config, set_, out, source, data_dir, start, end, steps, device, seed,
                                         forecast_backend),
                 finetune=finetune, base_steps=base_steps, finetune_epochs=finetune_epochs, batch_size=batch_size,
                 compare_single=compare_single, json_=json_, quiet=quiet)


@app.command(name="finetune")
def finetune_cmd(
    stock: str = typer.Option(..., "--stock", "-s", metavar="SYMBOL", help="Ticker to fine-tune on."),
    base_run: Path = typer.Option(..., "--base", metavar="RUN_DIR", help="Base run folder (runs/models/base/<run>)."),
    finetune_epochs: Optional[int] = FinetuneEpochsOpt, epochs: Optional[int] = OldEpochsOpt,
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt,
    steps: Optional[int] = typer.Option(None, "--steps", metavar="N", callback=_at_least_one,
                                        help="Optimizer steps of the fine-tune, instead of --finetune-epochs "
                                             "turned into steps."),
    device: Optional[str] = DeviceOpt, seed: Optional[int] = SeedOpt, json_: bool = JsonOpt, quiet: bool = QuietOpt,
    nproc: Optional[int] = NprocOpt,
):
    """Fine-tune a base model on one stock."""
    finetune_epochs = _renamed(finetune_epochs, epochs, "--finetune-epochs", "--epochs")
    _relaunch_under_torchrun(nproc, device)
    from hftraining.commands import base as command

    command.finetune(stock, base_run, _options(config, set_, out, source, data_dir, start, end, steps, device, seed),
                     epochs=finetune_epochs, json_=json_, quiet=quiet)


@app.command()
def portfolio(
    pairs: List[str] = typer.Option(None, "--pairs", metavar="A,B[,C]",
                                    help="A group like AAPL,MSFT (repeat for more groups). Required, or --resume."),
    base_run: Optional[Path] = typer.Option(None, "--base", metavar="RUN_DIR",
                                            help="Initialise the encoder from a base run."),
    resume: Optional[Path] = typer.Option(None, "--resume", metavar="RUN_DIR",
                                          help="Continue the portfolio run in this folder, with its own config."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt,
    steps: Optional[int] = typer.Option(None, "--steps", metavar="N", callback=_at_least_one,
                                        help="Optimizer steps of the allocation policy (portfolio.max_steps)."),
    device: Optional[str] = DeviceOpt, seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt,
    json_: bool = JsonOpt, quiet: bool = QuietOpt, walk_forward: bool = WalkForwardOpt,
    retrain_every: Optional[int] = RetrainOpt, walk_forward_window: Optional[str] = WindowOpt,
    nproc: Optional[int] = NprocOpt,
):
    """Learn softmax allocations over each group of assets, rebalanced every horizon."""
    from hftraining.commands import portfolio as command

    if nproc is not None and nproc > 1 and walk_forward:
        raise UserError("--nproc cannot be combined with --walk-forward yet")
    _relaunch_under_torchrun(nproc, device)
    command.portfolio(pairs, _options(config, set_, out, source, data_dir, start, end, steps, device, seed,
                                      forecast_backend),
                      base_run=base_run, resume=resume, walk_forward=walk_forward, retrain_every=retrain_every,
                      walk_forward_window=walk_forward_window, json_=json_, quiet=quiet)


@app.command()
def pipeline(
    stocks: List[str] = _stocks_opt("Tickers for base + fine-tune"),
    stocks_file: Optional[Path] = StocksFileOpt,
    pairs: List[str] = typer.Option(..., "--pairs", metavar="A,B[,C]",
                                    help="Groups for the portfolio stage (repeatable)."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt,
    steps: Optional[int] = typer.Option(None, "--steps", metavar="N", callback=_at_least_one,
                                        help="Optimizer steps of the base model (training.max_steps)."),
    device: Optional[str] = DeviceOpt, seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt,
    json_: bool = JsonOpt, quiet: bool = QuietOpt,
):
    """Base model -> fine-tune per stock -> portfolio over the pairs."""
    from hftraining.commands import base as command
    from hftraining.commands.common import universe

    command.pipeline(universe(stocks, stocks_file, "pipeline"), pairs,
                     _options(config, set_, out, source, data_dir, start, end, steps, device, seed, forecast_backend),
                     json_=json_, quiet=quiet)


# --- judging trained runs ----------------------------------------------------------------------

ModelOpt = typer.Option(..., "--model", metavar="RUN_DIR", help="Run folder of a trained model.")


@app.command()
def backtest(
    model: Path = ModelOpt,
    stock: Optional[str] = typer.Option(None, "--stock", "-s", metavar="SYMBOL",
                                        help="Ticker (default: the model's)."),
    cost_bps: Optional[float] = typer.Option(None, "--cost-bps", metavar="BPS", help="Cost per unit turnover in bps."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt,
    start: Optional[str] = typer.Option(None, "--start", metavar="YYYY-MM-DD",
                                        help="First decision date (default: the run's test start)."),
    end: Optional[str] = typer.Option(None, "--end", metavar="YYYY-MM-DD", help="Last decision date."),
    device: Optional[str] = DeviceOpt, json_: bool = JsonOpt, quiet: bool = QuietOpt,
):
    """Run a trained model over chosen dates with the ProfitTracker and write a report."""
    from hftraining.commands import evaluate as command

    command.backtest(model, stock=stock, cost_bps=cost_bps, config=config, set_=set_, out=out, source=source,
                     data_dir=data_dir, start=start, end=end, device=device, json_=json_, quiet=quiet)


@app.command()
def ensemble(
    models: List[Path] = typer.Option(..., "--models", metavar="RUN_DIR ...",
                                      help="Two or more run folders: --models RUN1 RUN2 ..."),
    stock: Optional[str] = typer.Option(None, "--stock", "-s", metavar="SYMBOL",
                                        help="Ticker (default: the first run's)."),
    out: Optional[Path] = OutOpt, source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt,
    start: Optional[str] = typer.Option(None, "--start", metavar="YYYY-MM-DD",
                                        help="First decision date (default: common test range)."),
    end: Optional[str] = typer.Option(None, "--end", metavar="YYYY-MM-DD",
                                      help="Last decision date (default: common test range)."),
    device: Optional[str] = DeviceOpt, json_: bool = JsonOpt, quiet: bool = QuietOpt,
):
    """Average the positions of several runs (same features) and compare the ensemble with each member."""
    from hftraining.commands import evaluate as command

    command.ensemble(models, stock=stock, out=out, source=source, data_dir=data_dir, start=start, end=end,
                     device=device, json_=json_, quiet=quiet)


@app.command()
def paper(
    model: Path = ModelOpt,
    feed: str = typer.Option(..., "--feed", metavar="csv:PATH|yahoo",
                             help="csv:PATH (replay a CSV of daily bars) or yahoo (poll Yahoo)."),
    stock: Optional[str] = typer.Option(None, "--stock", "-s", metavar="SYMBOL",
                                        help="Ticker (default: the model's)."),
    speed: float = typer.Option(0.0, "--speed", metavar="N",
                                help="Replay speed in bars per second (0 = as fast as possible)."),
    state: Optional[Path] = typer.Option(
        None, "--state", metavar="DIR", help="State folder to resume from (default <out>/paper/<run>/<SYMBOL>)."),
    start: Optional[str] = typer.Option(
        None, "--start", metavar="YYYY-MM-DD",
        help="First date to trade; earlier bars are history only (default: the whole CSV; yahoo: from today)."),
    out: Optional[Path] = OutOpt, json_: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per decision (decisions.csv has them)."),
):
    """Paper-trade a run on bars arriving one at a time; resumable. No broker: no orders are ever sent."""
    from hftraining.commands import evaluate as command

    command.paper(model, feed, stock=stock, speed=speed, state=state, start=start, out=out, json_=json_, quiet=quiet)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR",
                                   help="A run folder (runs/models/...) or a report folder (runs/reports/<run>)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR",
                                       help="Write report.html into this folder (default: beside metrics.json)."),
    json_: bool = JsonOpt, quiet: bool = QuietOpt,
):
    """Write report.html: metrics vs baselines, curves, significance, cost sensitivity, provenance."""
    from hftraining.commands import evaluate as command

    command.report(run_dir, out=out, json_=json_)


# --- data and config ---------------------------------------------------------------------------

@data_app.command("fetch")
def data_fetch(stocks: List[str] = _stocks_opt("Tickers"), stocks_file: Optional[Path] = StocksFileOpt,
               config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
               source: Optional[str] = SourceOpt,
               data_dir: Optional[Path] = typer.Option(None, "--data-dir", hidden=True,
                                                       help="Refused: fetch is for Yahoo only."),
               start: Optional[str] = StartOpt, end: Optional[str] = EndOpt, json_: bool = JsonOpt,
               quiet: bool = QuietOpt):
    """Download bars from Yahoo into the raw cache and say what was stored (CSV folders need no fetch)."""
    from hftraining.commands import data as command

    command.data_fetch(stocks, stocks_file, _options(config, set_, out=out, source=source, data_dir=data_dir,
                                                     start=start, end=end), json_=json_, quiet=quiet)


@data_app.command("validate")
def data_validate(stocks: List[str] = _stocks_opt("Tickers"), stocks_file: Optional[Path] = StocksFileOpt,
                  config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                  out: Optional[Path] = OutOpt, source: Optional[str] = SourceOpt,
                  data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt, end: Optional[str] = EndOpt,
                  json_: bool = JsonOpt, quiet: bool = QuietOpt):
    """Check bars (dates, prices, OHLC consistency) and print a summary per symbol."""
    from hftraining.commands import data as command

    command.data_validate(stocks, stocks_file, _options(config, set_, out=out, source=source, data_dir=data_dir,
                                                        start=start, end=end), json_=json_, quiet=quiet)


@data_app.command("show")
def data_show(stock: str = typer.Option(..., "--stock", "-s", metavar="SYMBOL", help="Ticker to show."),
              rows: int = typer.Option(10, "--rows", metavar="N", callback=_at_least_one, help="Bars to show."),
              config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
              out: Optional[Path] = OutOpt, source: Optional[str] = SourceOpt,
              data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt, end: Optional[str] = EndOpt,
              json_: bool = JsonOpt, quiet: bool = QuietOpt):
    """Print the last bars of a symbol and its causal features."""
    from hftraining.commands import data as command

    command.data_show(stock, rows, _options(config, set_, out=out, source=source, data_dir=data_dir, start=start,
                                            end=end), json_=json_)


@config_app.command("show")
def config_show(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                describe: bool = typer.Option(False, "--describe",
                                              help="List every key with its default and meaning.")):
    """Print the resolved config (file + overrides) as YAML."""
    from hftraining.commands import data as command

    command.config_show(config, set_, describe=describe)


@config_app.command("validate")
def config_validate(paths: List[Path] = typer.Argument(None, metavar="PATH", help="YAML files to check."),
                    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt):
    """Validate config files (with any --set overrides); the first problem is reported with its dotted key."""
    from hftraining.commands import data as command

    files = list(paths or []) + ([config] if config is not None else [])
    if not files:
        raise UserError("hftrain config validate: give the YAML files to check, e.g. configs/*.yaml")
    command.config_validate(files, set_)


# --- runs ---------------------------------------------------------------------------------------

runs_app = typer.Typer(no_args_is_help=True, context_settings=CONTEXT,
                       help="List the runs and reports under an output root.")
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list(out: Optional[Path] = OutOpt, json_: bool = JsonOpt, quiet: bool = QuietOpt):
    """One row per report: name, kind, symbols, date, test net Sharpe, report page; rewrites reports/index.html."""
    from hftraining.commands import runs as command

    command.runs_list(out, json_=json_, quiet=quiet)


# --- entry point -------------------------------------------------------------------------------

def expand_multi_value(argv: list[str]) -> list[str]:
    """`--stocks A B C` -> `--stocks A --stocks B --stocks C` (click options take one value each)."""
    out: list[str] = []
    current: Optional[str] = None
    for arg in argv:
        if arg.startswith("-"):
            current = arg if arg in MULTI_VALUE_OPTIONS else None
            out.append(arg)
        elif current is not None and out and out[-1] != current:
            out.extend([current, arg])
        else:
            out.append(arg)
    return out


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("hftraining")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False
    logging.captureWarnings(True)
    warn_logger = logging.getLogger("py.warnings")
    warn_logger.handlers[:] = [handler]
    warn_logger.propagate = False


def _click_errors(name: str) -> tuple[type, ...]:
    """The exception class `name` from click and from typer's vendored copy (newer typer ships its own)."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


USAGE_ERRORS = _click_errors("UsageError")
ABORTS = _click_errors("Abort") + (typer.Abort,)
EXITS = _click_errors("Exit") + (typer.Exit,)


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def describe_os_error(exc: OSError) -> str:
    """`PATH: No space left on device (ENOSPC); what to do` for the errors the user can fix."""
    hint = {errno.ENOSPC: "free some space or choose another output root with --out",
            errno.EDQUOT: "free some space or choose another output root with --out",
            errno.EROFS: "the file system is read-only; choose another output root with --out"}.get(
        exc.errno, "check the permissions, or choose another output root with --out")
    where = f"{exc.filename}: " if exc.filename else ""
    return one_line(f"{where}{exc.strerror or os.strerror(exc.errno)} ({errno.errorcode.get(exc.errno, exc.errno)}); "
                    f"{hint}")


def _closest(name: str, candidates: list[str]) -> str:
    """` (did you mean X?)` for the nearest real name (the same words in another order first), or ''."""
    words = sorted(name.strip("-").split("-"))
    close = [c for c in candidates if sorted(c.strip("-").split("-")) == words] or \
        difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def usage_message(exc) -> str:
    """Click's usage error in one line; a misspelt option or command names its nearest real neighbour only
    (click lists every loosely similar option, such as --out for --quite)."""
    ctx = exc.ctx
    kind = type(exc).__name__
    if kind == "NoSuchOption" and ctx is not None:
        names = [o for p in ctx.command.get_params(ctx) if not getattr(p, "hidden", False)
                 for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
        return f"no such option: {exc.option_name}{_closest(exc.option_name, names)}"
    message = exc.format_message()
    if ctx is not None and message.startswith("No such command") and hasattr(ctx.command, "list_commands"):
        typed = message.split("'")[1] if "'" in message else ""
        return f"no such command: {typed}{_closest(typed, ctx.command.list_commands(ctx))}"
    return message


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    STATE["argv"] = list(argv)                       # `--nproc N` re-runs this command line under torchrun
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    setup_logging(debug)
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and argv[:1] not in (["single"], ["base"], ["finetune"],
                                                                            ["portfolio"], ["forecast"]):
            raise UserError("under torchrun only `hftrain single`, `hftrain base`, `hftrain finetune` and "
                            "`hftrain portfolio` (data-parallel training) and `hftrain forecast` (one shard of the "
                            "symbols per rank) run; start other commands as one process")
        app(args=expand_multi_value(argv), prog_name="hftrain", standalone_mode=False)
    except UserError as exc:
        if debug:
            raise
        sys.stderr.write(f"error: {one_line(str(exc))}\n")
        return 2
    except OSError as exc:                   # a full disk, a read-only folder: the user's to fix, one line
        if debug or exc.errno not in WRITE_ERRNOS:
            raise
        sys.stderr.write(f"error: {describe_os_error(exc)}\n")
        return 2
    except USAGE_ERRORS as exc:
        if debug:
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":     # help was already printed
            return 0
        path = exc.ctx.command_path if exc.ctx is not None else "hftrain"
        sys.stderr.write(f"error: {usage_message(exc)} ({path}); see {path} --help\n")
        return 2
    except ABORTS:
        sys.stderr.write("aborted\n")
        return 130
    except EXITS as exc:
        return getattr(exc, "exit_code", 0)
    return 0


def entry() -> None:
    sys.exit(main())

"""`hftrain`: parse the command line, build the config, dispatch to library functions. No work lives here.

Mistakes the user can fix (a bad flag, config, data file or symbol) print one line on stderr and
exit with code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import errno
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from hftraining.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train trading models on market bars and judge them by out-of-sample net profit.")
data_app = typer.Typer(no_args_is_help=True, help="Fetch, validate and inspect bars.")
config_app = typer.Typer(no_args_is_help=True, help="Show or validate configs.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")

# Options that take several values after one flag (`--stocks AAPL MSFT`); main() rewrites them.
MULTI_VALUE_OPTIONS = {"--stocks", "--base-stocks", "--models", "--seeds", "--symbols"}

STATE: dict[str, Any] = {"debug": False}

# --- common options ----------------------------------------------------------------------------

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (see configs/).")
SetOpt = typer.Option(None, "--set", help="Override a config key: --set training.max_steps=100 (repeatable).")
OutOpt = typer.Option(None, "--out", help="Output root (default runs/; paths.root).")
SourceOpt = typer.Option(None, "--source", help="auto | yahoo | csv | synthetic.")
DataDirOpt = typer.Option(None, "--data-dir", help="Folder of <SYMBOL>.csv files (implies --source csv when auto).")
StartOpt = typer.Option(None, "--start", help="First date YYYY-MM-DD.")
EndOpt = typer.Option(None, "--end", help="Last date YYYY-MM-DD.")
StepsOpt = typer.Option(None, "--steps", help="Optimizer steps (training.max_steps).")
DeviceOpt = typer.Option(None, "--device", help="auto | cpu | cuda.")
SeedOpt = typer.Option(None, "--seed", help="Random seed (training.seed).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON summary as the last line of stdout.")
BackendOpt = typer.Option(None, "--forecast-backend", help="toto | chronos | statistical | none.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")
NprocOpt = typer.Option(None, "--nproc", help="Train data-parallel on N processes (GPUs) of this machine: "
                                             "re-runs the command under torchrun (DDP).")


def build_config(config: Optional[Path], set_: Optional[List[str]], out: Optional[Path], source: Optional[str],
                 data_dir: Optional[Path], start: Optional[str], end: Optional[str], steps: Optional[int],
                 device: Optional[str], seed: Optional[int], forecast_backend: Optional[str] = None,
                 symbols: Optional[list[str]] = None, extra: Optional[dict] = None):
    from hftraining.config import load_config

    if source is None and data_dir is not None:
        source = "csv"
    updates = {
        "paths.root": str(out) if out else None, "data.source": source,
        "data.data_dir": str(data_dir) if data_dir else None, "data.start": start, "data.end": end,
        "training.max_steps": steps, "training.device": device, "training.seed": seed,
        "data.forecast_backend": forecast_backend, "data.symbols": symbols, **(extra or {}),
    }
    try:
        cfg = load_config(config, set_, updates)
    except UserError as exc:
        if steps is None or "training.warmup_steps" not in str(exc):
            raise
        # --steps below the configured warmup: shrink the warmup (as below) rather than refuse the flag
        cfg = load_config(config, set_, {**updates, "training.warmup_steps": max(0, steps // 10)})
    if steps is not None and cfg.training.warmup_steps >= steps:
        cfg.training.warmup_steps = max(0, steps // 10)
    if steps is not None and cfg.training.eval_every > steps:
        cfg.training.eval_every = steps
    return cfg


def emit_json(summary: dict) -> None:
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    sys.stdout.flush()


def _symbols(values: Optional[List[str]]) -> list[str]:
    from hftraining.layout import parse_symbols

    return parse_symbols(values or [])


StocksFileOpt = typer.Option(None, "--stocks-file", help="File of tickers, one per line (# comments); "
                                                         "adds to --stocks.")


def _universe(stocks: Optional[List[str]], stocks_file: Optional[Path], command: str) -> list[str]:
    """--stocks and --stocks-file together; neither is a one-line error."""
    from hftraining.data.universe import universe_symbols

    symbols = universe_symbols(stocks, stocks_file)
    if not symbols:
        raise UserError(f"hftrain {command}: no stocks given; use --stocks AAPL MSFT ... or --stocks-file FILE")
    return symbols


# --- training commands -------------------------------------------------------------------------

@app.command()
def single(
    stock: str = typer.Option("AAPL", "--stock", "-s", help="Ticker to train on."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, steps: Optional[int] = StepsOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt, json_: bool = JsonOpt,
    quiet: bool = QuietOpt,
    walk_forward: bool = typer.Option(False, "--walk-forward", help="Retrain every N bars; stitch the test segments."),
    retrain_every: Optional[int] = typer.Option(None, "--retrain-every", help="Walk-forward: bars per fold (252)."),
    walk_forward_window: Optional[str] = typer.Option(
        None, "--walk-forward-window", help="Walk-forward training window: expanding (default) or rolling."),
    seeds: Optional[List[int]] = typer.Option(None, "--seeds", help="Train one run per seed: --seeds 0 1 2."),
    nproc: Optional[int] = NprocOpt,
):
    """Train one stock: data -> features -> model -> profit objective -> validation -> test report."""
    from hftraining.distributed import is_main_process, relaunch
    from hftraining.train_with_profit import print_summary, run_single

    if nproc is not None and nproc > 1:
        if walk_forward or seeds:
            raise UserError("--nproc cannot be combined with --walk-forward or --seeds yet")
        raise typer.Exit(relaunch(STATE["argv"], nproc, device or "auto"))
    if walk_forward or seeds or retrain_every is not None or walk_forward_window is not None:
        _single_variant(stock, resume, walk_forward, retrain_every, walk_forward_window, seeds, seed, quiet, json_,
                        build_config(config, set_, out, source, data_dir, start, end, steps, device, seed,
                                     forecast_backend, symbols=_symbols([stock])))
        return
    if resume is not None:
        from hftraining.config import load_config

        if not (resume / "config.yaml").is_file():
            raise UserError(f"--resume {resume}: not a run folder (no config.yaml)")
        cfg = load_config(resume / "config.yaml", set_)
        parts = resume.resolve().parts
        if "models" in parts:       # the run's own output root, whatever the current directory is
            cfg.paths.root = str(Path(*parts[: len(parts) - 1 - parts[::-1].index("models")]))
        stock = cfg.data.symbols[0]
    else:
        cfg = build_config(config, set_, out, source, data_dir, start, end, steps, device, seed, forecast_backend,
                           symbols=_symbols([stock]))
    run = run_single(cfg.data.symbols[0] if resume else stock, cfg, resume=resume, progress=not quiet)
    if not is_main_process():                       # under torchrun rank 0 alone prints
        return
    print_summary(run)
    if json_:
        emit_json(run.summary)


def _single_variant(stock, resume, walk_forward, retrain_every, window, seeds, seed, quiet, json_, cfg) -> None:
    """`single --walk-forward ...` or `single --seeds ...`: check the combination, dispatch."""
    if not walk_forward and (retrain_every is not None or window is not None):
        raise UserError("--retrain-every and --walk-forward-window need --walk-forward")
    if resume is not None:
        raise UserError("--resume continues one run; it cannot be combined with --walk-forward or --seeds")
    if walk_forward and seeds:
        raise UserError("--walk-forward and --seeds cannot be combined yet; run one walk-forward per --seed")
    if seeds and seed is not None:
        raise UserError("--seed and --seeds cannot be combined; use --seeds alone")
    if walk_forward:
        from hftraining.walk_forward import print_walk_forward, run_walk_forward

        result = run_walk_forward(stock, cfg, retrain_every or 252, window or "expanding", progress=not quiet)
        print_walk_forward(result)
    else:
        from hftraining.seeds import print_seeds, run_seeds

        result = run_seeds(stock, cfg, seeds, progress=not quiet)
        print_seeds(result)
    if json_:
        emit_json(result.summary)


@app.command()
def study(
    stocks: List[str] = typer.Option(None, "--stocks", help="Tickers (space or comma separated)."),
    stocks_file: Optional[Path] = typer.Option(None, "--stocks-file", help="File of tickers, one per line."),
    mode: str = typer.Option("single", "--mode", help="single: one model per ticker; base: one pooled model; "
                                                      "walk_forward: retrain every --retrain-every bars; "
                                                      "portfolio: one allocation policy per --pairs group."),
    pairs: List[str] = typer.Option(None, "--pairs", help="Portfolio mode: a group like AAPL,MSFT (repeatable)."),
    seeds: Optional[List[int]] = typer.Option(None, "--seeds", help="Model seeds: --seeds 0 1 2 (default: --seed)."),
    walk_forward: bool = typer.Option(False, "--walk-forward", help="Same as --mode walk_forward."),
    retrain_every: int = typer.Option(252, "--retrain-every", help="Walk-forward: bars per fold."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, steps: Optional[int] = StepsOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt, json_: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """One config over many tickers: test net Sharpe vs buy-and-hold, momentum (and the oracle), with a DSR."""
    from hftraining.data.universe import read_stocks_file
    from hftraining.study import format_study, run_study

    symbols = _symbols(stocks) + (read_stocks_file(stocks_file) if stocks_file else [])
    groups = None
    if mode == "portfolio" or pairs:
        groups, symbols = study_groups(pairs, mode, symbols)
    if not symbols:
        raise UserError("hftrain study: no stocks given; use --stocks AAPL MSFT ... or --stocks-file FILE")
    if walk_forward:
        if mode not in ("single", "walk_forward"):
            raise UserError(f"--walk-forward and --mode {mode} cannot be combined")
        mode = "walk_forward"
    if seeds and seed is not None:
        raise UserError("--seed and --seeds cannot be combined; use --seeds alone")
    portfolio_steps = {"portfolio.max_steps": steps} if groups else None      # --steps: the policy's steps
    cfg = build_config(config, set_, out, source, data_dir, start, end, None if groups else steps, device, seed,
                       forecast_backend, symbols=list(dict.fromkeys(symbols)), extra=portfolio_steps)
    result = run_study(cfg.data.symbols, cfg, mode, seeds or [cfg.training.seed], retrain_every,
                       progress=not quiet, groups=groups)
    sys.stdout.write(format_study(result) + "\n")
    if json_:
        emit_json(result.summary)


def study_groups(pairs, mode: str, stocks: list[str]) -> tuple[list[list[str]], list[str]]:
    """`hftrain study --mode portfolio --pairs A,B --pairs C,D,E`: the groups, and their symbols in order."""
    from hftraining.layout import parse_symbols
    from hftraining.study import portfolio_groups

    if stocks:
        raise UserError("hftrain study --mode portfolio: give the groups with --pairs, not --stocks")
    groups = portfolio_groups([parse_symbols(p) for p in pairs or []], mode)
    return groups, list(dict.fromkeys(s for g in groups for s in g))


@app.command()
def forecast(
    stocks: List[str] = typer.Option(None, "--stocks", help="Tickers (space or comma separated)."),
    stocks_file: Optional[Path] = StocksFileOpt,
    backend: Optional[str] = typer.Option(None, "--backend", help="statistical | chronos | toto."),
    model: Optional[str] = typer.Option(None, "--model", help="Model id or local folder for the backend."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, device: Optional[str] = DeviceOpt, json_: bool = JsonOpt,
    shard: Optional[str] = typer.Option(
        None, "--shard", help="Only shard i of n of the symbols (i/n, e.g. 0/4; default under torchrun: "
                              "RANK/WORLD_SIZE), to spread them over GPUs or machines sharing --out."),
):
    """Precompute forecast features into the cache and report windows, seconds and cache hits."""
    from hftraining.forecast_command import run_forecast

    extra = {}
    chosen = backend
    if model is not None:
        if chosen is None:
            raise UserError("--model needs --backend (toto or chronos)")
        extra["data.toto_model_id" if chosen == "toto" else "data.chronos_model_id"] = model
    if device is not None and chosen in ("toto", "chronos"):
        extra[f"data.{chosen}_device"] = device
    cfg = build_config(config, set_, out, source, data_dir, start, end, None, None, None, chosen,
                       symbols=_universe(stocks, stocks_file, "forecast"), extra=extra)
    summary = run_forecast(cfg, shard=shard)
    if json_:
        emit_json(summary)


@app.command()
def base(
    stocks: List[str] = typer.Option(None, "--stocks", "--base-stocks", help="Tickers for the base model."),
    stocks_file: Optional[Path] = StocksFileOpt,
    finetune: bool = typer.Option(True, "--finetune/--no-finetune", help="Fine-tune each stock after base."),
    base_steps: Optional[int] = typer.Option(None, "--base-steps", help="Optimizer steps of the base model."),
    finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs", help="Fine-tune passes per stock."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Windows per optimizer step."),
    compare_single: bool = typer.Option(False, "--compare-single", help="Also train each stock from scratch."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, steps: Optional[int] = StepsOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt, json_: bool = JsonOpt,
    quiet: bool = QuietOpt, nproc: Optional[int] = NprocOpt,
):
    """Train one base model on many stocks, then fine-tune it per stock."""
    if nproc is not None and nproc > 1:
        from hftraining.distributed import relaunch

        raise typer.Exit(relaunch(STATE["argv"], nproc, device or "auto"))
    from hftraining.base_model_trainer import run_base_command

    if stocks_file is not None:
        stocks = _universe(stocks, stocks_file, "base")
    run_base_command(**locals())


@app.command(name="finetune")
def finetune_cmd(
    stock: str = typer.Option(..., "--stock", "-s", help="Ticker to fine-tune on."),
    base_run: Path = typer.Option(..., "--base", help="Base run folder (runs/models/base/<run>)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the stock's training windows."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, steps: Optional[int] = StepsOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, json_: bool = JsonOpt, quiet: bool = QuietOpt,
    nproc: Optional[int] = NprocOpt,
):
    """Fine-tune a base model on one stock."""
    if nproc is not None and nproc > 1:
        from hftraining.distributed import relaunch

        raise typer.Exit(relaunch(STATE["argv"], nproc, device or "auto"))
    from hftraining.base_model_trainer import run_finetune_command

    run_finetune_command(**locals())


@app.command()
def portfolio(
    pairs: List[str] = typer.Option(..., "--pairs", help="A group like AAPL,MSFT (repeat for more groups)."),
    base_run: Optional[Path] = typer.Option(None, "--base", help="Initialise the encoder from a base run."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, steps: Optional[int] = StepsOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt, json_: bool = JsonOpt,
    quiet: bool = QuietOpt,
    walk_forward: bool = typer.Option(False, "--walk-forward", help="Retrain every N bars; stitch the test segments."),
    retrain_every: Optional[int] = typer.Option(None, "--retrain-every", help="Walk-forward: bars per fold (252)."),
    walk_forward_window: Optional[str] = typer.Option(
        None, "--walk-forward-window", help="Walk-forward training window: expanding (default) or rolling."),
):
    """Learn softmax allocations over each group of assets, rebalanced every horizon."""
    if walk_forward:
        from hftraining.walk_forward import run_portfolio_walk_forward_command

        run_portfolio_walk_forward_command(**locals())
        return
    if retrain_every is not None or walk_forward_window is not None:
        raise UserError("--retrain-every and --walk-forward-window need --walk-forward")
    from hftraining.portfolio import run_portfolio_command

    run_portfolio_command(**locals())


@app.command()
def pipeline(
    stocks: List[str] = typer.Option(None, "--stocks", help="Tickers for base + fine-tune."),
    stocks_file: Optional[Path] = StocksFileOpt,
    pairs: List[str] = typer.Option(..., "--pairs", help="Groups for the portfolio stage (repeatable)."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, steps: Optional[int] = StepsOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, forecast_backend: Optional[str] = BackendOpt, json_: bool = JsonOpt,
    quiet: bool = QuietOpt,
):
    """Base model -> fine-tune per stock -> portfolio over the pairs."""
    from hftraining.base_model_trainer import run_pipeline_command

    stocks = _universe(stocks, stocks_file, "pipeline")
    run_pipeline_command(**locals())


@app.command()
def backtest(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    stock: Optional[str] = typer.Option(None, "--stock", "-s", help="Ticker (default: the model's)."),
    cost_bps: Optional[float] = typer.Option(None, "--cost-bps", help="Cost per unit turnover in bps."),
    config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[Path] = OutOpt,
    source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt,
    end: Optional[str] = EndOpt, device: Optional[str] = DeviceOpt, json_: bool = JsonOpt,
):
    """Run a trained model over chosen dates with the ProfitTracker and write a report."""
    from hftraining.backtest import run_backtest_command

    run_backtest_command(**locals())


@app.command()
def ensemble(
    models: List[Path] = typer.Option(..., "--models", help="Two or more run folders: --models RUN1 RUN2 ..."),
    stock: Optional[str] = typer.Option(None, "--stock", "-s", help="Ticker (default: the first run's)."),
    out: Optional[Path] = OutOpt, source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt,
    start: Optional[str] = typer.Option(None, "--start", help="First decision date (default: common test range)."),
    end: Optional[str] = typer.Option(None, "--end", help="Last decision date (default: common test range)."),
    device: Optional[str] = DeviceOpt, json_: bool = JsonOpt,
):
    """Average the positions of several runs (same features) and compare the ensemble with each member."""
    from hftraining.ensemble import run_ensemble_command

    run_ensemble_command(**locals())


@app.command()
def paper(
    model: Path = typer.Option(..., "--model", help="Run folder of a trained model."),
    feed: str = typer.Option(..., "--feed", help="csv:PATH (replay a CSV of daily bars) or yahoo (poll Yahoo)."),
    stock: Optional[str] = typer.Option(None, "--stock", "-s", help="Ticker (default: the model's)."),
    speed: float = typer.Option(0.0, "--speed", help="Replay speed in bars per second (0 = as fast as possible)."),
    state: Optional[Path] = typer.Option(
        None, "--state", help="State folder to resume from (default <out>/paper/<run>/<SYMBOL>)."),
    start: Optional[str] = typer.Option(
        None, "--start", help="First date to trade; earlier bars are history only (default: the whole CSV; "
                              "yahoo: from today)."),
    out: Optional[Path] = OutOpt, json_: bool = JsonOpt,
):
    """Paper-trade a run on bars arriving one at a time; resumable. No broker: no orders are ever sent."""
    from hftraining.paper import run_paper_command

    run_paper_command(**locals())


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run folder (runs/models/...) or a report folder (runs/reports/<run>)."),
    json_: bool = JsonOpt,
):
    """Write report.html: metrics vs baselines, curves, significance, cost sensitivity, provenance."""
    from hftraining.html_report import run_report_command

    run_report_command(run_dir=run_dir, json_=json_)


# --- data and config ---------------------------------------------------------------------------

def _load_for_data(stocks, out, source, data_dir, start, end, config=None, set_=None):
    from hftraining.data.universe import load_universe_bars

    cfg = build_config(config, set_, out, source, data_dir, start, end, None, None, None,
                       symbols=_symbols(stocks))
    return list(load_universe_bars(cfg.data.symbols, cfg, progress=len(cfg.data.symbols) > 1).items())


@data_app.command("fetch")
def data_fetch(stocks: List[str] = typer.Option(None, "--stocks"), stocks_file: Optional[Path] = StocksFileOpt,
               out: Optional[Path] = OutOpt,
               source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt,
               start: Optional[str] = StartOpt, end: Optional[str] = EndOpt, json_: bool = JsonOpt):
    """Download (or load) bars into the raw cache and say what was stored."""
    from hftraining.data.bars import summarize

    rows = {symbol: {**summarize(bars), "origin": bars.attrs.get("origin")}
            for symbol, bars in _load_for_data(_universe(stocks, stocks_file, "data fetch"), out,
                                               source or "yahoo", data_dir, start, end)}
    for symbol, info in rows.items():
        typer.echo(f"{symbol}: {info['rows']} bars {info['first_date']} .. {info['last_date']} ({info['origin']})",
                   err=True)
    if json_:
        emit_json(rows)


@data_app.command("validate")
def data_validate(stocks: List[str] = typer.Option(None, "--stocks"), stocks_file: Optional[Path] = StocksFileOpt,
                  out: Optional[Path] = OutOpt,
                  source: Optional[str] = SourceOpt, data_dir: Optional[Path] = DataDirOpt,
                  start: Optional[str] = StartOpt, end: Optional[str] = EndOpt, json_: bool = JsonOpt):
    """Check bars (dates, prices, OHLC consistency) and print a summary per symbol."""
    from hftraining.data.bars import summarize

    rows = {symbol: summarize(bars) for symbol, bars in
            _load_for_data(_universe(stocks, stocks_file, "data validate"), out, source, data_dir, start, end)}
    for symbol, info in rows.items():
        typer.echo(f"{symbol}: ok, " + ", ".join(f"{k}={v}" for k, v in info.items()), err=True)
    if json_:
        emit_json(rows)


@data_app.command("show")
def data_show(stock: str = typer.Option(..., "--stock", "-s"), rows: int = typer.Option(10, "--rows"),
              out: Optional[Path] = OutOpt, source: Optional[str] = SourceOpt,
              data_dir: Optional[Path] = DataDirOpt, start: Optional[str] = StartOpt, end: Optional[str] = EndOpt):
    """Print the last bars of a symbol and its causal features."""
    from hftraining.data.features import compute_features

    [(symbol, bars)] = _load_for_data([stock], out, source, data_dir, start, end)
    typer.echo(f"{symbol}: {bars.attrs.get('origin')}")
    typer.echo(bars.tail(rows).to_string())
    typer.echo(compute_features(bars).tail(rows).round(4).to_string())


@config_app.command("show")
def config_show(config: Optional[Path] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                describe: bool = typer.Option(False, "--describe",
                                              help="List every key with its default and meaning.")):
    """Print the resolved config (file + overrides) as YAML."""
    from hftraining.config import describe_fields, load_config, to_yaml

    if describe:
        for key, default, text in describe_fields():
            typer.echo(f"{key:40} {default:28} {text}")
        return
    typer.echo(to_yaml(load_config(config, set_)), nl=False)


@config_app.command("validate")
def config_validate(paths: List[Path] = typer.Argument(..., help="YAML files to check.")):
    """Validate config files; the first problem is reported with its dotted key."""
    from hftraining.config import load_config

    for path in paths:
        load_config(path)
        typer.echo(f"{path}: ok", err=True)


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


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    STATE["argv"] = list(argv)                       # `--nproc N` re-runs this command line under torchrun
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    setup_logging(debug)
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and argv[:1] not in (["single"], ["base"], ["finetune"],
                                                                            ["forecast"]):
            raise UserError("under torchrun only `hftrain single`, `hftrain base` and `hftrain finetune` "
                            "(data-parallel training) and `hftrain forecast` (one shard of the symbols per rank) "
                            "run; start other commands as one process")
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
        sys.stderr.write(f"error: {exc.format_message()} ({path}); see {path} --help\n")
        return 2
    except ABORTS:
        sys.stderr.write("aborted\n")
        return 130
    except EXITS as exc:
        return getattr(exc, "exit_code", 0)
    return 0


def entry() -> None:
    sys.exit(main())

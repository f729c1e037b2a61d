"""`hftrain forecast`, `hftrain data ...` and `hftrain config ...`: caches, bars and configs, shown and checked.

`hftrain forecast` fills the forecast-feature cache ahead of training (on a GPU box for Toto) so later
runs on the same bars only read it. Several GPUs or machines split the symbols: `--shard i/n` (or
torchrun's RANK/WORLD_SIZE) takes every n-th symbol from the i-th, and all shards write to one shared
cache folder (one file per symbol).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from hftraining.commands.common import ConfigOptions, Output, symbols_of, universe
from hftraining.config import Config
from hftraining.data.universe import load_universe_bars
from hftraining.errors import UserError
from hftraining.layout import Layout


def parse_shard(text: Optional[str]) -> tuple[int, int]:
    """`i/n` -> (i, n); without --shard, torchrun's (RANK, WORLD_SIZE), else (0, 1)."""
    if text is None:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text}: expected i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise UserError(f"--shard {text}: need 0 <= i < n")
    return index, count


def shard_symbols(symbols: list[str], index: int, count: int) -> list[str]:
    """Every `count`-th symbol starting at `index`: disjoint shards that together cover every symbol."""
    return symbols[index::count]


def fill_forecast_cache(config: Config, progress: bool = True, shard: Optional[str] = None,
                        out: Optional[Output] = None) -> dict:
    """Forecast features of this shard's symbols into the cache; one line per symbol (windows, seconds, hits).

    The command exists to fill one backend's cache, so a backend that cannot run here is an error: a fallback
    would fill the statistical cache and report success. `auto` fills the cache of the forecaster a training
    run on this machine would choose.
    """
    from hftraining.forecasting import precompute

    if config.data.resolved_forecast_backend == "none":
        raise UserError("hftrain forecast: choose a forecaster with --forecast-backend statistical|chronos|toto")
    config = config.model_copy(deep=True)
    config.data.forecast_fallback = "error"
    index, count = parse_shard(shard)
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and config.data.resolved_forecast_backend in ("auto", "toto", "chronos"):
        import torch

        if torch.cuda.is_available():             # under torchrun each rank forecasts on its own GPU
            torch.cuda.set_device(int(local_rank) % torch.cuda.device_count())
    layout = Layout.at(config.paths.root)
    layout.ensure_writable()
    symbols = shard_symbols(list(config.data.symbols), index, count)
    # the prices training will forecast: with --start, the earlier bars too (the cache is keyed by them)
    bars = load_universe_bars(symbols, config, progress=progress and len(symbols) > 1, warmup=True)
    prices = {symbol: b["adj_close"].to_numpy(np.float64) for symbol, b in bars.items()}
    rows = precompute(prices, config.data, layout.forecast_cache, progress=progress)
    out = out or Output()
    for row in rows:
        used = row["backend"]
        if row["backend"] != row["requested"]:
            used += f" (requested {row['requested']})"
        out.line(f"{row['symbol']}: {used}, {row['windows']} windows, {row['computed']} computed, "
                 f"{row['cache_hits']} from cache, {row['seconds']:.2f} s")
    return {"cache_dir": str(layout.forecast_cache), "shard": f"{index}/{count}", "symbols": rows}


def forecast(stocks: Optional[list[str]], stocks_file: Optional[Path], options: ConfigOptions,
             backend: Optional[str] = None, model: Optional[str] = None, shard: Optional[str] = None,
             json_: bool = False, quiet: bool = False) -> None:
    """`hftrain forecast --stocks ... --forecast-backend B [--model PATH_OR_ID] [--shard i/n]`."""
    extra = {}
    if model is not None:
        if backend is None:
            raise UserError("--model needs --forecast-backend (toto or chronos)")
        extra["data.toto_model_id" if backend == "toto" else "data.chronos_model_id"] = model
    if options.device is not None and backend in ("toto", "chronos"):
        extra[f"data.{backend}_device"] = options.device
    cfg = ConfigOptions(options.config, options.set_, options.out, options.source, options.data_dir, options.start,
                        options.end, forecast_backend=backend).build(
        symbols=universe(stocks, stocks_file, "forecast"), extra=extra)
    out = Output(json_)
    summary = fill_forecast_cache(cfg, progress=not quiet, shard=shard, out=out)
    out.json_summary(summary)


def _load_for_data(stocks: list[str], options: ConfigOptions, quiet: bool = False):
    cfg = options.build(symbols=symbols_of(stocks))
    return list(load_universe_bars(cfg.data.symbols, cfg, progress=not quiet and len(cfg.data.symbols) > 1).items())


def data_fetch(stocks: Optional[list[str]], stocks_file: Optional[Path], options: ConfigOptions,
               json_: bool = False, quiet: bool = False) -> None:
    """Download bars from Yahoo into the raw cache and say what was stored. Only Yahoo is fetched: a CSV
    folder is read in place, so `--data-dir` (or another --source) is refused instead of being ignored."""
    from dataclasses import replace

    from hftraining.data.bars import summarize

    symbols = universe(stocks, stocks_file, "data fetch")
    if options.data_dir is not None or options.source not in (None, "yahoo"):
        given = f"--data-dir {options.data_dir}" if options.data_dir is not None else f"--source {options.source}"
        raise UserError(f"hftrain data fetch downloads from Yahoo only, so {given} has nothing to fetch; check a CSV "
                        "folder with `hftrain data validate --data-dir DIR --stocks ...` and train on it in place "
                        "with --data-dir DIR")
    rows = {symbol: {**summarize(bars), "origin": bars.attrs.get("origin")}
            for symbol, bars in _load_for_data(symbols, replace(options, source="yahoo"), quiet)}
    out = Output(json_)
    for symbol, info in rows.items():
        out.line(f"{symbol}: {info['rows']} bars {info['first']} .. {info['last']} ({info['origin']})")
    out.json_summary(rows)


def data_validate(stocks: Optional[list[str]], stocks_file: Optional[Path], options: ConfigOptions,
                  json_: bool = False, quiet: bool = False) -> None:
    """Check bars (dates, prices, OHLC consistency) and print a summary per symbol."""
    from hftraining.data.bars import summarize

    rows = {symbol: summarize(bars) for symbol, bars in
            _load_for_data(universe(stocks, stocks_file, "data validate"), options, quiet)}
    out = Output(json_)
    for symbol, info in rows.items():
        out.line(f"{symbol}: ok, " + ", ".join(f"{k}={v}" for k, v in info.items()))
    out.json_summary(rows)


def data_show(stock: str, rows: int, options: ConfigOptions, json_: bool = False) -> None:
    """Print the last bars of a symbol and its causal features."""
    from hftraining.data.features import compute_features

    [(symbol, bars)] = _load_for_data([stock], options, quiet=True)
    features = compute_features(bars).tail(rows).round(4)
    out = Output(json_)
    out.line(f"{symbol}: {bars.attrs.get('origin')}")
    out.line(bars.tail(rows).to_string())
    out.line(features.to_string())

    def records(frame):
        return [{"date": f"{day:%Y-%m-%d}", **{k: (None if v != v else v) for k, v in row.items()}}
                for day, row in zip(frame.index, frame.to_dict("records"), strict=True)]

    out.json_summary({"symbol": symbol, "origin": bars.attrs.get("origin"), "bars": records(bars.tail(rows)),
                      "features": records(features)})


def config_show(config: Optional[Path], set_: Optional[list[str]], describe: bool = False) -> None:
    """Print the resolved config (file + overrides) as YAML, or every key with its default and meaning."""
    from hftraining.config import describe_fields, load_config, to_yaml

    if describe:
        for key, default, text in describe_fields():
            sys.stdout.write(f"{key:40} {default:28} {text}\n")
        return
    sys.stdout.write(to_yaml(load_config(config, set_)))


def config_validate(paths: list[Path], set_: Optional[list[str]] = None) -> None:
    """Validate config files (each with the --set overrides); the first problem is reported with its dotted key."""
    from hftraining.config import load_config

    out = Output()
    for path in paths:
        load_config(path, set_)
        out.line(f"{path}: ok")

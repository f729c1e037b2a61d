"""`hftrain forecast`: fill the forecast-feature cache for some symbols and say what it cost.

Run it ahead of training (on a GPU box for Toto) so later runs on the same bars only read the cache.
Several GPUs or machines split the symbols: `--shard i/n` (or torchrun's RANK/WORLD_SIZE) takes every
n-th symbol from the i-th, and all shards write to one shared cache folder (one file per symbol).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import numpy as np

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


def run_forecast(config: Config, progress: bool = True, shard: Optional[str] = None) -> dict:
    from hftraining.forecasting import precompute

    if config.data.resolved_forecast_backend == "none":
        raise UserError("hftrain forecast: choose a forecaster with --backend statistical|chronos|toto")
    index, count = parse_shard(shard)
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and config.data.resolved_forecast_backend in ("toto", "chronos"):
        import torch

        if torch.cuda.is_available():             # under torchrun each rank forecasts on its own GPU
            torch.cuda.set_device(int(local_rank) % torch.cuda.device_count())
    layout = Layout.at(config.paths.root)
    layout.ensure_writable()
    symbols = shard_symbols(list(config.data.symbols), index, count)
    bars = load_universe_bars(symbols, config, progress=progress and len(symbols) > 1)   # Yahoo: batched
    prices = {symbol: b["adj_close"].to_numpy(np.float64) for symbol, b in bars.items()}
    rows = precompute(prices, config.data, layout.forecast_cache, progress=progress)
    for row in rows:
        used = row["backend"]
        if row["backend"] != row["requested"]:
            used += f" (requested {row['requested']})"
        sys.stderr.write(f"{row['symbol']}: {used}, {row['windows']} windows, {row['computed']} computed, "
                         f"{row['cache_hits']} from cache, {row['seconds']:.2f} s\n")
    return {"cache_dir": str(layout.forecast_cache), "shard": f"{index}/{count}", "symbols": rows}

"""`hftrain forecast`: fill the forecast-feature cache for some symbols and say what it cost.

Run it ahead of training (on a GPU box for Toto) so later runs on the same bars only read the cache.
"""

from __future__ import annotations

import sys

import numpy as np

from hftraining.config import Config
from hftraining.data import load_bars
from hftraining.errors import UserError
from hftraining.layout import Layout


def run_forecast(config: Config, progress: bool = True) -> dict:
    from hftraining.forecasting import precompute

    if config.data.resolved_forecast_backend == "none":
        raise UserError("hftrain forecast: choose a forecaster with --backend statistical|chronos|toto")
    layout = Layout.at(config.paths.root)
    layout.ensure_writable()
    prices = {symbol: load_bars(symbol, config.data, layout.raw_data)["adj_close"].to_numpy(np.float64)
              for symbol in config.data.symbols}
    rows = precompute(prices, config.data, layout.forecast_cache, progress=progress)
    for row in rows:
        used = row["backend"] if row["backend"] == row["requested"] else f"{row['backend']} (requested {row['requested']})"
        sys.stderr.write(f"{row['symbol']}: {used}, {row['windows']} windows, {row['computed']} computed, "
                         f"{row['cache_hits']} from cache, {row['seconds']:.2f} s\n")
    return {"cache_dir": str(layout.forecast_cache), "symbols": rows}

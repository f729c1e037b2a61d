"""Rolling causal forecast features for one price series: windows, batches, progress, cache.

For every bar t with a full context, the window is prices[t-L+1 .. t] (a sliding view, no copy), so
the feature at t uses bars <= t only. Earlier rows stay NaN: never back-filled, never zeros. Missing
or non-positive prices are forward-filled (causal; Toto crashes on NaN), and a window that reaches
back before the first valid price has no full context (NaN row). Each backend returns the mean and
std of the next H prices; they become returns relative to the window's last price p_t:
fc_mean_h = m_h / p_t - 1 and fc_std_h = s_h / p_t.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hftraining.config import DataConfig
from hftraining.errors import UserError
from hftraining.forecasting import cache
from hftraining.forecasting.base import (
    CACHE_SCHEMA,
    Backend,
    ForecastFeatures,
    choose_auto,
    feature_names,
    load_backend,
)


def causal_ffill(prices: np.ndarray) -> np.ndarray:
    """Replace NaN, inf and non-positive prices by the last valid earlier price (NaN before the first)."""
    ok = np.isfinite(prices) & (prices > 0)
    last = np.where(ok, np.arange(len(prices)), -1)
    np.maximum.accumulate(last, out=last)
    return np.where(last >= 0, prices[np.maximum(last, 0)], np.nan)


def window_seed(symbol: str, end: int) -> int:
    """Seed of the window ending at bar `end`: random draws depend on the window, not on its batch."""
    return int.from_bytes(hashlib.sha256(f"{symbol}|{end}".encode()).digest()[:8], "little") >> 1


@contextlib.contextmanager
def _progress_bar(show: bool, total: int, label: str) -> Iterator:
    """Yield an `advance(n)` callable driving a rich progress bar on stderr (a no-op when quiet)."""
    if not show or total <= 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def rolling_forecasts(
    backend: Backend, prices: np.ndarray, first_end: int, symbol: str, progress: bool = False
) -> tuple[np.ndarray, int]:
    """Features for the windows ending at first_end..T-1 -> (rows [T - first_end, 2H], windows computed)."""
    horizon, length = backend.horizon, backend.context_length
    filled = causal_ffill(np.asarray(prices, dtype=np.float64))
    total = len(filled)
    out = np.full((max(total - first_end, 0), 2 * horizon), np.nan, dtype=np.float32)
    valid = np.flatnonzero(np.isfinite(filled))
    if len(valid) == 0 or total < length:
        return out, 0
    first_valid = int(valid[0])
    start = max(first_end, length - 1, first_valid + length - 1)  # first end with a full, valid window
    if start >= total:
        return out, 0

    def put(lo: int, last: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        last = np.asarray(last, dtype=np.float64).reshape(-1, 1)
        rows = slice(lo - first_end, lo - first_end + len(last))
        out[rows, :horizon] = np.asarray(mean, dtype=np.float64) / last - 1.0
        out[rows, horizon:] = np.asarray(std, dtype=np.float64) / last

    shortcut = backend.forecast_series(filled[first_valid:], start - first_valid)
    if shortcut is not None:
        put(start, *shortcut)
        return out, total - start

    windows = np.lib.stride_tricks.sliding_window_view(filled.astype(np.float32), length)  # [i] ends at i+L-1
    with _progress_bar(progress, total - start, f"{symbol} {backend.name} forecasts") as advance:
        for lo in range(start, total, backend.batch_size):
            hi = min(lo + backend.batch_size, total)
            contexts = windows[lo - length + 1 : hi - length + 1]
            seeds = (
                np.array([window_seed(symbol, t) for t in range(lo, hi)], dtype=np.int64)
                if backend.uses_seeds
                else None
            )
            if backend.fixed_batch_shape and hi - lo < backend.batch_size:  # same shape for every call
                contexts = np.concatenate([contexts, np.repeat(contexts[-1:], backend.batch_size - (hi - lo), 0)])
            mean, std = backend.forecast(contexts, seeds)
            put(lo, contexts[: hi - lo, -1], mean[: hi - lo], std[: hi - lo])
            advance(hi - lo)
    return out, total - start


def forecast_features(
    symbol: str, adj_close: np.ndarray, data: DataConfig, cache_dir: Path | None, progress: bool = True
) -> ForecastFeatures:
    """Causal forecast features [T, 2H] for one symbol, from the configured backend (or its fallback).

    Rows before the first full context are NaN. `info` records what produced the numbers (model id,
    weights hash, mode, device, dtype, fallback reason) and what it cost (windows, computed, cache hits,
    seconds). With a cache_dir, rows already computed for the same prices prefix are reused.
    """
    requested = data.resolved_forecast_backend
    if requested == "none":
        raise UserError("data.forecast_backend is none: there are no forecast features to compute")
    prices = np.asarray(adj_close, dtype=np.float64).reshape(-1)
    began = time.perf_counter()
    backend, fallback_reason = load_backend(data)
    horizon, length, total = backend.horizon, backend.context_length, len(prices)
    described = backend.describe()
    key = {
        "schema": CACHE_SCHEMA,
        "backend": backend.name,
        "symbol": symbol,
        "context": length,
        "horizon": horizon,
        **described,
    }

    values = np.full((total, 2 * horizon), np.nan, dtype=np.float32)
    reused = 0  # rows [0, reused) come from the cache
    path = cache.cache_path(cache_dir, symbol, backend.name, key) if cache_dir is not None else None
    if path is not None:
        stored = cache.load(path, key, 2 * horizon)
        if stored is not None:
            reused = cache.matching_prefix(stored[0], prices)
            values[:reused] = stored[1][:reused]
    first_end = max(reused, length - 1)
    if first_end < total:
        values[first_end:], computed = rolling_forecasts(backend, prices, first_end, symbol, progress)
    else:
        computed = 0
    if path is not None and reused < total:
        cache.save(path, key, prices, values)

    windows = max(total - length + 1, 0)
    hits = max(reused - (length - 1), 0)
    info: dict[str, Any] = {
        **described,
        "backend": backend.name,
        "requested": requested,
        "context": length,
        "horizon": horizon,
        "windows": windows,
        "computed": computed,
        "cache_hits": hits,
        "skipped": windows - computed - hits,  # windows reaching back before the first valid price
        "seconds": round(time.perf_counter() - began, 4),
        "fallback_reason": fallback_reason,
        "auto_choice": choose_auto(data)[1] if requested == "auto" else None,
        "cache_file": str(path) if path is not None else None,
        "prices_sha256": cache.prices_hash(prices),
    }
    return ForecastFeatures(
        values=values, names=feature_names(horizon), backend=backend.name, requested=requested, info=info
    )


def precompute(
    symbols_and_prices: dict[str, np.ndarray], data: DataConfig, cache_dir: Path | None, progress: bool = True
) -> list[dict[str, Any]]:
    """Fill the cache for many symbols (the `hftrain forecast` command); one summary dict per symbol."""
    rows = []
    for symbol, prices in symbols_and_prices.items():
        ff = forecast_features(symbol, prices, data, cache_dir, progress=progress)
        rows.append(
            {
                "symbol": symbol,
                "backend": ff.backend,
                "requested": ff.requested,
                "windows": ff.info["windows"],
                "computed": ff.info["computed"],
                "cache_hits": ff.info["cache_hits"],
                "seconds": ff.info["seconds"],
                "fallback_reason": ff.info["fallback_reason"],
            }
        )
    return rows

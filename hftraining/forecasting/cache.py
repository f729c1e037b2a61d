"""On-disk cache of forecast features, one npz per (symbol, forecaster settings).

Model forecasts cost milliseconds per window and there is one window per bar, so they are computed
once. The file name carries a hash of everything the numbers depend on (backend, model id, weights
hash, mode, samples, context, horizon, dtype, device class, library versions; see Backend.describe),
and the file stores the prices it was computed from. A feature row t depends only on prices[:t+1],
so every row whose prices prefix matches the new series is reused: appending bars computes only the
new windows, and a revised history (new split adjustment) recomputes from the first changed bar.
Writes are atomic; an unreadable file is reported and recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from hftraining.atomic import atomic_write
from hftraining.forecasting.base import log


def key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def cache_path(cache_dir: str | Path, symbol: str, backend: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(key_text(key).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._^=-]", "_", symbol)
    return Path(cache_dir) / f"{safe}.{backend}.{digest}.npz"


def prices_hash(prices: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(prices, dtype=np.float64).tobytes()).hexdigest()[:16]


def load(path: Path, key: dict[str, Any], width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(prices, values) stored at `path`, or None when absent; unreadable or mismatched files warn."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored_key, prices, values = str(npz["key"]), npz["prices"], npz["values"]
        if stored_key != key_text(key):
            raise ValueError("its settings do not match its name")
        if prices.ndim != 1 or values.shape != (len(prices), width):
            raise ValueError(f"shapes {prices.shape} / {values.shape} do not match")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed, never trusted
        log.warning("forecast cache %s is unreadable (%s: %s); recomputing it", path, type(exc).__name__, exc)
        return None
    return prices.astype(np.float64), values.astype(np.float32)


def save(path: Path, key: dict[str, Any], prices: np.ndarray, values: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                key=np.array(key_text(key)),
                prices=np.asarray(prices, dtype=np.float64),
                values=np.asarray(values, dtype=np.float32),
                prices_sha256=np.array(prices_hash(prices)),
            )

    atomic_write(path, write)


def matching_prefix(cached: np.ndarray, prices: np.ndarray) -> int:
    """Length of the longest common prefix of two price series (NaN equals NaN)."""
    n = min(len(cached), len(prices))
    a, b = cached[:n], np.asarray(prices[:n], dtype=np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return n if same.all() else int(np.argmin(same))

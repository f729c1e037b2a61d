"""Causal per-bar features: each value at bar t is computed from bars <= t only.

Every indicator is a trailing rolling or exponentially weighted statistic with a minimum number of
periods, so the first rows are NaN (dropped later) rather than back-filled from the future.
Prices are put on the total-return basis first (O/H/L scaled by adj_close/close), so a dividend
or split never shows up as a return. `symbol_frame` adds one symbol's forecast features and adjusted
prices: the frame every panel (aligned, ragged, paper trading) is built from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from hftraining.config import Config

FEATURE_NAMES = [
    "ret_1", "ret_5", "ret_20", "ret_60",
    "vol_20", "vol_60",
    "range_1", "range_10",
    "close_location", "gap",
    "volume_z_20",
    "rsi_14", "macd", "sma_50_dist", "bollinger_b_20",
]

# Bars of history the slowest feature needs before it is defined.
WARMUP_BARS = 61


def adjusted_ohlc(bars: pd.DataFrame) -> pd.DataFrame:
    """Open/high/low/close on the adjusted (total-return) basis: close becomes adj_close."""
    factor = bars["adj_close"] / bars["close"]
    return pd.DataFrame({
        "open": bars["open"] * factor,
        "high": bars["high"] * factor,
        "low": bars["low"] * factor,
        "close": bars["adj_close"],
    }, index=bars.index)


def _rsi(close: pd.Series, period: int) -> pd.Series:
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    total = gain + loss
    return (gain / total.where(total > 0)).fillna(0.5).where(gain.notna()) - 0.5


def compute_features(bars: pd.DataFrame) -> pd.DataFrame:
    """The FEATURE_NAMES columns for checked bars; NaN where history is too short (never back-filled)."""
    px = adjusted_ohlc(bars)
    close, high, low, open_ = px["close"], px["high"], px["low"], px["open"]
    log_close = np.log(close)
    ret_1 = log_close.diff()

    def trailing_return(k: int) -> pd.Series:
        return log_close - log_close.shift(k)

    log_volume = np.log1p(bars["volume"].astype(float))
    vol_mean = log_volume.rolling(20, min_periods=20).mean()
    vol_std = log_volume.rolling(20, min_periods=20).std()
    day_range = np.log(high / low)
    spread = high - low
    ema_fast = close.ewm(span=12, adjust=False, min_periods=26).mean()
    ema_slow = close.ewm(span=26, adjust=False, min_periods=26).mean()
    sma_20 = close.rolling(20, min_periods=20).mean()
    std_20 = close.rolling(20, min_periods=20).std()
    sma_50 = close.rolling(50, min_periods=50).mean()

    features = pd.DataFrame({
        "ret_1": ret_1,
        "ret_5": trailing_return(5),
        "ret_20": trailing_return(20),
        "ret_60": trailing_return(60),
        "vol_20": ret_1.rolling(20, min_periods=20).std(),
        "vol_60": ret_1.rolling(60, min_periods=60).std(),
        "range_1": day_range,
        "range_10": day_range.rolling(10, min_periods=10).mean(),
        "close_location": ((close - low) / spread.where(spread > 0)).fillna(0.5) - 0.5,
        "gap": np.log(open_ / close.shift(1)),
        "volume_z_20": ((log_volume - vol_mean) / vol_std.where(vol_std > 0)).fillna(0.0).where(vol_std.notna()),
        "rsi_14": _rsi(close, 14),
        "macd": (ema_fast - ema_slow) / close,
        "sma_50_dist": np.log(close / sma_50),
        "bollinger_b_20": ((close - sma_20) / (2 * std_20.where(std_20 > 0))).fillna(0.0).where(std_20.notna()),
    }, index=bars.index)
    return features[FEATURE_NAMES].astype("float64")


def warmup_needed(config: Config) -> int:
    """Bars of history before a bar that its features need: the slowest indicator's, or a forecast window's."""
    forecasts = config.data.resolved_forecast_backend != "none"
    return max(WARMUP_BARS, config.data.forecast_context_length - 1 if forecasts else 0)


def symbol_frame(symbol: str, bars: pd.DataFrame, config: Config, forecast_cache: Optional[Path],
                 progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Features (+ forecast features) and adjusted prices of one symbol, indexed by date.

    Bars marked with `attrs["first_date"]` (a --start, hftraining.data.sources.finish_bars) carry earlier
    history: the features (forecasts too: the cache then serves every --start) are computed on all of it,
    and the frame is cut at that date. `frame.attrs["range"]` keeps what a too-short range's error should say.
    """
    first = bars.attrs.get("first_date")
    features = compute_features(bars)
    info: dict = {"backend": "none"}
    backend = config.data.resolved_forecast_backend
    if backend != "none":
        from hftraining.forecasting import forecast_features

        ff = forecast_features(symbol, bars["adj_close"].to_numpy(dtype=np.float64), config.data,
                               forecast_cache, progress=progress)
        forecast = pd.DataFrame(ff.values, index=bars.index, columns=ff.names)
        features = pd.concat([features, forecast], axis=1)
        info = {"backend": ff.backend, "requested": ff.requested, **ff.info}
    prices = adjusted_ohlc(bars).add_prefix("px_")
    frame = pd.concat([features, prices], axis=1)
    if first is not None:
        frame = frame.loc[first:].copy()
        frame.attrs = {"range": {"start": f"{first:%Y-%m-%d}", "end": f"{bars.index[-1]:%Y-%m-%d}",
                                 "bars": len(frame), "warmup_bars": int(bars.attrs.get("warmup_bars", 0)),
                                 "needed": warmup_needed(config)}}
    return frame, info


def short_range_note(frame: pd.DataFrame) -> str:
    """What to add to a "too few bars" error when --start cut the history: the warm-up, and what was loaded."""
    r = frame.attrs.get("range")
    if not r:
        return ""
    earlier = (f"{r['warmup_bars']} earlier bars were loaded for it automatically" if r["warmup_bars"] else
               f"the data has no bars before {r['start']} (earlier bars are loaded automatically when it has them)")
    return (f"; {r['start']} .. {r['end']} holds {r['bars']} bars, and features need about {r['needed']} bars of "
            f"warm-up before --start: {earlier}; move --start earlier or --end later")

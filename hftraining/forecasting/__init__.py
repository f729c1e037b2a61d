"""Forecast features: causal rolling forecasts (Toto on CUDA, Chronos, statistical), batched and cached.

    from hftraining.forecasting import forecast_features
    ff = forecast_features("AAPL", adj_close, config.data, cache_dir)   # ff.values [T, 2H], ff.names

The panel builder calls `forecast_features` per symbol; `hftrain forecast` calls `precompute`.
Backends: base.py (interface, fallback policy), statistical.py, chronos_backend.py, toto_backend.py;
rolling.py turns a series into per-bar rows; cache.py stores them.
"""

from hftraining.forecasting.base import BackendUnavailable, ForecastFeatures, clear_loaded, feature_names
from hftraining.forecasting.rolling import forecast_features, precompute

__all__ = [
    "BackendUnavailable",
    "ForecastFeatures",
    "clear_loaded",
    "feature_names",
    "forecast_features",
    "precompute",
]

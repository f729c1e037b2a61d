"""A trained run replayed on chosen dates exactly as it was trained: what `backtest`, `ensemble` and
`paper` share.

The run's own config rebuilds the data, with the forecaster its features actually came from pinned
(a CPU run that fell back to the statistical forecaster is never fed Toto's numbers under the same
feature names); `--config`/`--set` go on top and data.end is cleared (an end date selects decisions,
it never cuts bars before featurising). The features must be the ones the scaler was fitted on; the
output root is the one the run lives under; a range that overlaps the run's (or its base's) training
or validation dates is named, so it can be flagged IN SAMPLE.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from hftraining import checkpoint as ckpt
from hftraining.config import Config, apply_overrides, parse_yaml, validate
from hftraining.data.panel import Panel
from hftraining.errors import UserError


def parse_day(value: str | None, flag: str) -> pd.Timestamp | None:
    """A YYYY-MM-DD flag value as a Timestamp (None stays None); anything else is one line naming the flag."""
    if value is None:
        return None
    try:
        return pd.Timestamp(date.fromisoformat(str(value)))
    except ValueError:
        raise UserError(f"{flag} {value!r}: expected a date YYYY-MM-DD") from None


def forecast_backend_used(metadata: dict) -> str | None:
    """The forecaster that actually produced the run's features (after any fallback), when one did for all symbols.

    A run that asked for Toto on a machine without CUDA trained on the statistical fallback; whatever
    re-featurises its data later (backtest, paper trading, an ensemble) must use that, not the request.
    """
    used = {info.get("backend", "none") for info in (metadata.get("forecast") or {}).values()}
    return used.pop() if len(used) == 1 else None


def pin_forecast_backend(config: Config, metadata: dict) -> Config:
    """A copy of a run's config whose data.forecast_backend is the one its features came from."""
    used = forecast_backend_used(metadata)
    if used is None or used == config.data.resolved_forecast_backend:
        return config
    pinned = config.model_copy(deep=True)
    pinned.data.forecast_backend = used
    return pinned


def backtest_setup(run: ckpt.RunFiles, start_date, end_date, cost_bps, config_path, overrides, source, data_dir,
                   device) -> tuple[pd.Timestamp | None, pd.Timestamp | None, Config]:
    """The checked date range (start defaults to the run's test start) and the config a backtest of `run`
    uses, single-stock and portfolio alike."""
    start, end = parse_day(start_date, "--start"), parse_day(end_date, "--end")
    if start is not None and end is not None and start > end:
        raise UserError(f"--start {start_date} is after --end {end_date}")
    if cost_bps is not None and cost_bps < 0:
        raise UserError(f"--cost-bps {cost_bps}: a cost cannot be negative")
    if source is None and data_dir is not None:
        source = "csv"
    config = backtest_config(run.config, config_path, overrides, {
        "data.source": source, "data.data_dir": str(data_dir) if data_dir else None,
        "training.device": device}, forecast_backend=forecast_backend_used(run.metadata))
    if cost_bps is not None:
        config = config.with_cost_bps(cost_bps)        # training's cost and the tracker's, as one
    if start is None:                               # default: the run's own test range, out of sample
        test = (run.metadata.get("splits") or {}).get("test")
        start = parse_day(test["start"], "test start") if test else None
    return start, end, config


def backtest_config(run_config: Config, config_path: Path | None = None, overrides: list[str] | None = None,
                    updates: dict | None = None, forecast_backend: str | None = None) -> Config:
    """The run's config, then a --config file, --set overrides and flag updates on top.

    data.end is cleared: the backtest's end selects decisions after featurising, it does not cut bars.
    `forecast_backend` (what the run actually used) is pinned before the user's overrides: forecast
    feature names do not say which backend made them, so a backtest on a CUDA machine must not
    silently swap the statistical features a CPU-trained model learned for Toto's.
    """
    raw = run_config.model_dump(mode="json")
    if forecast_backend is not None:
        raw["data"]["forecast_backend"] = forecast_backend
    if config_path is not None:
        path = Path(config_path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        for section, values in (parse_yaml(path.read_text(), where=str(path)) or {}).items():
            if isinstance(values, dict) and isinstance(raw.get(section), dict):
                raw[section].update(values)
            else:
                raw[section] = values
    origins = apply_overrides(raw, overrides, updates, BACKTEST_FLAGS)
    raw["data"]["end"] = None
    raw["paths"]["run_name"] = None
    return validate(raw, f"{config_path or 'the run config.yaml'} for the backtest", origins)


BACKTEST_FLAGS = {"data.source": "--source", "data.data_dir": "--data-dir", "training.device": "--device"}


def output_root(model_dir: Path, out: Path | None, config: Config) -> Path:
    """--out, else the root the run lives under (the folder above `models/`), else paths.root."""
    if out is not None:
        return Path(out)
    parts = model_dir.resolve().parts
    if "models" in parts:
        return Path(*parts[: len(parts) - 1 - parts[::-1].index("models")])
    return Path(config.paths.root)


def decision_range(panel: Panel, context_length: int, start: pd.Timestamp | None,
                   end: pd.Timestamp | None) -> range:
    """Decision bars with start <= date <= end, a full window behind them and a next bar to earn."""
    dates = pd.DatetimeIndex(panel.dates)
    first = max(context_length - 1, int(dates.searchsorted(start)) if start is not None else 0)
    last = min(panel.n_time - 2, int(dates.searchsorted(end, side="right")) - 1 if end is not None else panel.n_time)
    if last < first:
        raise UserError(
            f"{panel.symbols[0]}: no decision bars between {start.date() if start is not None else 'start'} and "
            f"{end.date() if end is not None else 'end'} with {context_length} bars of history and a next bar "
            f"(data covers {panel.date_str(0)} .. {panel.date_str(panel.n_time - 1)})")
    return range(first, last + 1)


def in_sample_overlap(metadata: dict, first: str, last: str) -> list[str]:
    """Which training / validation date ranges of the run, or of the base run it started from, [first, last]
    overlaps, as text."""
    hits = []
    for key, whose in (("splits", ""), ("base_splits", "base ")):
        for name in ("train", "val"):
            span = (metadata.get(key) or {}).get(name)
            if span and span["start"] <= last and first <= span["end"]:
                label = "training" if name == "train" else "validation"
                hits.append(f"{whose}{label} {span['start']} .. {span['end']}")
    return hits


def check_features(run: ckpt.RunFiles, panel: Panel) -> None:
    saved = run.scaler.feature_names
    listed = ckpt.read_json(run.path / ckpt.FEATURES) if (run.path / ckpt.FEATURES).is_file() else saved
    if list(listed) != list(saved):
        raise UserError(f"--model {run.path}: features.json and scaler.json list different features")
    if list(panel.feature_names) != list(saved):
        missing = sorted(set(saved) - set(panel.feature_names))
        extra = sorted(set(panel.feature_names) - set(saved))
        raise UserError(f"--model {run.path}: the data's features differ from the model's (missing {missing[:4]}, "
                        f"unexpected {extra[:4]}{', order differs' if not (missing or extra) else ''}); "
                        "backtest with the run's forecast backend and feature settings")

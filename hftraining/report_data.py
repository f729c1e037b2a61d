"""What report.html is drawn from: every strategy's daily series, a portfolio's weights, the training curves.

`[<SYM>_]series.csv` (date, strategy, position, net_return; written by `save_series` next to
metrics.json; older reports fall back to test_returns.csv), `weights.csv` (portfolios) and the
TensorBoard events of the run (or its metadata's validation history).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hftraining import atomic

SERIES = "series.csv"
TRAINING_TAGS = [("train/loss", "Training loss"), ("eval/loss", "Validation loss"),
                 ("profit/sharpe_ratio", "Validation net Sharpe")]


def frame_of(sim) -> pd.DataFrame:
    """date, position, net_return of a Simulation (or a DataFrame with those columns)."""
    frame = sim if isinstance(sim, pd.DataFrame) else sim.frame
    out = frame[["date", "position", "net_return"]].copy()
    out["date"] = pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%d")
    return out


def save_series(report_dir: Path, strategies: dict, prefix: str = "") -> Path:
    """Write `[prefix]series.csv` in long form: one row per (date, strategy)."""
    parts = [frame_of(sim).assign(strategy=name) for name, sim in strategies.items()]
    long = pd.concat(parts, ignore_index=True)[["date", "strategy", "position", "net_return"]]
    return atomic.write_text(Path(report_dir) / f"{prefix}{SERIES}", long.to_csv(index=False, float_format="%.10g"))


def load_series(report_dir: Path, prefix: str = "") -> dict[str, pd.DataFrame]:
    """strategy -> frame indexed by date (position, net_return); test_returns.csv when no series.csv."""
    path = report_dir / f"{prefix}{SERIES}"
    if path.is_file():
        long = pd.read_csv(path, parse_dates=["date"])
        return {name: group.set_index("date")[["position", "net_return"]]
                for name, group in long.groupby("strategy", sort=False)}
    path = report_dir / f"{prefix}test_returns.csv"
    if path.is_file():
        frame = pd.read_csv(path, parse_dates=["date"]).set_index("date")
        if "position" not in frame:
            weights = [c for c in frame if c.startswith("weight_") and not c.endswith("CASH")]
            frame["position"] = frame[weights].sum(axis=1) if weights else np.nan
        return {"model": frame[["position", "net_return"]]}
    return {}


def load_weights(report_dir: Path, prefix: str = "") -> pd.DataFrame | None:
    path = report_dir / f"{prefix}weights.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, parse_dates=["date"]).set_index("date")
    return frame[[c for c in frame if c.startswith("weight_")]].rename(columns=lambda c: c[len("weight_"):])


def training_curves(tensorboard_dir: Path | None, history: list | None = None) -> dict[str, tuple]:
    """tag -> (steps, values) from the TensorBoard events, else from metadata history (validation only)."""
    curves: dict[str, tuple] = {}
    if tensorboard_dir is not None and Path(tensorboard_dir).is_dir():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
        events.Reload()
        available = set(events.Tags().get("scalars", []))
        for tag, _ in TRAINING_TAGS:
            if tag in available:
                points = events.Scalars(tag)
                curves[tag] = (np.array([p.step for p in points]), np.array([p.value for p in points]))
    if not curves and history:
        steps = np.array([h["step"] for h in history])
        for tag, key in (("eval/loss", "val_loss"), ("profit/sharpe_ratio", "sharpe_ratio")):
            if all(key in h for h in history):
                curves[tag] = (steps, np.array([h[key] for h in history], dtype=float))
    return curves

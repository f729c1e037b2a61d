"""The test-range report of a run: metrics.json (model vs baselines, same bars and costs) and test_returns.csv.

Every number here comes from decision bars after the validation range and its embargo, which the
model never trained on and which did not pick its checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from hftraining import atomic
from hftraining.evaluation import Simulation


def _clean(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (np.floating, np.integer)):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[key] = value
    return out


def returns_csv(sim: Simulation) -> str:
    frame = sim.frame[["date", "position", "asset_return", "net_return"]].copy()
    frame["date"] = frame["date"].astype("datetime64[ns]").dt.strftime("%Y-%m-%d")
    return frame.to_csv(index=False, float_format="%.10g")


def write_test_report(report_dir: Path, model: Simulation, baselines: dict[str, Simulation], info: dict,
                      prefix: str = "") -> dict:
    """Write metrics.json and test_returns.csv (prefix names per-symbol files of multi-symbol runs)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    frame = model.frame
    summary = {
        "symbol": model.symbol,
        "test_start": str(frame["date"].iloc[0])[:10],
        "test_end": str(frame["date"].iloc[-1])[:10],
        "test_bars": int(len(frame)),
        "model": _clean(model.metrics),
        "baselines": {name: _clean(sim.metrics) for name, sim in baselines.items()},
        **info,
    }
    atomic.write_json(report_dir / f"{prefix}metrics.json", summary)
    atomic.write_text(report_dir / f"{prefix}test_returns.csv", returns_csv(model))
    return summary


def format_table(rows: dict[str, dict], keys: Optional[list[str]] = None) -> str:
    """A plain-text table of metrics (rows = strategies) for the terminal."""
    keys = keys or ["total_return", "sharpe_ratio", "max_drawdown", "win_rate", "trade_count"]
    width = max(len(name) for name in rows) + 2
    cols = [max(15, len(k) + 2) for k in keys]
    lines = [" " * width + "".join(f"{k:>{w}}" for k, w in zip(keys, cols, strict=True))]
    for name, metrics in rows.items():
        cells = []
        for k, w in zip(keys, cols, strict=True):
            v = metrics.get(k)
            cells.append(f"{'n/a':>{w}}" if v is None else f"{v:>{w}.4f}" if isinstance(v, float) else f"{v:>{w}}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)

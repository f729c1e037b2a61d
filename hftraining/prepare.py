"""The data side of a run: the panel, its date splits, the scaler fitted on the training range, and the
run metadata that says which data, forecaster, splits and versions were used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from hftraining import checkpoint as ckpt
from hftraining.config import Config
from hftraining.data.panel import Panel, Scaler, Splits, build_panel, make_splits
from hftraining.data.ragged import build_ragged_panel, make_ragged_splits


@dataclass
class Prepared:
    """Data side of a run: the panel, its date splits and the scaler fitted on the training range."""

    panel: Panel
    splits: Splits
    scaler: Scaler


def panel_and_splits(symbols: list[str], config: Config, root: Path, progress: bool = True, ragged: bool = False):
    """Training data with its chronological splits.

    One symbol, or `ragged` False (a portfolio group): an aligned Panel on common dates. Several symbols
    and `ragged` (base models, studies): a RaggedPanel, each symbol on its own full history, split on
    calendar dates (hftraining.data.ragged), bad symbols handled per data.on_bad_symbol.
    """
    if len(symbols) == 1 or not ragged:
        panel = build_panel(symbols, config, root, progress=progress)
        return panel, make_splits(panel.n_time, config)
    panel = build_ragged_panel(symbols, config, root, progress=progress)
    return panel, make_ragged_splits(panel, config)


def prepare(symbols: list[str], config: Config, progress: bool = True, ragged: bool = False) -> Prepared:
    """Panel, splits and scaler; `ragged` (base models): each symbol on its own full history, else common dates."""
    config.check_costs()
    panel, splits = panel_and_splits(symbols, config, Path(config.paths.root), progress=progress, ragged=ragged)
    return Prepared(panel, splits, Scaler.fit(panel, splits.train))


def run_metadata(kind: str, run_id: str, config: Config, prepared: Prepared, **extra) -> dict:
    """metadata.json at the start of a run: which data, forecaster, splits and versions it uses (status running)."""
    panel = prepared.panel
    return {
        "run_id": run_id,
        "kind": kind,
        "symbols": panel.symbols,
        "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "data": {s: {"source": panel.data_source.get(s), "origin": panel.data_origin.get(s)} for s in panel.symbols},
        "synthetic": any(src == "synthetic" for src in panel.data_source.values()),
        "forecast": panel.forecast,
        "splits": prepared.splits.as_dict(panel),
        "skipped_symbols": panel.skipped,
        "n_features": len(panel.feature_names),
        "feature_names": panel.feature_names,
        "versions": ckpt.versions(),
        **extra,
    }



"""Untrained but non-trivial run folders for evaluation tests (ensemble, paper): no training needed.

A run saved here has every file a trained run has (config, scaler fitted on its training range,
metadata with the splits, weights); its position head gets random weights so positions vary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from conftest import TINY

from hftraining import checkpoint as ckpt
from hftraining.config import Config, load_config
from hftraining.data.synthetic import generate_bars
from hftraining.forecasting.statistical import StatisticalBackend
from hftraining.layout import Layout, claim_run_dir
from hftraining.model import build_model
from hftraining.prepare import prepare, run_metadata


def tiny_config(root: Path, symbol: str = "DEMO", data_dir: Optional[Path] = None,
                overrides: Optional[list[str]] = None) -> Config:
    """configs/tiny.yaml without forecast features; a CSV source when data_dir is given."""
    updates = {"paths.root": str(root), "data.symbols": [symbol]}
    if data_dir is not None:
        updates.update({"data.source": "csv", "data.data_dir": str(data_dir)})
    return load_config(TINY, ["data.forecast_backend=none", *(overrides or [])], updates)


def write_csv(folder: Path, symbol: str = "DEMO", bars: int = 600, seed: int = 3) -> Path:
    """A synthetic history saved as <folder>/<SYMBOL>.csv (a CSV source and a replay feed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{symbol}.csv"
    generate_bars(symbol, bars, seed).to_csv(path, index_label="date")
    return path


def make_run(config: Config, seed: int, run_name: Optional[str] = None, context: Optional[int] = None) -> Path:
    """Save a run folder for config.data.symbols[0] with seeded random weights; returns its path."""
    cfg = config.model_copy(deep=True)
    if context is not None:
        cfg.data.context_length = context
    symbol = cfg.data.symbols[0]
    prepared = prepare([symbol], cfg, progress=False)
    run_id = run_name or f"fake-{seed}-L{cfg.data.context_length}"
    run_dir = claim_run_dir(Layout.at(cfg.paths.root).finetuned_model(symbol, run_id))
    ckpt.save_run_files(run_dir, cfg, prepared.scaler, run_metadata("single", run_id, cfg, prepared))
    torch.manual_seed(seed)
    model = build_model(len(prepared.panel.feature_names), cfg.data.context_length, cfg.data.horizon, cfg.model)
    torch.nn.init.normal_(model.position_head.weight, std=0.5)
    ckpt.save_tensors(run_dir / ckpt.WEIGHTS, model.state_dict())
    return run_dir


class OtherForecaster(StatisticalBackend):
    """Stands in for Toto becoming available later (a GPU machine): different numbers under the name 'toto'."""

    name = "toto"

    def forecast_series(self, prices, first_end):
        last, mean, std = super().forecast_series(prices, first_end)
        return last, mean * 1.05, std * 3.0


def statistical_positions(root: Path, run_dir: Path, data_dir: Path):
    """(decision dates, traded positions) of a run on features built with the statistical forecaster."""
    import pandas as pd

    from hftraining.data.panel import build_panel
    from hftraining.evaluation import model_positions

    cfg = tiny_config(root, data_dir=data_dir, overrides=["data.forecast_backend=statistical"])
    panel = build_panel(["DEMO"], cfg, root, progress=False, min_bars=20)
    run = ckpt.open_run(run_dir)
    model = run.model()
    x = torch.from_numpy(run.scaler.transform(panel))
    decisions = range(model.context_length - 1, panel.n_time)
    return pd.DatetimeIndex(panel.dates[decisions.start:]), model_positions(model, x, panel, 0, decisions, run.config)

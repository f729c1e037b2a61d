"""Untrained but non-trivial run folders for evaluation tests (ensemble, paper): no training needed.

A run saved here has every file a trained run has (config, scaler fitted on its training range,
metadata with the splits, weights); its position head gets random weights so positions vary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from hftraining import checkpoint as ckpt
from hftraining.config import Config, load_config
from hftraining.data.synthetic import generate_bars
from hftraining.layout import Layout, claim_run_dir
from hftraining.model import build_model
from hftraining.prepare import prepare, run_metadata

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


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

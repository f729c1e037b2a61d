"""Out-of-sample evaluation: the model's position at every decision bar, simulated by the ProfitTracker.

The position at bar t comes from the window ending at t (the same window shape the model trained
on), and the tracker charges costs and marks to market bar by bar on bars the model never trained
on. Backtests, fine-tunes, ensembles and paper trading all go through these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
import torch

from hftraining.config import TrackerConfig
from hftraining.data.panel import Panel
from hftraining.metrics import COUNTS
from hftraining.tracker import ProfitTracker

# Windows per model call. Every call is padded to exactly this many (repeating the last window): BLAS
# kernels (MKL on AVX-512, cuBLAS) round differently for different batch shapes, and a bar's position
# must not depend on how many bars are evaluated with it (paper trading one bar at a time must give the
# backtest's positions bit for bit). 64 windows per call is also the fastest size on CPU.
EVAL_CHUNK = 64


@torch.no_grad()
def predict_positions(model: torch.nn.Module, x: torch.Tensor, symbol: int, decisions: range,
                      chunk: int = EVAL_CHUNK) -> np.ndarray:
    """Position at each decision bar t of `decisions` from the window x[t-L+1..t, symbol], in fixed-shape calls."""
    was_training = model.training
    model.eval()
    context = model.context_length
    if decisions.start < context - 1:
        raise ValueError(f"decision bar {decisions.start} has fewer than {context} bars of history")
    offsets = torch.arange(context - 1, -1, -1, device=x.device)
    ends = torch.arange(decisions.start, decisions.stop, device=x.device)
    out = []
    for i in range(0, len(ends), chunk):
        part = ends[i:i + chunk]
        padded = torch.cat([part, part[-1:].expand(chunk - len(part))])   # always [chunk] windows
        out.append(model(x[padded[:, None] - offsets, symbol]).positions[:len(part), -1].float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def model_positions(model: torch.nn.Module, x: torch.Tensor, panel: Panel, symbol: int, decisions: range,
                    config) -> np.ndarray:
    """Traded positions at each decision bar: the model's raw output sized by the run's config (hftraining.sizing)."""
    from hftraining.sizing import traded_positions

    return traded_positions(predict_positions(model, x, symbol, decisions), panel, symbol, decisions, config)


def validation_sharpe(model: torch.nn.Module, job, x: torch.Tensor) -> float:
    """Net Sharpe of the model's traded positions on a one-symbol job's validation range (the tracker's, with
    costs): what a fine-tune against its base and a model against the always-long prior are compared by.

    `x` is the job's scaled panel on the model's device.
    """
    positions = model_positions(model, x, job.panel, 0, job.splits.val, job.config)
    return float(simulate(job.panel, 0, job.splits.val, positions, job.config.tracker,
                          job.config.data.periods_per_year).metrics["sharpe_ratio"])


@dataclass
class Simulation:
    """Tracker output for one symbol over one decision range, with dates attached."""

    symbol: str
    decisions: range
    positions: np.ndarray          # model targets at each decision bar
    frame: pd.DataFrame            # date, position, asset_return, net_return, equity
    metrics: dict
    trades: object


def simulate(panel: Panel, symbol: int, decisions: range, positions: np.ndarray,
             tracker: TrackerConfig, periods_per_year: int = 252) -> Simulation:
    """Run the ProfitTracker over decision bars [start, stop) and the bar after the last one."""
    if len(positions) != len(decisions):
        raise ValueError(f"{len(positions)} positions for {len(decisions)} decision bars")
    bars = slice(decisions.start, decisions.stop + 1)             # one more close to mark the last position
    ohlc = panel.ohlc[bars, symbol]
    targets = np.append(positions, 0.0)                            # the extra bar's position earns nothing
    sim = ProfitTracker.from_config(tracker, periods_per_year=periods_per_year).run(
        targets, close=ohlc[:, 3], high=ohlc[:, 1], low=ohlc[:, 2], open=ohlc[:, 0], dates=panel.dates[bars])
    return Simulation(symbol=panel.symbols[symbol], decisions=decisions, positions=positions,
                      frame=sim.to_frame(), metrics=sim.metrics, trades=sim.trades)


def buy_and_hold(panel: Panel, symbol: int, decisions: range, tracker: TrackerConfig,
                 periods_per_year: int = 252) -> Simulation:
    """The baseline every report shows: fully long (unlevered) from the first decision bar, same costs."""
    return simulate(panel, symbol, decisions, np.full(len(decisions), min(1.0, tracker.max_position_size)),
                    tracker, periods_per_year)


def average_metrics(per_symbol: dict[str, dict], keys: Optional[list[str]] = None) -> dict:
    """Mean of each numeric metric over the symbols where it is defined; None where it is defined for none
    (a win rate with no closed trade is undefined, not 0, so it must not drag the mean down). A count
    (metrics.COUNTS: trades, bars) stays an integer: its mean is rounded."""
    keys = keys or list(next(iter(per_symbol.values())).keys())
    out = {}
    for k in keys:
        values = [m.get(k) for m in per_symbol.values()]
        if all(v is None or isinstance(v, (int, float)) for v in values):
            defined = [v for v in values if v is not None]
            mean = float(np.mean(defined)) if defined else None
            out[k] = int(round(mean)) if mean is not None and k in COUNTS else mean
    return out

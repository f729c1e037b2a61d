"""A group's training data: the aligned panel, the group-pooled scaler, and episodes of rebalance bars.

A rebalance at bar t sees the window x[t-L+1..t] of every asset and holds until the next one; an
episode is `portfolio.episode_rebalances` consecutive rebalances drawn at random from the training range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hftraining.config import Config
from hftraining.data.panel import Scaler, Splits
from hftraining.errors import UserError
from hftraining.portfolio_policy import prior_logits, windows
from hftraining.prepare import Prepared
from hftraining.sizing import VOL_SPAN


def rebalance_every(config: Config) -> int:
    """Bars between rebalances: portfolio.rebalance_every, else data.horizon."""
    return config.portfolio.rebalance_every or config.data.horizon


class PairStockDataset:
    """A group's scaled features and adjusted closes on the device; gathers windows and period growth by bar.

    A rebalance at bar t sees the window x[t-L+1..t] of every asset and holds until the next one,
    earning close[min(t+k, stop)] / close[t] per asset, where `stop` ends the split (never beyond).
    """

    def __init__(self, prepared: Prepared, every: int, episode_rebalances: int, device: torch.device,
                 prior: str = "equal", vol_span: int = VOL_SPAN):
        panel = prepared.panel
        self.panel, self.scaler = panel, prepared.scaler
        self.symbols = list(panel.symbols)
        self.feature_names = list(panel.feature_names)
        self.splits: Splits = prepared.splits
        self.every = every
        self.episode_rebalances = episode_rebalances
        self.n_assets = len(panel.symbols)
        self.x = torch.from_numpy(prepared.scaler.transform(panel)).to(device)     # [T, A, F]
        self.close = torch.from_numpy(panel.ohlc[..., 3].copy()).to(device)        # [T, A] float64
        self.returns = np.nan_to_num(panel.returns, nan=0.0)                       # [T, A] for the simulator
        self.prior = torch.from_numpy(prior_logits(self.returns, prior, vol_span)).float().to(device)  # [T, A]
        self.origins = dict(panel.data_origin)
        self.device = device
        train = self.splits.train
        self.first_start = train.start + every                     # the step-0 rebalance needs a full window
        self.last_start = train.stop - episode_rebalances * every  # the episode's last label is close train.stop
        if self.last_start < self.first_start:
            raise UserError(
                f"{', '.join(panel.symbols)}: the training range has {len(train)} bars, fewer than an episode of "
                f"(portfolio.episode_rebalances + 1) * rebalance_every = {(episode_rebalances + 1) * every}; "
                "load more history or lower portfolio.episode_rebalances")

    def windows(self, bars: torch.Tensor, context: int) -> torch.Tensor:
        """Windows [N, L, A, F] ending at each bar of bars [N]."""
        return windows(self.x, bars, context)

    def priors(self, bars: torch.Tensor) -> torch.Tensor:
        """The prior's log-weights [N, A] at each bar of bars [N] (known at that bar's close)."""
        return self.prior[bars]

    def growth(self, bars: torch.Tensor, stop: int) -> torch.Tensor:
        """Gross growth [N, A] of each asset from close t to close min(t + k, stop)."""
        end = torch.clamp(bars + self.every, max=stop)
        return (self.close[end] / self.close[bars]).float()

    def sample_episodes(self, batch: int, generator: torch.Generator, rank: int = 0,
                        world_size: int = 1) -> torch.Tensor:
        """Rebalance bars [B, P] of random training episodes; column 0 only sets the drifted starting book.

        Under DDP every rank draws the same global batch (batch * world_size episodes) and keeps its slice.
        """
        starts = torch.randint(self.first_start, self.last_start + 1, (batch * world_size,), generator=generator)
        starts = starts[rank * batch:(rank + 1) * batch]
        steps = torch.arange(-1, self.episode_rebalances, dtype=torch.int64) * self.every
        return (starts[:, None] + steps).to(self.device)

    def rebalance_bars(self, decisions: range) -> torch.Tensor:
        return torch.arange(decisions.start, decisions.stop, self.every, device=self.device)


def pooled_scaler(panel, train: range, context: Optional[int] = None) -> Scaler:
    """One mean/std per feature over the group's training rows, shared by every asset.

    Per-symbol scaling (what single-stock runs use) would erase exactly what an allocation needs to
    see: that one asset is calmer or trends more than another. Fitted on training rows only: the
    rows up to train.stop, starting where the first training window starts when `context` is given
    (a rolling walk-forward fold), else at the first bar. The rows are copied to one C-ordered
    float64 block, so the same rows give the same bits wherever the panel sits in memory.
    """
    lo = max(0, train.start - context + 1) if context is not None else 0
    rows = np.ascontiguousarray(panel.features[lo:train.stop], dtype=np.float64).reshape(-1, panel.features.shape[-1])
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    n = len(panel.symbols)
    return Scaler(list(panel.feature_names), list(panel.symbols), np.tile(mean, (n, 1)), np.tile(std, (n, 1)))


def prepare_aligned(symbols: list[str], config: Config, progress: bool = True) -> Prepared:
    """The group on its common dates (an allocation needs every asset on every bar) with make_splits' splits.

    `train_with_profit.prepare` gives several symbols a ragged panel, each on its own history; a portfolio
    cannot use that, so it builds the aligned panel itself. The scaler here is replaced by pooled_scaler.
    """
    from hftraining.data.panel import build_panel, make_splits

    config.check_costs()
    panel = build_panel(symbols, config, Path(config.paths.root), progress=progress)
    splits = make_splits(panel.n_time, config)
    return Prepared(panel, splits, Scaler.fit(panel, splits.train))

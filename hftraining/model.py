"""A causal transformer that reads a window of bars and emits a position in [-1, 1] at every step.

Each output step t attends to steps <= t only, so one window trains on L consecutive decisions and
the turnover between them is visible to the loss. An optional head predicts the next `horizon`
returns as an auxiliary target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hftraining.config import ModelConfig


@dataclass
class ModelOutput:
    positions: torch.Tensor            # [batch, time] in [-max_position, max_position] * output_scale
    aux: Optional[torch.Tensor]        # [batch, time, horizon] predicted next returns, or None
    hidden: torch.Tensor               # [batch, time, hidden] last-layer states (the portfolio head reuses them)
    member_positions: Optional[torch.Tensor] = None   # [members, batch, time] of a MemberAverage, each member's own


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, hidden = x.shape
        q, k, v = self.qkv(x).split(hidden, dim=2)
        q, k, v = (z.view(batch, time, self.heads, hidden // self.heads).transpose(1, 2) for z in (q, k, v))
        # No dropout on the attention weights: with it, CPU SDPA leaves its fused kernel and a step
        # costs about 3x more; dropout stays on the residual and feed-forward paths.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(batch, time, hidden)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, ff_multiplier: int, dropout: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads, dropout)
        self.ln_2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, ff_multiplier * hidden), nn.GELU(),
            nn.Linear(ff_multiplier * hidden, hidden), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class AllocationTransformer(nn.Module):
    """Features [batch, time, n_features] -> ModelOutput with one position per step."""

    def __init__(self, n_features: int, context_length: int, horizon: int, config: ModelConfig):
        super().__init__()
        self.n_features = n_features
        self.context_length = context_length
        self.max_position = config.max_position
        hidden = config.hidden_size
        self.embed = nn.Linear(n_features, hidden)
        self.pos_embed = nn.Parameter(torch.zeros(context_length, hidden))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(hidden, config.num_heads, config.ff_multiplier, config.dropout) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(hidden)
        self.position_head = nn.Linear(hidden, 1)
        self.aux_head = nn.Linear(hidden, horizon) if config.aux_weight > 0 else None
        # One constant set after training so the strategy runs at its volatility target on the
        # validation range (trainer.calibrate_output_scale); saved with the weights, 1 until then.
        self.register_buffer("output_scale", torch.ones(()))
        # True when training did not beat the always-long prior on validation (hftraining.prior): the
        # weights then hold raw +1 on every bar; saved with them, so every backtest and paper trade agrees.
        self.register_buffer("holds_prior", torch.zeros((), dtype=torch.bool))
        self.apply(self._init_weights)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.zeros_(self.position_head.weight)   # start flat: no position before learning anything
        nn.init.zeros_(self.position_head.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        time = x.shape[1]
        if time > self.context_length:
            raise ValueError(f"window of {time} bars is longer than the model's context {self.context_length}")
        h = self.drop(self.embed(x) + self.pos_embed[:time])
        for block in self.blocks:
            h = block(h)
        return self.ln_f(h)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.encode(x)
        positions = torch.tanh(self.position_head(h).squeeze(-1)) * (self.max_position * self.output_scale)
        aux = self.aux_head(h) if self.aux_head is not None else None
        return ModelOutput(positions=prior_or(self.holds_prior, positions), aux=aux, hidden=h)


class MemberAverage(nn.Module):
    """`model.members` AllocationTransformers side by side; the position is the mean of theirs.

    Why: on daily bars the signal is weak and one network fits a good deal of noise; copies that
    start from different weights fit different noise, so their mean keeps more of the signal (a seed
    ensemble inside one run). Each member trains on its own loss over the same batches
    (`member_positions`), so they stay independent; the calibrated `output_scale` applies to the mean.
    """

    def __init__(self, n_features: int, context_length: int, horizon: int, config: ModelConfig):
        super().__init__()
        self.n_features = n_features
        self.context_length = context_length
        self.max_position = config.max_position
        self.members = nn.ModuleList(
            AllocationTransformer(n_features, context_length, horizon, config) for _ in range(config.members))
        self.register_buffer("output_scale", torch.ones(()))
        self.register_buffer("holds_prior", torch.zeros((), dtype=torch.bool))     # as AllocationTransformer's

    def forward(self, x: torch.Tensor) -> ModelOutput:
        outs = [member(x) for member in self.members]
        each = torch.stack([out.positions for out in outs])                     # [members, batch, time]
        aux = torch.stack([out.aux for out in outs]).mean(0) if outs[0].aux is not None else None
        return ModelOutput(positions=prior_or(self.holds_prior, each.mean(0) * self.output_scale), aux=aux,
                           hidden=outs[0].hidden, member_positions=each)


def prior_or(holds_prior: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Raw +1 everywhere when the model holds the always-long prior, else its own positions (no host sync)."""
    return torch.where(holds_prior, torch.ones_like(positions), positions)


def build_model(n_features: int, context_length: int, horizon: int,
                config: ModelConfig) -> AllocationTransformer | MemberAverage:
    """One AllocationTransformer, or a MemberAverage of `config.members` of them."""
    if config.members > 1:
        return MemberAverage(n_features, context_length, horizon, config)
    return AllocationTransformer(n_features, context_length, horizon, config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

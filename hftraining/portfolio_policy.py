"""The allocation policy: windows of every asset -> long-only weights on the simplex, tilted from a prior.

Shapes are explicit: windows [N, L, A, F] (+ prior log-weights [N, A]) -> weights [N, M] with
M = A assets (+1 cash, last). `build_policy` is how a run, its backtest and its resume build it.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from hftraining.config import Config, ModelConfig
from hftraining.model import AllocationTransformer
from hftraining.sizing import VOL_SPAN, ex_ante_volatility

CASH = "CASH"
CASH_PRIOR = 0.02   # share of cash in the untrained policy
PRIORS = ("equal", "inverse_vol")


class PortfolioPolicy(nn.Module):
    """Windows of every asset [N, L, A, F] (+ prior log-weights [N, A]) -> long-only weights [N, M] summing to 1.

    Each asset's window goes through the shared causal encoder (the same AllocationTransformer a
    base run trains, so its weights can be copied in); the last step's state of each asset is read
    next to the mean over assets, giving one logit per asset plus a learned per-asset bias, and a cash
    logit from the pooled state. The learned logits are tilts added to the prior's log-weights
    (`prior`: "equal" = 1/N, "inverse_vol" = risk parity from an ex-ante volatility, see prior_logits).
    The untrained policy is the prior's book with CASH_PRIOR in cash (asset heads at zero, the cash
    bias set to match), so training learns tilts away from it; `max_tilt` bounds each logit's tilt (and
    the cash logit's move) to +-max_tilt, so no weight moves beyond exp(+-2 max_tilt) times the prior's.
    """

    def __init__(self, n_features: int, n_assets: int, context_length: int, horizon: int,
                 model_cfg: ModelConfig, include_cash: bool, window: Optional[int] = None,
                 prior: str = "equal", vol_span: int = VOL_SPAN, max_tilt: Optional[float] = None):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"unknown portfolio prior {prior!r}; choose one of {', '.join(PRIORS)}")
        self.n_assets = n_assets
        self.include_cash = include_cash
        self.prior = prior
        self.vol_span = vol_span
        self.max_tilt = max_tilt
        self.cash_logit = math.log(n_assets * CASH_PRIOR / (1.0 - CASH_PRIOR))
        self.window = min(window or context_length, context_length)
        self.encoder = AllocationTransformer(n_features, context_length, horizon, model_cfg)  # one encoder, any members
        hidden = model_cfg.hidden_size
        self.asset_head = nn.Linear(2 * hidden, 1)
        self.asset_bias = nn.Parameter(torch.zeros(n_assets))
        self.cash_head = nn.Linear(hidden, 1) if include_cash else None
        for head in (self.asset_head, self.cash_head):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        if self.cash_head is not None:   # softmax weight of cash = CASH_PRIOR when every logit else is 0
            nn.init.constant_(self.cash_head.bias, self.cash_logit)

    def bounded(self, tilt: torch.Tensor) -> torch.Tensor:
        """max_tilt * tanh(tilt / max_tilt): the identity near 0, never beyond +-max_tilt (None = unbounded)."""
        return tilt if self.max_tilt is None else self.max_tilt * torch.tanh(tilt / self.max_tilt)

    @property
    def context_length(self) -> int:
        """Bars of each asset's window: the last `window` bars of the encoder's context."""
        return self.window

    def forward(self, x: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Weights [N, M]; `prior` [N, A] are the prior's log-weights at each row's bar (None = equal)."""
        n, length, assets, features = x.shape
        if assets != self.n_assets:
            raise ValueError(f"windows hold {assets} assets, the policy was built for {self.n_assets}")
        flat = x.permute(0, 2, 1, 3).reshape(n * assets, length, features)        # [N*A, L, F]
        h = self.encoder.encode(flat)[:, -1].reshape(n, assets, -1)                # [N, A, H]
        pooled = h.mean(dim=1)                                                       # [N, H]
        paired = torch.cat([h, pooled[:, None, :].expand_as(h)], dim=-1)            # [N, A, 2H]
        logits = self.bounded(self.asset_head(paired).squeeze(-1) + self.asset_bias)  # [N, A] tilts
        if prior is not None:
            logits = logits + prior.to(logits.dtype)
        if self.cash_head is not None:
            cash = self.cash_logit + self.bounded(self.cash_head(pooled) - self.cash_logit)
            logits = torch.cat([logits, cash], dim=-1)                               # [N, A+1]
        return torch.softmax(logits.float(), dim=-1)


def build_policy(n_features: int, n_assets: int, config: Config) -> PortfolioPolicy:
    """The policy a config describes (training and `hftrain backtest` build it the same way)."""
    return PortfolioPolicy(n_features, n_assets, config.data.context_length, config.data.horizon, config.model,
                           config.portfolio.include_cash, config.portfolio.context_length, config.portfolio.prior,
                           config.profit.vol_span, config.portfolio.max_tilt)


def prior_logits(returns: np.ndarray, prior: str, vol_span: int = VOL_SPAN) -> np.ndarray:
    """The prior's log-weights [T, A] at every decision bar: log(A * pi_t), so 1/N gives zeros.

    "equal": pi = 1/N. "inverse_vol": pi_i proportional to 1 / sigma_i, the ex-ante EWMA volatility of
    asset i known at the close of t (hftraining.sizing.ex_ante_volatility: returns closed at bars <= t-1),
    i.e. naive risk parity; a bar where any asset has no estimate yet falls back to 1/N.
    `returns` [T, A] are the panel's next-bar returns (row t = close t -> t+1).
    """
    returns = np.asarray(returns, dtype=np.float64)
    n_time, assets = returns.shape
    if prior == "equal":
        return np.zeros((n_time, assets))
    if prior != "inverse_vol":
        raise ValueError(f"unknown portfolio prior {prior!r}; choose one of {', '.join(PRIORS)}")
    vol = ex_ante_volatility(returns, 252, vol_span)
    known = np.all(np.isfinite(vol) & (vol > 0), axis=1)
    inverse = np.where(known[:, None], 1.0 / np.where(known[:, None], vol, 1.0), 1.0)
    return np.log(assets * inverse / inverse.sum(axis=1, keepdims=True))


def windows(x: torch.Tensor, bars: torch.Tensor, context: int) -> torch.Tensor:
    """Windows [N, L, A, F] of scaled features x [T, A, F] ending at each bar of bars [N] (bars <= t only)."""
    offsets = torch.arange(context - 1, -1, -1, device=x.device)
    return x[bars[:, None] - offsets]


@torch.no_grad()
def predict_weights(policy: PortfolioPolicy, x: torch.Tensor, bars: torch.Tensor, chunk: int = 256,
                    prior: Optional[torch.Tensor] = None) -> np.ndarray:
    """Target weights [R, M] at each rebalance bar, each from its own window of x (eval mode, no dropout).

    Every chunk is padded to `chunk` rows (repeating its last bar), so the kernels always see the same
    shapes and a bar's weights do not depend on how many bars follow it (a backtest on data ending at D
    reproduces the weights before D bit for bit). `prior` [T, A] are the prior's log-weights per bar.
    """
    was_training = policy.training
    policy.eval()
    out = []
    for i in range(0, len(bars), chunk):
        part = bars[i:i + chunk]
        padded = torch.cat([part, part[-1:].expand(chunk - len(part))]) if len(part) < chunk else part
        bias = prior[padded] if prior is not None else None
        out.append(policy(windows(x, padded, policy.context_length), bias)[:len(part)].cpu())
    policy.train(was_training)
    return torch.cat(out).double().numpy()

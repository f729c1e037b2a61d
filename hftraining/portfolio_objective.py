"""The portfolio's training objective: period net returns through drift and rebalance costs, and their loss.

episodes [B, P] rebalance bars -> weights [B, P, M] and period growth [B, P, A] -> net [B, P-1] -> loss.
"""

from __future__ import annotations

import torch

from hftraining.config import Config
from hftraining.objective import pooled_sharpe
from hftraining.portfolio_data import rebalance_every

OBJECTIVES = ("sharpe", "mean_variance", "episode_sharpe")
VAR_FLOOR = 1e-10   # keeps d sqrt(var) finite when an episode holds no risk (per-episode Sharpe form)


def horizon_net_returns(weights: torch.Tensor, growth: torch.Tensor, cost: float) -> torch.Tensor:
    """Net return [B, P-1] of each rebalance period after the first, with the drift between rebalances.

    weights [B, P, M] (cash last when M = A + 1), growth [B, P, A] of each asset over each period.
    Period p earns sum_i w_p,i (g_p,i - 1) and pays cost * sum_i |w_p,i - drifted_{p-1},i| on the risky
    assets, where drifted_{p-1} = w_{p-1} * g_{p-1} / sum(w_{p-1} * g_{p-1}) (cash grows by 1).
    """
    if weights.dim() != 3 or growth.dim() != 3 or weights.shape[:2] != growth.shape[:2]:
        raise ValueError(f"weights {tuple(weights.shape)} must be [B, P, M] and growth {tuple(growth.shape)} [B, P, A]")
    assets = growth.shape[-1]
    if weights.shape[-1] > assets:
        growth = torch.cat([growth, torch.ones_like(growth[..., :1])], dim=-1)     # cash grows by 1
    gross = (weights * (growth - 1.0)).sum(dim=-1)                                 # [B, P]
    value = weights * growth
    drifted = value / value.sum(dim=-1, keepdim=True)                              # [B, P, M]
    turnover = (weights[:, 1:, :assets] - drifted[:, :-1, :assets]).abs().sum(dim=-1)   # [B, P-1]
    return gross[:, 1:] - cost * turnover


def portfolio_loss(net: torch.Tensor, objective: str, risk_penalty: float,
                   periods_per_year: float = 252 / 5) -> torch.Tensor:
    """The training loss of period net returns [B, P-1].

    "sharpe" (Deep Momentum Networks, as profit.objective): minus the annualised Sharpe of every period
    of every episode pooled together, population std (`periods_per_year` = rebalance periods a year).
    "mean_variance": mean over episodes of -(mean - risk_penalty * var) of its periods.
    "episode_sharpe": mean over episodes of -mean/std of its own few periods (noisy; kept for comparison).
    """
    if objective == "sharpe":
        return -pooled_sharpe(net, periods_per_year)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown portfolio objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    mean = net.mean(dim=1)
    var = net.var(dim=1, unbiased=False) if net.shape[1] > 1 else torch.zeros_like(mean)
    if objective == "episode_sharpe":
        return (-mean / torch.sqrt(var + VAR_FLOOR)).mean()
    return (-mean + risk_penalty * var).mean()


def loss_from_config(net: torch.Tensor, config: Config) -> torch.Tensor:
    """portfolio_loss with the config's objective, risk penalty and rebalance periods per year."""
    pcfg = config.portfolio
    periods = config.data.periods_per_year / rebalance_every(config)
    return portfolio_loss(net, pcfg.objective, pcfg.risk_penalty, periods)

"""The differentiable trading objective: net PnL after turnover costs, a Sharpe-like term, risk.

Shapes are explicit, [batch, time], and every operation is elementwise along them, so each
window's gradient depends on its own returns only (a [B] vs [B, 1] broadcast once turned this
into a [B, B] matrix in an earlier system; tests guard it). Each term is computed per window and
then averaged, so the loss of a batch is the mean of its windows' losses: gradient accumulation
and data-parallel ranks then give exactly the gradient of one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

VAR_FLOOR = 1e-10   # keeps d sqrt(var) finite when a window holds no position


@dataclass
class ObjectiveParts:
    loss: torch.Tensor
    mean_net: torch.Tensor
    sharpe: torch.Tensor
    turnover: torch.Tensor


def net_returns(positions: torch.Tensor, returns: torch.Tensor, cost: float) -> torch.Tensor:
    """net[:, t] = p_t * r_{t+1} - cost * |p_t - p_{t-1}| for t = 1..L-1 of each window.

    `returns[:, t]` is the next-bar return earned by the position decided at step t. Step 0 has no
    previous position inside the window, so it only serves as p_{t-1} for step 1.
    """
    if positions.shape != returns.shape or positions.dim() != 2:
        raise ValueError(f"positions {tuple(positions.shape)} and returns {tuple(returns.shape)} "
                         "must both be [batch, time]")
    trade = (positions[:, 1:] - positions[:, :-1]).abs()
    return positions[:, 1:] * returns[:, 1:] - cost * trade


def profit_objective(positions: torch.Tensor, returns: torch.Tensor, cost: float,
                     sharpe_weight: float, risk_penalty: float = 0.0) -> ObjectiveParts:
    """Per window: -mean(net) - sharpe_weight * mean(net)/std(net) + risk_penalty * var(net); averaged over windows.

    The Sharpe-like term is per bar (not annualised) so the weights do not depend on the bar size.
    """
    net = net_returns(positions, returns, cost)                    # [batch, time-1]
    mean = net.mean(dim=1)                                         # [batch]
    var = net.var(dim=1, unbiased=False) if net.shape[1] > 1 else torch.zeros_like(mean)
    sharpe = mean / torch.sqrt(var + VAR_FLOOR)
    per_window = -mean - sharpe_weight * sharpe + risk_penalty * var
    turnover = (positions[:, 1:] - positions[:, :-1]).abs().mean()
    return ObjectiveParts(loss=per_window.mean(), mean_net=mean.mean().detach(), sharpe=sharpe.mean().detach(),
                          turnover=turnover.detach())


def aux_loss(predicted: torch.Tensor, future_returns: torch.Tensor) -> torch.Tensor:
    """MSE between the predicted and the realised next-`horizon` returns, both in percent."""
    return torch.nn.functional.mse_loss(predicted, future_returns * 100.0)

"""The differentiable trading objective: net returns of traded positions after turnover costs.

Shapes are explicit, [batch, time], and every operation is elementwise along them, so no window's
returns leak into another window's terms by broadcasting (a [B] vs [B, 1] broadcast once turned
this into a [B, B] matrix in an earlier system; tests guard it).

Objectives (`profit.objective`), all on the training return R = net - extra turnover penalty:
* `sharpe` (Deep Momentum Networks): minus the annualised Sharpe of R pooled over every window and
  step of the batch, population std: -(mean(R) / sqrt(mean(R^2) - mean(R)^2 + eps)) * sqrt(P).
  One ratio over thousands of decisions is a far less noisy target than one ratio per window, and
  it has no variance floor that rewards shrinking positions. Under torchrun the sums are pooled over
  every rank's slice, so N ranks see the Sharpe of the global batch.
* `mean`: minus the mean of R (a mean of per-window terms).
* `mean_variance`: minus the mean of R plus `risk_penalty` times its pooled variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

SHARPE_EPS = 1e-9   # keeps the Sharpe's denominator positive when the batch holds no position

OBJECTIVES = ("sharpe", "mean", "mean_variance")


@dataclass
class ObjectiveParts:
    loss: torch.Tensor
    mean_net: torch.Tensor       # mean net return per step (detached)
    sharpe: torch.Tensor         # annualised pooled Sharpe of the net returns (detached)
    turnover: torch.Tensor       # mean |change of traded position| per step (detached)


def _check(positions: torch.Tensor, returns: torch.Tensor) -> None:
    if positions.shape != returns.shape or positions.dim() != 2:
        raise ValueError(f"positions {tuple(positions.shape)} and returns {tuple(returns.shape)} "
                         "must both be [batch, time]")


def turnover(positions: torch.Tensor) -> torch.Tensor:
    """|p_t - p_{t-1}| for t = 1..L-1 of each window, [batch, time-1]."""
    return (positions[:, 1:] - positions[:, :-1]).abs()


def net_returns(positions: torch.Tensor, returns: torch.Tensor, cost: float) -> torch.Tensor:
    """net[:, t] = p_t * r_{t+1} - cost * |p_t - p_{t-1}| for t = 1..L-1 of each window.

    `positions` are traded positions (after risk sizing). `returns[:, t]` is the next-bar return
    earned by the position decided at step t. Step 0 has no previous position inside the window,
    so it only serves as p_{t-1} for step 1.
    """
    _check(positions, returns)
    return positions[:, 1:] * returns[:, 1:] - cost * turnover(positions)


def _global_sums(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(sum, sum of squares, count) over this rank's batch, summed over ranks with gradients under DDP.

    The backward of an all-reduce sum is a sum of the ranks' gradients, and DDP then averages over
    ranks, so each rank's weights get exactly the gradient of the global-batch statistic.
    """
    s1, s2, n = values.sum(), (values * values).sum(), values.numel()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 and torch.is_grad_enabled():
        from torch.distributed.nn.functional import all_reduce

        s1, s2 = all_reduce(s1), all_reduce(s2)
        n = n * dist.get_world_size()
    return s1, s2, n


def pooled_sharpe(values: torch.Tensor, periods_per_year: int = 252) -> torch.Tensor:
    """Annualised Sharpe of every element of `values` pooled together, population std."""
    s1, s2, n = _global_sums(values)
    mean = s1 / n
    var = (s2 / n - mean * mean).clamp(min=0.0)
    return mean / torch.sqrt(var + SHARPE_EPS) * math.sqrt(periods_per_year)


def profit_objective(positions: torch.Tensor, returns: torch.Tensor, cost: float, objective: str = "sharpe",
                     risk_penalty: float = 0.0, turnover_penalty: float = 0.0,
                     periods_per_year: int = 252) -> ObjectiveParts:
    """The training loss of traded positions [batch, time] against next-bar returns [batch, time].

    `turnover_penalty` is an extra cost per unit of turnover charged in training only (a regulariser
    against trading noise); `cost` is the real cost the tracker charges too.
    """
    net = net_returns(positions, returns, cost)                          # [batch, time-1]
    traded = turnover(positions)
    train_return = net - turnover_penalty * traded if turnover_penalty else net
    if objective == "sharpe":
        loss = -pooled_sharpe(train_return, periods_per_year)
    elif objective == "mean":
        loss = -train_return.mean()
    elif objective == "mean_variance":
        s1, s2, n = _global_sums(train_return)
        mean = s1 / n
        loss = -mean + risk_penalty * (s2 / n - mean * mean)
    else:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    with torch.no_grad():
        sharpe = pooled_sharpe(net.detach(), periods_per_year)
    return ObjectiveParts(loss=loss, mean_net=net.mean().detach(), sharpe=sharpe, turnover=traded.mean().detach())


def objective_from_config(positions: torch.Tensor, returns: torch.Tensor, config) -> ObjectiveParts:
    """profit_objective with every setting read from a Config (one place for the trainer and evaluation)."""
    p = config.profit
    return profit_objective(positions, returns, p.transaction_cost_bps / 1e4, p.objective, p.risk_penalty,
                            p.turnover_penalty_bps / 1e4, config.data.periods_per_year)


def aux_loss(predicted: torch.Tensor, future_returns: torch.Tensor) -> torch.Tensor:
    """MSE between the predicted and the realised next-`horizon` returns, both in percent."""
    return torch.nn.functional.mse_loss(predicted, future_returns * 100.0)

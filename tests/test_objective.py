"""The differentiable objective against hand computations, per-window gradients, and the tracker."""

import math

import numpy as np
import pytest
import torch

from hftraining.objective import net_returns, pooled_sharpe, profit_objective


def test_net_returns_hand_example():
    p = torch.tensor([[0.0, 1.0, 1.0, -0.5]])
    r = torch.tensor([[0.5, 0.01, -0.02, 0.04]])      # r[t] is earned by the position decided at t
    cost = 0.001
    expected = [1.0 * 0.01 - cost * 1.0, 1.0 * -0.02 - 0.0, -0.5 * 0.04 - cost * 1.5]
    torch.testing.assert_close(net_returns(p, r, cost), torch.tensor([expected]))


def _hand_net():
    p = torch.tensor([[0.0, 1.0, 1.0, -0.5], [0.0, 0.5, 0.5, 0.5]], dtype=torch.float64)
    r = torch.tensor([[0.0, 0.01, -0.02, 0.04], [0.0, 0.03, 0.01, -0.01]], dtype=torch.float64)
    net = [0.01 - 0.001, -0.02, -0.02 - 0.0015, 0.015 - 0.0005, 0.005, -0.005]
    return p, r, net


def test_pooled_sharpe_objective_hand_example():
    """DMN loss: one Sharpe over every step of every window, population std, annualised."""
    p, r, net = _hand_net()
    mean = sum(net) / len(net)
    std = math.sqrt(sum(x * x for x in net) / len(net) - mean * mean + 1e-9)
    parts = profit_objective(p, r, cost=0.001, objective="sharpe", periods_per_year=252)
    assert parts.loss.item() == pytest.approx(-mean / std * math.sqrt(252), rel=1e-9)
    assert parts.sharpe.item() == pytest.approx(mean / std * math.sqrt(252), rel=1e-9)


def test_mean_and_mean_variance_objectives_hand_example():
    p, r, net = _hand_net()
    mean = sum(net) / len(net)
    var = sum((x - mean) ** 2 for x in net) / len(net)
    assert profit_objective(p, r, 0.001, "mean").loss.item() == pytest.approx(-mean, rel=1e-9)
    mv = profit_objective(p, r, 0.001, "mean_variance", risk_penalty=2.0).loss.item()
    assert mv == pytest.approx(-mean + 2.0 * var, rel=1e-9)


def test_turnover_penalty_is_an_extra_training_cost():
    p, r, net = _hand_net()
    turnover = [1.0, 0.0, 1.5, 0.5, 0.0, 0.0]
    penalised = [n - 0.002 * t for n, t in zip(net, turnover, strict=True)]
    got = profit_objective(p, r, 0.001, "mean", turnover_penalty=0.002)
    assert got.loss.item() == pytest.approx(-sum(penalised) / 6, rel=1e-9)
    assert got.mean_net.item() == pytest.approx(sum(net) / 6, rel=1e-9)     # reported net is untouched


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="unknown objective"):
        profit_objective(torch.zeros(1, 3), torch.zeros(1, 3), 0.0, "sortino")


def test_shapes_must_match_exactly():
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        net_returns(torch.zeros(4, 5), torch.zeros(4, 1), 0.0)
    with pytest.raises(ValueError):
        net_returns(torch.zeros(4), torch.zeros(4), 0.0)


def test_each_window_gradient_depends_on_its_own_returns_only():
    """The broadcasting trap, for the per-window (mean) objective: window i's gradient must not change
    when window j's returns change."""
    torch.manual_seed(0)
    r = torch.randn(3, 6) * 0.01
    p = torch.randn(3, 6, requires_grad=True)
    profit_objective(p, r, 0.001, "mean").loss.backward()
    g1 = p.grad.clone()
    p.grad = None
    r2 = r.clone()
    r2[2] = -r2[2] * 3                                  # change only window 2
    profit_objective(p, r2, 0.001, "mean").loss.backward()
    torch.testing.assert_close(p.grad[:2], g1[:2])
    assert not torch.allclose(p.grad[2], g1[2])
    q = torch.zeros(2, 4, requires_grad=True)           # and it points towards the window's own returns
    rr = torch.tensor([[0.0, 0.02, 0.02, 0.02], [0.0, -0.02, -0.02, -0.02]])
    profit_objective(q, rr, 0.0, "mean").loss.backward()
    assert (q.grad[0, 1:] < 0).all() and (q.grad[1, 1:] > 0).all()


def test_pooled_sharpe_gradient_matches_the_analytic_gradient_per_window():
    """Each window's gradient is its own return times the pooled Sharpe's derivative: no [B, B] mixing.

    With no costs, R[b, t] = p[b, t] r[b, t+1], and d(-S)/dR_i = -sqrt(P)/n * (1/s - m (R_i - m) / s^3),
    so dL/dp[b, t] = r[b, t+1] * d(-S)/dR[b, t]. Computed here with numpy, independently of torch.
    """
    torch.manual_seed(1)
    r = (torch.randn(4, 7) * 0.01).double()
    p = (torch.randn(4, 7) * 0.5).double().requires_grad_(True)
    profit_objective(p, r, 0.0, "sharpe", periods_per_year=252).loss.backward()
    pn, rn = p.detach().numpy(), r.numpy()
    big_r = pn[:, 1:] * rn[:, 1:]
    n, m = big_r.size, big_r.mean()
    s = math.sqrt((big_r ** 2).mean() - m * m + 1e-9)
    d_big_r = -math.sqrt(252) / n * (1 / s - m * (big_r - m) / s ** 3)
    expected = np.zeros_like(pn)
    expected[:, 1:] = rn[:, 1:] * d_big_r
    np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-7, atol=1e-12)


def test_flat_positions_give_finite_gradients():
    for objective in ("sharpe", "mean", "mean_variance"):
        p = torch.zeros(2, 5, requires_grad=True)
        profit_objective(p, torch.randn(2, 5) * 0.01, 0.001, objective, risk_penalty=1.0).loss.backward()
        assert torch.isfinite(p.grad).all()


def test_pooled_sharpe_is_scale_free():
    values = torch.randn(3, 20, dtype=torch.float64) * 0.01 + 0.001
    assert pooled_sharpe(values).item() == pytest.approx(pooled_sharpe(values * 7).item(), rel=1e-4)  # up to eps

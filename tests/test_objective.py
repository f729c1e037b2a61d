"""The differentiable objective against a hand computation, and per-window gradients."""

import math

import pytest
import torch

from hftraining.objective import net_returns, profit_objective


def test_net_returns_hand_example():
    p = torch.tensor([[0.0, 1.0, 1.0, -0.5]])
    r = torch.tensor([[0.5, 0.01, -0.02, 0.04]])      # r[t] is earned by the position decided at t
    cost = 0.001
    expected = [1.0 * 0.01 - cost * 1.0, 1.0 * -0.02 - 0.0, -0.5 * 0.04 - cost * 1.5]
    torch.testing.assert_close(net_returns(p, r, cost), torch.tensor([expected]))


def test_objective_hand_example():
    p = torch.tensor([[0.0, 1.0, 1.0, -0.5]])
    r = torch.tensor([[0.0, 0.01, -0.02, 0.04]])
    net = [0.01 - 0.001, -0.02, -0.02 - 0.0015]
    mean = sum(net) / 3
    var = sum((x - mean) ** 2 for x in net) / 3
    parts = profit_objective(p, r, cost=0.001, sharpe_weight=0.5, risk_penalty=2.0)
    expected = -mean - 0.5 * mean / math.sqrt(var + 1e-10) + 2.0 * var
    assert parts.loss.item() == pytest.approx(expected, rel=1e-5)


def test_shapes_must_match_exactly():
    with pytest.raises(ValueError, match=r"\[batch, time\]"):
        net_returns(torch.zeros(4, 5), torch.zeros(4, 1), 0.0)
    with pytest.raises(ValueError):
        net_returns(torch.zeros(4), torch.zeros(4), 0.0)


def test_each_window_gradient_depends_on_its_own_returns_only():
    """The broadcasting trap: window i's gradient must not change when window j's returns change."""
    torch.manual_seed(0)
    r = torch.randn(3, 6) * 0.01
    p = torch.randn(3, 6, requires_grad=True)
    profit_objective(p, r, 0.001, sharpe_weight=0.1).loss.backward()
    g1 = p.grad.clone()
    p.grad = None
    r2 = r.clone()
    r2[2] = -r2[2] * 3                                  # change only window 2
    profit_objective(p, r2, 0.001, sharpe_weight=0.1).loss.backward()
    torch.testing.assert_close(p.grad[:2], g1[:2])
    assert not torch.allclose(p.grad[2], g1[2])
    # and the gradient points towards the window's own returns: long where r > 0
    q = torch.zeros(2, 4, requires_grad=True)
    rr = torch.tensor([[0.0, 0.02, 0.02, 0.02], [0.0, -0.02, -0.02, -0.02]])
    profit_objective(q, rr, 0.0, sharpe_weight=0.0).loss.backward()
    assert (q.grad[0, 1:] < 0).all() and (q.grad[1, 1:] > 0).all()


def test_flat_positions_give_finite_gradients():
    p = torch.zeros(2, 5, requires_grad=True)
    profit_objective(p, torch.randn(2, 5) * 0.01, 0.001, sharpe_weight=0.1).loss.backward()
    assert torch.isfinite(p.grad).all()

"""The allocation transformer: shapes, bounded positions, causality inside the window."""

import torch

from hftraining.config import ModelConfig
from hftraining.model import build_model


def model(**kw):
    torch.manual_seed(0)
    m = build_model(n_features=5, context_length=12, horizon=3,
                    config=ModelConfig(hidden_size=16, num_layers=2, num_heads=2, dropout=0.0, **kw))
    torch.nn.init.normal_(m.position_head.weight, std=1.0)     # zero-initialised: make outputs vary
    return m.eval()


def test_one_position_per_step_within_max_position():
    m = model(max_position=0.5, aux_weight=0.1)
    out = m(torch.randn(4, 12, 5) * 10)
    assert out.positions.shape == (4, 12)
    assert out.aux.shape == (4, 12, 3)
    assert out.positions.abs().max() <= 0.5


def test_a_step_never_sees_later_steps():
    m = model()
    x = torch.randn(2, 12, 5)
    y = x.clone()
    y[:, 7:] += 5.0
    a, b = m(x).positions, m(y).positions
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_fresh_model_starts_flat():
    m = build_model(5, 12, 3, ModelConfig(hidden_size=16, num_layers=1, num_heads=2))
    assert m(torch.randn(3, 12, 5)).positions.abs().max() == 0


# --- model.members: a seed ensemble inside one model ---------------------------------------------

def members_model(k=3):
    torch.manual_seed(0)
    m = build_model(5, 12, 3, ModelConfig(hidden_size=16, num_layers=1, num_heads=2, dropout=0.0, members=k))
    for member in m.members:
        torch.nn.init.normal_(member.position_head.weight, std=1.0)
    return m.eval()


def test_members_start_from_different_weights_and_the_position_is_their_mean():
    m = members_model()
    assert not torch.equal(m.members[0].embed.weight, m.members[1].embed.weight)
    m.output_scale.fill_(2.0)
    x = torch.randn(4, 12, 5)
    out = m(x)
    each = torch.stack([member(x).positions for member in m.members])
    torch.testing.assert_close(out.member_positions, each)
    torch.testing.assert_close(out.positions, each.mean(0) * 2.0)


def test_each_member_is_trained_on_its_own_loss_only():
    """The loss PositionTask uses: the mean of the members' own objectives, so member k's gradient is 1/K
    of the gradient of its objective alone (no member is pulled towards the others' positions)."""
    from hftraining.objective import profit_objective

    m = members_model(k=2).train()
    x, r = torch.randn(4, 12, 5), torch.randn(4, 12) * 0.01
    each = m(x).member_positions
    loss = sum(profit_objective(p, r, 0.001).loss for p in each) / len(each)
    loss.backward()
    joint = [p.grad.clone() for p in m.members[0].parameters()]
    m.zero_grad()
    profit_objective(m.members[0](x).positions, r, 0.001).loss.backward()
    for together, alone in zip(joint, (p.grad for p in m.members[0].parameters()), strict=True):
        torch.testing.assert_close(together, alone / 2)

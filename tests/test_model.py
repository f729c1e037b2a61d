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

"""Evaluation: positions come from fixed-shape model calls, so a bar's position does not depend on its batch."""

import numpy as np
import pytest
import torch

from hftraining.config import ModelConfig
from hftraining.evaluation import EVAL_CHUNK, predict_positions
from hftraining.model import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model():
    torch.manual_seed(0)
    m = build_model(n_features=5, context_length=12, horizon=3,
                    config=ModelConfig(hidden_size=32, num_layers=2, num_heads=2, dropout=0.0))
    torch.nn.init.normal_(m.position_head.weight, std=1.0)     # zero-initialised: make outputs vary
    return m.eval()


@pytest.mark.parametrize("bars", [1, EVAL_CHUNK - 1, EVAL_CHUNK + 3])
def test_every_model_call_sees_the_same_shape(bars):
    """BLAS kernels (MKL on AVX-512, cuBLAS) round differently per batch shape; a padded last chunk keeps
    the shape fixed, so paper trading one bar at a time gives the backtest's positions bit for bit."""
    m = tiny_model()
    shapes = []
    m.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    x = torch.randn(200, 1, 5)
    predict_positions(m, x, 0, range(11, 11 + bars))
    assert set(shapes) == {(EVAL_CHUNK, 12, 5)}


def test_positions_one_bar_at_a_time_equal_the_batched_ones():
    m = tiny_model()
    x = torch.randn(150, 2, 5)
    together = predict_positions(m, x, 1, range(11, 150))
    alone = np.array([predict_positions(m, x, 1, range(t, t + 1))[0] for t in range(11, 150)])
    np.testing.assert_array_equal(alone, together)
    assert np.abs(together).max() > 0


def test_an_undefined_win_rate_is_skipped_when_averaged_and_logged(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hftraining.evaluation import average_metrics
    from hftraining.tensorboard_log import RunLogger

    per_symbol = {"AAA": {"win_rate": None, "sharpe_ratio": 1.0}, "BBB": {"win_rate": 0.6, "sharpe_ratio": 2.0},
                  "CCC": {"win_rate": 0.2, "sharpe_ratio": 0.0}}
    assert average_metrics(per_symbol) == {"win_rate": pytest.approx(0.4), "sharpe_ratio": 1.0}   # not 0.8 / 3
    assert average_metrics({"AAA": {"win_rate": None}})["win_rate"] is None
    logger = RunLogger(tmp_path)
    metrics = {"total_return": 0.1, "sharpe_ratio": 1.0, "win_rate": None, "max_drawdown": -0.1, "trade_count": 1}
    logger.evaluation(1, metrics, {"AAA": metrics, "BBB": {**metrics, "win_rate": 0.5}}, 0.0)
    logger.close()
    tags = set(EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"])
    assert "profit/sharpe_ratio" in tags and "profit/BBB/win_rate" in tags
    assert "profit/win_rate" not in tags and "profit/AAA/win_rate" not in tags

"""Make the training objective return NaN at one optimizer step (for the NaN-policy tests)."""

import torch

from hftraining import position_task


def poison_training_loss(monkeypatch, at_step: int) -> None:
    """The training objective returns NaN at one optimizer step (evaluation, under no_grad, is untouched)."""
    real = position_task.objective_from_config
    calls = {"n": 0}

    def objective(*args, **kwargs):
        parts = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == at_step:
                parts.loss = parts.loss * float("nan")
        return parts

    monkeypatch.setattr(position_task, "objective_from_config", objective)

"""What trainer.fit trains for a portfolio: the allocation policy on random episodes of rebalances.

The policy (hftraining.portfolio_policy) reads each asset's window at every rebalance of an episode;
the loss is the portfolio objective on the drifted, cost-charged period returns
(hftraining.portfolio_objective, plus portfolio.turnover_penalty_bps in training only); validation
simulates the policy's book on the validation bars (hftraining.portfolio_eval). Under torchrun every
rank draws the same global batch of episodes and trains its own slice of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from hftraining import checkpoint as ckpt
from hftraining.config import Config
from hftraining.errors import UserError
from hftraining.portfolio_data import PairStockDataset
from hftraining.portfolio_eval import evaluate_policy, log_evaluation
from hftraining.portfolio_objective import horizon_net_returns, loss_from_config
from hftraining.portfolio_policy import PortfolioPolicy, build_policy
from hftraining.portfolio_sim import clean_metrics
from hftraining.position_task import Validation
from hftraining.trainer import TrainingJob

# A policy is validated at least this many times (at most every training.eval_every steps), so the best-checkpoint
# choice has a few candidates.
PORTFOLIO_EVALUATIONS = 4


class PortfolioTask:
    """The policy, its episodes, its loss and its validation (see trainer.Task)."""

    find_unused_parameters = True           # the encoder's position and auxiliary heads are not used by the policy
    learning_rate_key = "portfolio.learning_rate"

    def __init__(self, config: Config, data: PairStockDataset, base: Optional[ckpt.RunFiles] = None,
                 policy: Optional[PortfolioPolicy] = None):
        self.config, self.data, self.base, self.policy = config, data, base, policy
        self.evaluate_first = config.portfolio.prior_candidate     # the prior's book is a candidate too
        self.train_cost = (config.profit.transaction_cost_bps + config.portfolio.turnover_penalty_bps) / 1e4
        self.copied = 0

    def build_model(self) -> PortfolioPolicy:
        if self.policy is not None:
            self.window = self.policy.window
            return self.policy
        policy = build_policy(len(self.data.feature_names), self.data.n_assets, self.config)
        if self.base is not None:
            self.copied = load_base_encoder(policy, self.base, self.data.feature_names)
        self.window = policy.window
        return policy

    def prepare(self, device: torch.device, generator: torch.Generator) -> None:
        self.generator = generator

    def loss(self, forward: torch.nn.Module, rank: int, world_size: int, autocast) -> torch.Tensor:
        """`portfolio.batch_size` episodes (this rank's slice of the global batch) -> the objective's loss."""
        data = self.data
        bars = data.sample_episodes(self.config.portfolio.batch_size, self.generator, rank, world_size)   # [B, P]
        batch, periods = bars.shape
        flat = bars.reshape(-1)
        with autocast():
            weights = forward(data.windows(flat, self.window), data.priors(flat))
        weights = weights.reshape(batch, periods, -1)
        growth = data.growth(flat, data.splits.train.stop).reshape(batch, periods, -1)
        return loss_from_config(horizon_net_returns(weights, growth, self.train_cost), self.config)

    def validate(self, model: PortfolioPolicy) -> Validation:
        ev = evaluate_policy(model, self.data, self.data.splits.val, self.config)
        return Validation(clean_metrics(ev.sim.metrics), ev.loss,
                          lambda logger, step: log_evaluation(logger, step, ev, self.data.symbols))

    def log_start(self, logger) -> None:
        logger.text("metadata/data", "; ".join(f"{s}: {o}" for s, o in self.data.origins.items()), 0)

    def finish(self, model: PortfolioPolicy) -> None:
        return None


def portfolio_job(config: Config, data: PairStockDataset, run_dir: Path, tensorboard_dir: Path,
                  base: Optional[ckpt.RunFiles] = None, policy: Optional[PortfolioPolicy] = None,
                  metadata: Optional[dict] = None, resume: bool = False, progress: bool = True,
                  on_step=None) -> TrainingJob:
    """trainer.fit's job for a policy: portfolio.max_steps, .learning_rate and .batch_size on the one schedule
    rule (Config.with_steps, at least PORTFOLIO_EVALUATIONS validations), one micro-batch per step."""
    scheduled = config.with_steps(config.portfolio.max_steps, evaluations=PORTFOLIO_EVALUATIONS)
    scheduled.training.grad_accum_steps = 1
    task = PortfolioTask(config, data, base, policy)
    return TrainingJob(config=scheduled, panel=data.panel, splits=data.splits, scaler=data.scaler, run_dir=run_dir,
                       tensorboard_dir=tensorboard_dir, kind=f"portfolio {'_'.join(data.symbols)}",
                       learning_rate=config.portfolio.learning_rate, max_steps=config.portfolio.max_steps,
                       metadata=metadata or {}, resume=resume, progress=progress, on_step=on_step, task=task)


FIRST_MEMBER = "members.0."


def load_base_encoder(policy: PortfolioPolicy, base: ckpt.RunFiles, feature_names: list[str]) -> int:
    """Copy a base run's encoder weights into the policy; one line and no copy when anything does not fit."""
    where = f"--base {base.path}"
    if list(base.scaler.feature_names) != list(feature_names):
        differ = sorted(set(base.scaler.feature_names) ^ set(feature_names)) or ["order"]
        raise UserError(f"{where}: its features differ from this run's ({', '.join(differ[:4])}); use the same "
                        "data.forecast_backend and data.toto_horizon as the base run")
    expected = policy.encoder.state_dict()
    weights = base.weights
    if any(name.startswith(FIRST_MEMBER) for name in weights):    # a MemberAverage base: its first member's encoder
        weights = {name[len(FIRST_MEMBER):]: t for name, t in weights.items() if name.startswith(FIRST_MEMBER)}
    copied = {}
    for name, tensor in expected.items():
        if name not in weights:
            if name.startswith(("position_head.", "aux_head.")):
                continue
            raise UserError(f"{where}: the base weights have no {name}; not an AllocationTransformer run")
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise UserError(f"{where}: encoder weight {name} has shape {tuple(weights[name].shape)}, the "
                            f"portfolio encoder needs {tuple(tensor.shape)} (different data.context_length, "
                            "features or model size)")
        copied[name] = weights[name]
    policy.encoder.load_state_dict(copied, strict=False)
    return len(copied)

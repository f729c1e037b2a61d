"""What trainer.fit trains for the single-asset transformer (single, base, fine-tune, walk-forward fold).

Windows (end bar, symbol) are gathered by index from device-resident tensors; the loss is the profit
objective (pnl, Sharpe, turnover costs) on traded positions, plus the auxiliary head's loss; validation
simulates the model with the ProfitTracker per symbol; after training, one constant scales positions so
the validation volatility meets profit.sigma_target.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
import torch

from hftraining import checkpoint as ckpt
from hftraining.data.panel import Panel, last_rows, panel_windows, symbol_views
from hftraining.errors import UserError
from hftraining.evaluation import average_metrics, model_positions, simulate
from hftraining.model import AllocationTransformer, build_model
from hftraining.objective import aux_loss, objective_from_config
from hftraining.sizing import position_scale

log = logging.getLogger("hftraining")


class Validation:
    """One validation of the model: average metrics, the objective's loss, and how to log them to TensorBoard."""

    def __init__(self, metrics: dict, loss: float, log_to: Callable[[object, int], None]):
        self.metrics, self.loss, self.log_to = metrics, loss, log_to


class PositionTask:
    """The single-asset model's model, batches, loss, validation and final calibration (see trainer.Task)."""

    evaluate_first = False                  # no candidate before training
    find_unused_parameters = False
    learning_rate_key = "training.learning_rate"

    def __init__(self, job):
        self.job = job

    def build_model(self) -> AllocationTransformer:
        job, cfg = self.job, self.job.config
        model = build_model(len(job.panel.feature_names), cfg.data.context_length, cfg.data.horizon, cfg.model)
        if job.init_weights is not None:
            ckpt.load_weights(model, job.init_weights, job.run_dir)
        return model

    def prepare(self, device: torch.device, generator: torch.Generator) -> None:
        job, cfg = self.job, self.job.config
        self.x, self.returns = device_tensors(job, device)
        ends = panel_windows(job.panel, job.splits.train, cfg.data.context_length)
        if len(ends) == 0:
            raise UserError(f"{job.kind}: no training window of {cfg.data.context_length} bars without a gap in the "
                            "training dates; load more history or shrink data.context_length")
        self.batches = Batches(self.x, self.returns, ends, cfg.data.context_length, cfg.data.horizon, generator,
                               device_scale(job, device), last_rows(job.panel))

    def loss(self, forward: torch.nn.Module, rank: int, world_size: int, autocast) -> torch.Tensor:
        """One micro-batch: `batch_size` windows of this rank's slice of the global batch, forward, loss."""
        cfg = self.job.config
        ends = self.batches.sample(cfg.training.batch_size, rank, world_size)
        xb, rb, future = self.batches.gather(ends)
        with autocast():
            out = forward(xb)
        scales = self.batches.scales(ends)
        each = out.member_positions if out.member_positions is not None else out.positions[None]
        loss = sum(objective_from_config(p.float() * scales, rb, cfg).loss for p in each) / len(each)
        if out.aux is not None:
            loss = loss + cfg.model.aux_weight * aux_loss(out.aux.float(), future)
        return loss

    def validate(self, model: AllocationTransformer) -> Validation:
        metrics, per_symbol, extra = evaluate(model, self.job, self.x, self.returns, self.job.splits.val)
        return Validation(metrics, extra["loss"], lambda logger, step: logger.evaluation(
            step, metrics, per_symbol, extra["loss"], extra["simulations"]))

    def log_start(self, logger) -> None:
        logger.text("metadata/forecast_backend", forecast_summary(self.job.panel), 0)
        logger.text("metadata/data", "; ".join(f"{s}: {o}" for s, o in self.job.panel.data_origin.items()), 0)

    def finish(self, model: AllocationTransformer) -> Optional[float]:
        """Risk sizing: scale positions to the volatility target on validation; the new output_scale, else None."""
        if self.job.config.profit.position_sizing != "risk":
            return None
        return calibrate_output_scale(model, self.job, self.x, self.job.splits.val)


class Batches:
    """Draws training windows (end bar, symbol) by index from device-resident tensors.

    `scale` [T, S] turns the model's raw positions into traded ones (hftraining.sizing); None = 1.
    `last_rows` [T] (a RaggedPanel's, hftraining.data.panel.last_rows) stops the next-`horizon` returns
    at each window's own symbol; None = at the last bar.
    """

    def __init__(self, x: torch.Tensor, returns: torch.Tensor, ends: np.ndarray, context: int, horizon: int,
                 generator: torch.Generator, scale: Optional[torch.Tensor] = None,
                 last_rows: Optional[np.ndarray] = None):
        self.x, self.returns = x, returns
        self.last_rows = torch.from_numpy(last_rows).to(x.device) if last_rows is not None else None
        self.scale = scale if scale is not None else torch.ones_like(returns)
        self.ends = torch.from_numpy(ends).to(x.device)
        self.offsets = torch.arange(context - 1, -1, -1, device=x.device)
        self.horizon_steps = torch.arange(horizon, device=x.device)
        self.generator = generator
        self.last_bar = x.shape[0] - 1

    def sample(self, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """`batch_size` windows; under DDP every rank draws the same global batch and keeps its own slice."""
        index = torch.randint(len(self.ends), (batch_size * world_size,), generator=self.generator)
        index = index[rank * batch_size:(rank + 1) * batch_size]
        if self.ends.device.type == "cuda":     # a pageable copy would wait for the GPU every step
            index = index.pin_memory().to(self.ends.device, non_blocking=True)
        return self.ends[index.to(self.ends.device)]

    def gather(self, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Windows [B, L, F], their next-bar returns [B, L] and next-`horizon` returns [B, L, H]."""
        t_idx = ends[:, :1] - self.offsets                       # [B, L]
        symbol = ends[:, 1:2]
        last = self.last_bar if self.last_rows is None else self.last_rows[ends[:, 0]][:, None, None]
        future = torch.clamp(t_idx[..., None] + self.horizon_steps, max=last)
        return self.x[t_idx, symbol], self.returns[t_idx, symbol], self.returns[future, symbol[..., None]]

    def scales(self, ends: torch.Tensor) -> torch.Tensor:
        """Raw-to-traded position multipliers of each window's steps, [B, L]."""
        return self.scale[ends[:, :1] - self.offsets, ends[:, 1:2]]


def device_tensors(job, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(job.scaler.transform(job.panel)).to(device)
    returns = torch.from_numpy(np.nan_to_num(job.panel.returns, nan=0.0).astype(np.float32)).to(device)
    return x, returns


def device_scale(job, device: torch.device) -> torch.Tensor:
    cfg = job.config
    scale = job.panel.by_symbol(lambda panel: position_scale(panel, cfg.profit, cfg.tracker,
                                                             cfg.data.periods_per_year))
    return torch.from_numpy(scale.astype(np.float32)).to(device)


def evaluate(model: AllocationTransformer, job, x: torch.Tensor, returns: torch.Tensor,
             decisions: range) -> tuple[dict, dict, dict]:
    """(average profit metrics, per-symbol metrics, extra) on a decision range, plus the objective's loss."""
    cfg = job.config
    per_symbol: dict[str, dict] = {}
    sims = {}
    for symbol, panel, s, rows, own in symbol_views(job.panel, x, decisions):   # ragged: each on its own bars
        positions = model_positions(model, rows, panel, s, own, cfg)
        sims[symbol] = simulate(panel, s, own, positions, cfg.tracker, cfg.data.periods_per_year)
        per_symbol[symbol] = sims[symbol].metrics
    ends = panel_windows(job.panel, decisions, model.context_length)
    if len(ends) > 2048:
        ends = ends[np.linspace(0, len(ends) - 1, 2048).astype(int)]
    batches = Batches(x, returns, ends, model.context_length, cfg.data.horizon, torch.Generator(),
                      device_scale(job, x.device), last_rows(job.panel))
    with torch.no_grad():
        was_training = model.training
        model.eval()
        xb, rb, _ = batches.gather(batches.ends)
        out = model(xb)
        loss = objective_from_config(out.positions.float() * batches.scales(batches.ends), rb, cfg).loss.item()
        model.train(was_training)
    return average_metrics(per_symbol), per_symbol, {"loss": loss, "simulations": sims}


MAX_OUTPUT_SCALE = 100.0
CALIBRATION_ROUNDS = 3


@torch.no_grad()
def calibrate_output_scale(model: AllocationTransformer, job, x: torch.Tensor,
                           decisions: range) -> float:
    """Scale the model's positions so the strategy's validation volatility equals profit.sigma_target.

    Why: a Sharpe objective is blind to the size of positions, so a well-trained model may trade at
    1% volatility and show tiny returns. One constant, fitted on validation bars only (never test),
    puts it on the risk budget the user asked for; Sharpe is unchanged apart from the leverage cap.
    Returns the new output_scale (stored in the weights, so every backtest and paper trade uses it).
    """
    target = job.config.profit.sigma_target
    start = float(model.output_scale)
    for rounds_done in range(CALIBRATION_ROUNDS + 1):   # clipped positions need another round; the last only measures
        vol = _validation_volatility(model, job, x, decisions)
        if rounds_done == CALIBRATION_ROUNDS or vol <= 0 or abs(vol / target - 1) < 0.01:
            break
        model.output_scale.mul_(min(target / vol, MAX_OUTPUT_SCALE / float(model.output_scale)))
    log.info("%s: positions scaled by %.3g so the validation volatility meets the %.0f%% target (now %.2f%%)",
             job.kind, float(model.output_scale) / start, 100 * target, 100 * vol)
    return float(model.output_scale)


def _validation_volatility(model: AllocationTransformer, job, x: torch.Tensor, decisions) -> float:
    """Mean over symbols of the annualised volatility of the model's net returns on `decisions`."""
    cfg = job.config
    vols = []
    for _, panel, s, rows, own in symbol_views(job.panel, x, decisions):
        positions = model_positions(model, rows, panel, s, own, cfg)
        vols.append(simulate(panel, s, own, positions, cfg.tracker, cfg.data.periods_per_year).metrics["volatility"])
    return float(np.mean(vols))


def forecast_summary(panel: Panel) -> str:
    parts = []
    for symbol, info in panel.forecast.items():
        text = f"{symbol}: {info.get('backend', 'none')}"
        if info.get("fallback_reason"):
            text += f" (requested {info.get('requested')}; {info['fallback_reason']})"
        parts.append(text)
    return "; ".join(parts)

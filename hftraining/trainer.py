"""The training loop: windows gathered by index on the device, AdamW with warmup + cosine, validation by profit.

setup -> train steps -> evaluate -> checkpoint, as named functions. The schedule counts optimizer
steps (never micro-batches). The best checkpoint and early stopping follow the validation net
Sharpe from the ProfitTracker, not the loss. Every random draw (weights, batch order, dropout)
comes from seeded generators whose states are checkpointed, so `--resume` continues bit-identically.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from hftraining import checkpoint as ckpt
from hftraining import distributed
from hftraining.config import Config
from hftraining.data.panel import Panel, Scaler, Splits, last_rows, panel_windows, symbol_views
from hftraining.errors import UserError
from hftraining.evaluation import average_metrics, model_positions, simulate
from hftraining.model import AllocationTransformer, build_model
from hftraining.objective import aux_loss, objective_from_config
from hftraining.sizing import position_scale
from hftraining.tensorboard_log import RunLogger

log = logging.getLogger("hftraining")



class TrainingDiverged(UserError):
    """The loss became NaN or inf; the last good checkpoint is kept."""

    @classmethod
    def at(cls, step: int, run_dir: Path) -> "TrainingDiverged":
        return cls(f"training loss became NaN/inf at step {step}; stopped, the last good checkpoint is kept in "
                   f"{run_dir} (lower training.learning_rate, or set training.nan_policy=skip)")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def learning_rate_at(step: int, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to `peak`, then cosine to `peak * min_ratio` at `total` optimizer steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainingJob:
    """What one training run needs; built by train_with_profit / base_model_trainer."""

    config: Config
    panel: Panel
    splits: Splits
    scaler: Scaler
    run_dir: Path
    tensorboard_dir: Path
    kind: str                                  # single | base | finetune
    learning_rate: float
    max_steps: int
    metadata: dict = field(default_factory=dict)
    init_weights: Optional[dict] = None        # fine-tuning starts from these
    resume: bool = False
    progress: bool = True
    on_step: Optional[Callable[[int], None]] = None   # test hook (e.g. to kill a run mid-way)


@dataclass
class FitResult:
    model: AllocationTransformer
    best_path: Path
    best_step: int
    best_metrics: dict
    steps_done: int
    stopped_early: bool
    nan_skipped: int
    device: str
    history: list = field(default_factory=list)
    output_scale: Optional[float] = None      # set when positions were calibrated to the volatility target


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


class StepGuard:
    """Keeps a NaN/inf loss away from the weights without a host sync per step on the GPU.

    On CPU reading a flag costs nothing, so `allows_step` checks every step on the host (the loop then
    skips or stops, as it always did). On CUDA that read would stall the GPU each step, so the flag
    stays on the device and reaches the fused AdamW as `found_inf`: its kernel then leaves the
    weights, both moments and the step count untouched. Under nan_policy=stop the flag latches, so no
    later step moves the weights either. `collect` (at logging, evaluation and checkpoint steps) reads
    what happened once. Under DDP the flag is all-reduced, so every rank skips the same steps.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, policy: str,
                 on_device: Optional[bool] = None):
        self.optimizer, self.policy = optimizer, policy
        self.on_device = device.type == "cuda" if on_device is None else on_device
        if self.on_device and not all(g.get("fused") for g in optimizer.param_groups):
            raise ValueError("the on-device NaN guard needs a fused optimizer (found_inf support)")
        self.bad = torch.zeros((), device=device)              # non-finite steps not yet collected
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.latched = torch.zeros((), device=device)

    def allows_step(self, loss: torch.Tensor, step: int) -> bool:
        """False when the host must skip this step; on the device path always True (the kernel skips)."""
        flag = distributed.any_rank((~torch.isfinite(loss)).float())
        if not self.on_device:
            return not bool(flag)
        self.bad += flag
        self.first_bad = torch.where((self.first_bad < 0) & (flag > 0), step + 1, self.first_bad)
        if self.policy == "stop":
            self.latched = torch.maximum(self.latched, flag)
            flag = self.latched
        self.optimizer.found_inf = flag
        return True

    def collect(self) -> tuple[int, int]:
        """(non-finite steps since the last call, the first one's step number or -1); one host sync."""
        if not self.on_device:
            return 0, -1
        count, first = int(self.bad), int(self.first_bad)
        self.bad.zero_()
        if self.policy != "stop":
            self.first_bad.fill_(-1)
        return count, first


def _device_tensors(job: TrainingJob, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(job.scaler.transform(job.panel)).to(device)
    returns = torch.from_numpy(np.nan_to_num(job.panel.returns, nan=0.0).astype(np.float32)).to(device)
    return x, returns


def _device_scale(job: TrainingJob, device: torch.device) -> torch.Tensor:
    cfg = job.config
    scale = job.panel.by_symbol(lambda panel: position_scale(panel, cfg.profit, cfg.tracker,
                                                             cfg.data.periods_per_year))
    return torch.from_numpy(scale.astype(np.float32)).to(device)


def evaluate(model: AllocationTransformer, job: TrainingJob, x: torch.Tensor, returns: torch.Tensor,
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
                      _device_scale(job, x.device), last_rows(job.panel))
    with torch.no_grad():
        was_training = model.training
        model.eval()
        xb, rb, _ = batches.gather(batches.ends)
        out = model(xb)
        loss = objective_from_config(out.positions.float() * batches.scales(batches.ends), rb, cfg).loss.item()
        model.train(was_training)
    return average_metrics(per_symbol), per_symbol, {"loss": loss, "simulations": sims}


def _improved(metric: str, value: float, best: Optional[float]) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def fit(job: TrainingJob) -> FitResult:
    cfg = job.config
    tcfg = cfg.training
    ctx = distributed.require_session(f"hftrain {job.kind.split()[0]}")
    device = distributed.rank_device(resolve_device(tcfg.device), ctx)
    torch.manual_seed(tcfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model = build_model(len(job.panel.feature_names), cfg.data.context_length, cfg.data.horizon, cfg.model)
    if job.init_weights is not None:
        ckpt.load_weights(model, job.init_weights, job.run_dir)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.learning_rate, weight_decay=tcfg.weight_decay,
                                  fused=device.type == "cuda")
    generator = torch.Generator().manual_seed(tcfg.seed)
    state = {"step": 0, "best_value": None, "best_step": -1, "best_metrics": {}, "bad_evals": 0,
             "nan_skipped": 0, "history": []}
    if job.resume:
        state.update(ckpt.load_training_state(job.run_dir, model, optimizer, generator))
        log.info("resuming %s at step %d", job.run_dir, state["step"])

    ddp = distributed.wrap(model, device, ctx)           # the model itself in a single process
    forward = torch.compile(ddp) if tcfg.compile else ddp
    guard = StepGuard(optimizer, device, tcfg.nan_policy)
    x, returns = _device_tensors(job, device)
    ends = panel_windows(job.panel, job.splits.train, cfg.data.context_length)
    if len(ends) == 0:
        raise UserError(f"{job.kind}: no training window of {cfg.data.context_length} bars without a gap in the "
                        "training dates; load more history or shrink data.context_length")
    batches = Batches(x, returns, ends, cfg.data.context_length, cfg.data.horizon, generator,
                      _device_scale(job, device), last_rows(job.panel))
    amp = tcfg.amp and device.type == "cuda"
    logger = RunLogger(job.tensorboard_dir, purge_step=state["step"] + 1 if job.resume else None, enabled=ctx.is_main)
    if not job.resume:
        logger.text("metadata/forecast_backend", _forecast_summary(job.panel), 0)
        logger.text("metadata/data", "; ".join(f"{s}: {o}" for s, o in job.panel.data_origin.items()), 0)

    best_path = job.run_dir / ckpt.WEIGHTS
    patience = tcfg.early_stopping_patience     # a resumed run that had already stopped early stays stopped
    stopped_early = bool(job.resume and patience and state["bad_evals"] >= patience)
    progress = logger.progress(job.max_steps, enabled=job.progress, description=job.kind)
    progress.start(state["step"])
    model.train()
    step = state["step"]
    try:
        while step < job.max_steps and not stopped_early:
            lr = learning_rate_at(step, job.learning_rate, tcfg.warmup_steps, job.max_steps, tcfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro in range(tcfg.grad_accum_steps):
                ends = batches.sample(tcfg.batch_size, ctx.rank, ctx.world_size)
                xb, rb, future = batches.gather(ends)
                with distributed.accumulating(ddp, micro == tcfg.grad_accum_steps - 1):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        out = forward(xb)
                    parts = objective_from_config(out.positions.float() * batches.scales(ends), rb, cfg)
                    loss = parts.loss
                    if out.aux is not None:
                        loss = loss + cfg.model.aux_weight * aux_loss(out.aux.float(), future)
                    (loss / tcfg.grad_accum_steps).backward()
                loss_sum += loss.detach()
            mean_loss = loss_sum / tcfg.grad_accum_steps
            if not guard.allows_step(mean_loss, step):  # NaN must never reach the weights (CUDA: checked on device)
                optimizer.zero_grad(set_to_none=True)
                if tcfg.nan_policy == "stop":
                    raise TrainingDiverged.at(step + 1, job.run_dir)
                state["nan_skipped"] += 1
                log.warning("step %d: NaN/inf loss, batch skipped (%d so far)", step + 1, state["nan_skipped"])
            else:                                       # a skipped step still evaluates and checkpoints on time
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            if job.on_step is not None:
                job.on_step(step)
            evaluating = step % tcfg.eval_every == 0 or step == job.max_steps
            if guard.on_device and (evaluating or step % tcfg.log_every == 0 or step % tcfg.checkpoint_every == 0):
                skipped, first_bad = guard.collect()     # the device path's only host sync
                if skipped and tcfg.nan_policy == "stop":
                    raise TrainingDiverged.at(first_bad, job.run_dir)
                if skipped:
                    state["nan_skipped"] += skipped
                    log.warning("step %d: %d NaN/inf batches skipped since the last check (%d so far)", step,
                                skipped, state["nan_skipped"])
            if step % tcfg.log_every == 0 or step == job.max_steps:
                loss_value = distributed.mean(mean_loss).item()
                logger.scalar("train/loss", loss_value, step)
                logger.scalar("train/learning_rate", lr, step)
                progress.update(step, loss=loss_value)
            else:
                progress.update(step)

            if evaluating and ctx.is_main:             # rank 0 evaluates; the others wait for its verdict
                metrics, per_symbol, extra = evaluate(model, job, x, returns, job.splits.val)
                logger.evaluation(step, metrics, per_symbol, extra["loss"], extra["simulations"])
                progress.update(step, sharpe=metrics["sharpe_ratio"])
                value = extra["loss"] if tcfg.selection_metric == "loss" else metrics[tcfg.selection_metric]
                state["history"].append({"step": step, "val_loss": extra["loss"], **metrics})
                if _improved(tcfg.selection_metric, value, state["best_value"]):
                    state.update(best_value=value, best_step=step, best_metrics=metrics, bad_evals=0)
                    ckpt.save_tensors(best_path, model.state_dict())
                else:
                    state["bad_evals"] += 1
                if tcfg.early_stopping_patience and state["bad_evals"] >= tcfg.early_stopping_patience:
                    stopped_early = True
                    log.info("early stop at step %d: validation %s has not improved for %d evaluations",
                             step, tcfg.selection_metric, state["bad_evals"])
            if evaluating:
                stopped_early = distributed.broadcast(stopped_early)
            if (step % tcfg.checkpoint_every == 0 or step == job.max_steps or stopped_early) and ctx.is_main:
                state["step"] = step
                logger.flush()                          # TensorBoard holds every step the checkpoint claims
                ckpt.save_training_state(job.run_dir, model, optimizer, generator, state)
            if stopped_early:
                break
    finally:
        progress.stop()
        logger.close()

    if ctx.is_main:
        if not best_path.exists():          # every step skipped: keep the current weights rather than nothing
            ckpt.save_tensors(best_path, model.state_dict())
        ckpt.load_weights(model, ckpt.load_tensors(best_path), best_path)
        if cfg.profit.position_sizing == "risk":
            state["output_scale"] = calibrate_output_scale(model, job, x, job.splits.val)
            ckpt.save_tensors(best_path, model.state_dict())
    if ctx.enabled:                         # every rank ends with rank 0's selected model and its record
        distributed.broadcast_module(model)
        picked = distributed.broadcast({k: state.get(k) for k in ("best_step", "best_metrics", "history",
                                                                   "output_scale")})
        state.update(picked)
    model.eval()
    return FitResult(model=model, best_path=best_path, best_step=state["best_step"],
                     best_metrics=state["best_metrics"], steps_done=step, stopped_early=stopped_early,
                     nan_skipped=state["nan_skipped"], device=str(device), history=state["history"],
                     output_scale=state.get("output_scale"))


MAX_OUTPUT_SCALE = 100.0
CALIBRATION_ROUNDS = 3


@torch.no_grad()
def calibrate_output_scale(model: AllocationTransformer, job: TrainingJob, x: torch.Tensor,
                           decisions: range) -> float:
    """Scale the model's positions so the strategy's validation volatility equals profit.sigma_target.

    Why: a Sharpe objective is blind to the size of positions, so a well-trained model may trade at
    1% volatility and show tiny returns. One constant, fitted on validation bars only (never test),
    puts it on the risk budget the user asked for; Sharpe is unchanged apart from the leverage cap.
    Returns the new output_scale (stored in the weights, so every backtest and paper trade uses it).
    """
    target = job.config.profit.sigma_target
    start = float(model.output_scale)
    for _ in range(CALIBRATION_ROUNDS):     # positions clipped at the leverage cap need another round
        vol = _validation_volatility(model, job, x, decisions)
        if vol <= 0 or abs(vol / target - 1) < 0.01:
            break
        model.output_scale.mul_(min(target / vol, MAX_OUTPUT_SCALE / float(model.output_scale)))
    log.info("positions scaled by %.3g so the validation volatility meets the %.0f%% target (now %.2f%%)",
             float(model.output_scale) / start, 100 * target, 100 * _validation_volatility(model, job, x, decisions))
    return float(model.output_scale)


def _validation_volatility(model: AllocationTransformer, job: TrainingJob, x: torch.Tensor, decisions) -> float:
    """Mean over symbols of the annualised volatility of the model's net returns on `decisions`."""
    cfg = job.config
    vols = []
    for _, panel, s, rows, own in symbol_views(job.panel, x, decisions):
        positions = model_positions(model, rows, panel, s, own, cfg)
        vols.append(simulate(panel, s, own, positions, cfg.tracker, cfg.data.periods_per_year).metrics["volatility"])
    return float(np.mean(vols))


def _forecast_summary(panel: Panel) -> str:
    parts = []
    for symbol, info in panel.forecast.items():
        text = f"{symbol}: {info.get('backend', 'none')}"
        if info.get("fallback_reason"):
            text += f" (requested {info.get('requested')}; {info['fallback_reason']})"
        parts.append(text)
    return "; ".join(parts)

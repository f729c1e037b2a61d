"""The one training loop: AdamW with warmup + cosine, the NaN guard, AMP, DDP, checkpoints, selection by profit.

setup -> train steps -> evaluate -> checkpoint. The schedule counts optimizer steps (never
micro-batches). The best checkpoint and early stopping follow the validation net Sharpe from the
ProfitTracker, not the loss. Every random draw (weights, batch order, dropout) comes from seeded
generators whose states are checkpointed, so `--resume` continues bit-identically.

What is trained is a task (`TrainingJob.task`), with these methods:

  build_model()                         the model, initial weights included (after torch.manual_seed)
  prepare(device, generator)            device tensors and the batch source (draws from `generator`)
  loss(forward, rank, world, autocast)  one micro-batch: this rank's slice of the global batch -> loss
  validate(model)                       Validation: metrics, loss, and how to log them (rank 0 only)
  log_start(logger)                     TensorBoard text at step 0
  finish(model)                         after the best weights are loaded: an output_scale, or None
  evaluate_first, find_unused_parameters, learning_rate_key

The default is the single-asset transformer (hftraining.position_task.PositionTask); the portfolio
policy brings its own (hftraining.portfolio_task.PortfolioTask).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from hftraining import checkpoint as ckpt
from hftraining import distributed
from hftraining.config import Config
from hftraining.data.panel import Panel, Scaler, Splits
from hftraining.errors import UserError
from hftraining.position_task import Batches, PositionTask, calibrate_output_scale  # noqa: F401  (importable here)
from hftraining.tensorboard_log import RunLogger

log = logging.getLogger("hftraining")


class TrainingDiverged(UserError):
    """The loss became NaN or inf; the last good checkpoint is kept."""

    @classmethod
    def at(cls, step: int, run_dir: Path, learning_rate_key: str = "training.learning_rate") -> "TrainingDiverged":
        return cls(f"training loss became NaN/inf at step {step}; stopped, the last good checkpoint is kept in "
                   f"{run_dir} (lower {learning_rate_key}, or set training.nan_policy=skip)")


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
    """What one training run needs; built by hftraining.lifecycle for every stage."""

    config: Config
    panel: Panel
    splits: Splits
    scaler: Scaler
    run_dir: Path
    tensorboard_dir: Path
    kind: str                                  # the progress label: "single AAPL", "base", "portfolio A_B", ...
    learning_rate: float
    max_steps: int
    metadata: dict = field(default_factory=dict)
    init_weights: Optional[dict] = None        # fine-tuning starts from these
    resume: bool = False
    progress: bool = True
    on_step: Optional[Callable[[int], None]] = None   # test hook (e.g. to kill a run mid-way)
    task: Optional[Any] = None                 # what is trained; None = PositionTask(job)


@dataclass
class FitResult:
    model: torch.nn.Module
    best_path: Path
    best_step: int
    best_metrics: dict
    steps_done: int
    stopped_early: bool
    nan_skipped: int
    device: str
    history: list = field(default_factory=list)
    output_scale: Optional[float] = None      # set when positions were calibrated to the volatility target


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


def _improved(metric: str, value: float, best: Optional[float]) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def fit(job: TrainingJob) -> FitResult:
    """Train `job.task` (default: the single-asset PositionTask): schedule, guard, DDP, AMP, checkpoints, selection."""
    cfg = job.config
    tcfg = cfg.training
    task = job.task if job.task is not None else PositionTask(job)
    ctx = distributed.require_session(f"hftrain {job.kind.split()[0]}")
    device = distributed.rank_device(resolve_device(tcfg.device), ctx)
    torch.manual_seed(tcfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    model = task.build_model()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.learning_rate, weight_decay=tcfg.weight_decay,
                                  fused=device.type == "cuda")
    generator = torch.Generator().manual_seed(tcfg.seed)
    state = {"step": 0, "best_value": None, "best_step": -1, "best_metrics": {}, "bad_evals": 0,
             "nan_skipped": 0, "history": []}
    if job.resume:
        state.update(ckpt.load_training_state(job.run_dir, model, optimizer, generator))
        log.info("%s: resuming %s at step %d", job.kind, job.run_dir, state["step"])

    ddp = distributed.wrap(model, device, ctx, task.find_unused_parameters)   # the model itself in one process
    forward = torch.compile(ddp) if tcfg.compile else ddp
    guard = StepGuard(optimizer, device, tcfg.nan_policy)
    task.prepare(device, generator)
    amp = tcfg.amp and device.type == "cuda"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    logger = RunLogger(job.tensorboard_dir, purge_step=state["step"] + 1 if job.resume else None, enabled=ctx.is_main)
    if not job.resume:
        task.log_start(logger)

    best_path = job.run_dir / ckpt.WEIGHTS
    patience = tcfg.early_stopping_patience     # a resumed run that had already stopped early stays stopped
    stopped_early = bool(job.resume and patience and state["bad_evals"] >= patience)
    progress = logger.progress(job.max_steps, enabled=job.progress, description=job.kind)
    progress.start(state["step"])

    def validate(step: int) -> bool:
        """Rank 0 evaluates and keeps the best weights; every rank gets its verdict: True = stop early."""
        stop = False
        if ctx.is_main:
            result = task.validate(model)
            metrics = result.metrics
            result.log_to(logger, step)
            progress.update(step, sharpe=metrics["sharpe_ratio"])
            value = result.loss if tcfg.selection_metric == "loss" else metrics[tcfg.selection_metric]
            state["history"].append({"step": step, "val_loss": result.loss, **metrics})
            if _improved(tcfg.selection_metric, value, state["best_value"]):
                state.update(best_value=value, best_step=step, best_metrics=metrics, bad_evals=0)
                ckpt.save_tensors(best_path, model.state_dict())
            else:
                state["bad_evals"] += 1
            if patience and state["bad_evals"] >= patience:
                stop = True
                log.info("%s: early stop at step %d: validation %s has not improved for %d evaluations",
                         job.kind, step, tcfg.selection_metric, state["bad_evals"])
        return distributed.broadcast(stop)

    step = state["step"]
    try:
        if task.evaluate_first and not job.resume:     # the untrained model is a candidate too (step 0)
            stopped_early = validate(0)
        model.train()
        while step < job.max_steps and not stopped_early:
            lr = learning_rate_at(step, job.learning_rate, tcfg.warmup_steps, job.max_steps, tcfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro in range(tcfg.grad_accum_steps):
                with distributed.accumulating(ddp, micro == tcfg.grad_accum_steps - 1):
                    loss = task.loss(forward, ctx.rank, ctx.world_size, autocast)
                    (loss / tcfg.grad_accum_steps).backward()
                loss_sum += loss.detach()
            mean_loss = loss_sum / tcfg.grad_accum_steps
            if not guard.allows_step(mean_loss, step):  # NaN must never reach the weights (CUDA: checked on device)
                optimizer.zero_grad(set_to_none=True)
                if tcfg.nan_policy == "stop":
                    raise TrainingDiverged.at(step + 1, job.run_dir, task.learning_rate_key)
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
                    raise TrainingDiverged.at(first_bad, job.run_dir, task.learning_rate_key)
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
            if evaluating:
                stopped_early = validate(step)
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
        scale = task.finish(model)
        if scale is not None:
            state["output_scale"] = scale
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

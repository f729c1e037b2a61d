"""Fine-tune a base model on one stock: the base's weights, scaler statistics and split dates, a lower LR.

The fine-tune must see exactly the input distribution the base weights were trained on, so it
reuses the base run's scaler (that symbol's own statistics, or the pooled ones for a symbol the
base never saw) and refuses a base whose model shape or feature list differs from the request.
It also reuses the base's split *dates*: bars the base trained on can never become the fine-tune's
validation or test bars.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hftraining import checkpoint as ckpt
from hftraining import distributed
from hftraining.base_dates import splits_by_dates
from hftraining.config import Config, load_config
from hftraining.data.panel import Panel, Splits, build_panel, fingerprint
from hftraining.errors import UserError
from hftraining.evaluation import validation_sharpe
from hftraining.layout import Layout, new_run_id, normalize_symbol
from hftraining.lifecycle import RunSpec, Trial, train_run
from hftraining.model import AllocationTransformer
from hftraining.prepare import Prepared
from hftraining.trainer import FitResult, TrainingJob, resolve_device

log = logging.getLogger("hftraining")

# Config keys that fix the shape or meaning of the weights; a fine-tune must match the base on each.
SHAPE_KEYS = ["data.context_length", "data.horizon", "model.hidden_size", "model.num_layers",
              "model.num_heads", "model.ff_multiplier", "model.max_position"]


def _get(config: Config, dotted: str):
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


# A fine-tune is short: validate it this many times (at most every training.eval_every steps) so the
# best-checkpoint choice has a few candidates without paying for an evaluation every few steps.
FINETUNE_EVALUATIONS = 4


def with_schedule(config: Config, steps: int, evaluations: int | None = None) -> Config:
    """A copy of `config` whose schedule fits `steps` optimizer steps: `Config.with_steps`, the one rule."""
    return config.with_steps(steps, evaluations)


def finetune_steps(epochs: float, n_windows: int, batch_size: int) -> int:
    """Optimizer steps for `epochs` passes over `n_windows` training windows."""
    return max(1, math.ceil(epochs * n_windows / batch_size))


# --- the base run ------------------------------------------------------------------------------

def finetune_config_from_base(base_dir: Path, overrides: list[str] | None = None,
                              updates: dict | None = None, flags: dict[str, str] | None = None) -> Config:
    """The base run's config (+ --set overrides and CLI updates, `flags` naming them in errors), with a fresh
    run name."""
    cfg = load_config(base_dir / ckpt.CONFIG, overrides, updates, flags)
    if not any(item.strip().startswith("paths.run_name=") for item in overrides or []):
        cfg.paths.run_name = None           # the base's run name is taken by the base's own fine-tunes
    return cfg


def check_compatible(base_dir: Path, base: Config, requested: Config, base_features: list[str],
                     features: list[str] | None = None) -> None:
    """One UserError line naming every shape key (and the feature list, once known) where they differ."""
    diffs = [f"{key} {_get(base, key)} (base) vs {_get(requested, key)} (requested)"
             for key in SHAPE_KEYS if _get(base, key) != _get(requested, key)]
    if (base.model.aux_weight > 0) != (requested.model.aux_weight > 0):
        diffs.append(f"model.aux_weight {base.model.aux_weight} (base) vs {requested.model.aux_weight} "
                     "(requested): the auxiliary head exists in only one")
    if features is not None and list(base_features) != list(features):
        only_base = [f for f in base_features if f not in features]
        only_new = [f for f in features if f not in base_features]
        what = f"base only: {', '.join(only_base) or '-'}; requested only: {', '.join(only_new) or '-'}"
        diffs.append(f"feature list ({what if only_base or only_new else 'same names, different order'})")
    if diffs:
        raise UserError(f"--base {base_dir}: incompatible with this fine-tune: {'; '.join(diffs)}")


# --- the stock's data --------------------------------------------------------------------------

def load_stock(symbol: str, config: Config, base_meta: dict, progress: bool = True) -> tuple[Panel, Splits]:
    panel = build_panel([symbol], config, Path(config.paths.root), progress=progress)
    return panel, splits_by_dates(panel, base_meta["splits"], config.data.context_length)


def load_model(config: Config, n_features: int, weights: dict, where: Path) -> AllocationTransformer:
    """A model of the run's shape holding the given weights, in eval mode, on the training device."""
    return ckpt.rebuild_model(config, n_features, weights, where, resolve_device(config.training.device))


# --- the fine-tune -----------------------------------------------------------------------------

def keep_the_better(result: FitResult, base_model: AllocationTransformer, job: TrainingJob) -> dict:
    """Keep the fine-tuned weights only if they beat the base on this stock's validation net Sharpe.

    Why: a fine-tune on one stock's few thousand bars can overfit and lose to the base it started
    from; by choice it must never make things worse. When the base is kept, its weights (calibrated
    to the volatility target on this stock's validation bars) replace the fine-tune's, in memory and
    in the run folder, and the log and metadata say so with both Sharpes.
    """
    import torch

    from hftraining.position_task import calibrate_output_scale

    device = next(result.model.parameters()).device
    x = torch.from_numpy(job.scaler.transform(job.panel)).to(device)
    tuned = validation_sharpe(result.model, job, x)
    base = validation_sharpe(base_model.to(device), job, x)
    kept_base = not tuned > base
    if kept_base:
        with torch.no_grad():
            result.model.load_state_dict(base_model.state_dict())
        if job.config.profit.position_sizing == "risk":
            calibrate_output_scale(result.model, job, x, job.splits.val)
        ckpt.save_tensors(result.best_path, result.model.state_dict())
        log.info("%s: the fine-tune's validation net Sharpe %.3f does not beat the base model's %.3f; "
                 "keeping the base weights", job.kind, tuned, base)
    else:
        log.info("%s: fine-tune validation net Sharpe %.3f beats the base model's %.3f", job.kind, tuned, base)
    return {"kept_base": kept_base, "validation_sharpe_finetuned": tuned, "validation_sharpe_base": base}


@dataclass
class FinetuneRun:
    symbol: str
    run_id: str
    run_dir: Path
    checkpoint: Path
    tensorboard_dir: Path
    model: AllocationTransformer
    base_model: AllocationTransformer
    fit: FitResult
    prepared: Prepared              # the stock's panel, the base's split dates, the base's scaler
    config: Config                  # as trained (with the fine-tune schedule)
    metadata: dict


def finetune_stock(symbol: str, base: str | Path, config: Config | None = None, epochs: float | None = None,
                   steps: int | None = None, run_id: str | None = None,
                   data: tuple[Panel, Splits] | None = None, progress: bool = True,
                   on_step: Callable[[int], None] | None = None) -> FinetuneRun:
    """Initialise from the base run's best weights and train on one stock with its own schedule.

    `config` defaults to the base run's; `data` (panel, splits) lets the base pipeline pass the
    stock's slice of its own panel instead of loading it again. Steps: `steps`, else
    ceil(epochs * training windows / batch size) with epochs = training.finetune_epochs by default.
    """
    symbol = normalize_symbol(symbol)
    base_files = ckpt.open_base(base)
    base_dir = base_files.path.resolve()
    config = (config or finetune_config_from_base(base_dir)).model_copy(deep=True)
    config.data.symbols = [symbol]
    resolve_device(config.training.device)
    check_compatible(base_dir, base_files.config, config, base_files.scaler.feature_names)  # before any data
    layout = Layout.at(config.paths.root)
    layout.ensure_writable()

    panel, splits = data if data is not None else distributed.main_first(
        lambda: load_stock(symbol, config, base_files.metadata, progress))
    distributed.agree(fingerprint(panel), "training data")
    check_compatible(base_dir, base_files.config, config, base_files.scaler.feature_names,
                     panel.feature_names)
    scaler = base_files.scaler
    pooled = symbol not in scaler.symbols
    if pooled:
        log.warning("%s: the base run %s never saw this symbol; scaling it with the base's pooled statistics",
                    symbol, base_dir.name)
    epochs = epochs if epochs is not None else config.training.finetune_epochs
    ctx = distributed.context()             # under torchrun each rank trains batch_size windows of each step
    n_steps = steps or finetune_steps(epochs, len(splits.train), config.training.batch_size * ctx.world_size)
    config = with_schedule(config, n_steps, evaluations=FINETUNE_EVALUATIONS)
    prepared = Prepared(panel, splits, scaler)

    run_id = distributed.broadcast(run_id or config.paths.run_name or new_run_id())
    stats = "pooled over the base's symbols (symbol not in the base)" if pooled else f"{symbol} (base)"
    tcfg = config.training
    spec = RunSpec(
        kind="finetune", label=f"finetune {symbol}", run_id=run_id, run_dir=layout.finetuned_model(symbol, run_id),
        tensorboard_dir=layout.tensorboard("finetuned", run_id, [symbol]), config=config, prepared=prepared,
        learning_rate=tcfg.finetune_learning_rate, max_steps=n_steps, init_weights=base_files.weights,
        progress=progress, on_step=on_step,
        metadata={"base_run": str(base_dir), "base_run_id": base_files.metadata.get("run_id"),
                  "base_symbols": base_files.metadata.get("symbols", scaler.symbols),
                  "scaler": {"from": str(base_dir / ckpt.SCALER), "stats": stats}, "symbol_in_base": not pooled,
                  "epochs": None if steps else epochs, "steps": n_steps,
                  "learning_rate": tcfg.finetune_learning_rate, "batch_size": tcfg.batch_size,
                  "world_size": ctx.world_size,
                  "global_batch_size": tcfg.batch_size * tcfg.grad_accum_steps * ctx.world_size},
        trials=[Trial("finetuned", [symbol], f"{run_id}/finetuned/{symbol}")])   # a comparison adds its test Sharpe
    base_model: list[AllocationTransformer] = []

    def keep_better(result: FitResult, job: TrainingJob) -> dict:
        base_model.append(load_model(config, len(panel.feature_names), base_files.weights, base_dir))  # same shape
        choice = keep_the_better(result, base_model[0], job) if ctx.is_main else {}
        if ctx.enabled:                     # every rank ends with the weights rank 0 kept
            distributed.broadcast_module(result.model)
        return choice

    done = train_run(spec, after_fit=keep_better)
    return FinetuneRun(symbol, run_id, done.run_dir, done.fit.best_path, spec.tensorboard_dir, done.fit.model,
                       base_model[0], done.fit, prepared, config, done.metadata)

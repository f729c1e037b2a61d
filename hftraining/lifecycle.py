"""One run's life on disk: claim its folder, write its metadata, train, finish, register the trial, report.

Every stage that trains (single, base, a single-from-scratch comparison, fine-tune, walk-forward
fold, portfolio) describes its run as a `RunSpec` and calls `train_run`:

  start   claim the run folder (and any folder that must be new with it), write config.yaml, the
          scaler, features.json and metadata.json (status running); a resumed run reopens its folder
  fit     the training loop (hftraining.trainer.fit, or the job the spec hands in)
  after   the stage's own step on the fitted model (a fine-tune keeps the better of tuned and base)
  test    the stage's test evaluation and report files (rank 0 only), when it has one
  finish  metadata.json: status completed, the fit's record and the stage's fields
  trial   the runs of the stage registered in trials.jsonl (the Deflated Sharpe counts them)
  report  report.html beside the test report

Under torchrun rank 0 alone writes; every rank fits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hftraining import checkpoint as ckpt
from hftraining import distributed, run_log
from hftraining.config import Config
from hftraining.data.panel import Scaler
from hftraining.errors import UserError
from hftraining.layout import claim_run_dir
from hftraining.prepare import Prepared, run_metadata
from hftraining.prior import hold_prior_unless_beaten, wanted
from hftraining.trainer import FitResult, TrainingJob


@dataclass
class Trial:
    """One entry of trials.jsonl this run adds: `trial_id` (default: the run id), kind and symbols."""

    kind: str
    symbols: list[str]
    trial_id: Optional[str] = None


@dataclass
class Tested:
    """What a stage's test step hands back: metadata fields, the test Sharpe of its trial, the report folder
    (report.html is written there) and anything else the stage needs (`value`)."""

    metadata: dict = field(default_factory=dict)
    test_sharpe: Optional[float] = None
    report_dir: Optional[Path] = None
    value: Any = None


@dataclass
class RunSpec:
    """Everything a run needs besides its stage-specific steps."""

    kind: str                              # metadata kind: single | base | finetune | walk_forward_fold | portfolio
    label: str                             # progress bar and log name, e.g. "single AAPL"
    run_id: str
    run_dir: Path                          # the folder to claim (or, resuming, to reopen)
    tensorboard_dir: Path
    config: Config                         # as trained; written as config.yaml
    prepared: Prepared
    learning_rate: float
    max_steps: int
    metadata: dict = field(default_factory=dict)      # extra fields of metadata.json
    also_claim: tuple[Path, ...] = ()      # folders that must be new with the run (a shared report folder)
    init_weights: Optional[dict] = None    # a fine-tune starts from these
    resume: bool = False
    progress: bool = True
    on_step: Optional[Callable[[int], None]] = None
    trials: list[Trial] = field(default_factory=list)
    job: Optional[Callable[["RunSpec", Path, dict], TrainingJob]] = None   # builds a custom job (portfolio)


@dataclass
class RunOutcome:
    run_id: str
    run_dir: Path
    tensorboard_dir: Path
    fit: FitResult
    metadata: dict
    tested: Tested
    report_html: Optional[str] = None


def resumed_data(run_dir: Path, prepared: Prepared) -> Prepared:
    """A resumed run continues on the bars it started with, scaled by its saved scaler (never refitted)."""
    meta = ckpt.read_json(run_dir / ckpt.METADATA)
    now = prepared.splits.as_dict(prepared.panel)
    for name in ("train", "val", "test"):
        then = (meta.get("splits") or {}).get(name)
        if then is not None and then != now[name]:
            raise UserError(
                f"--resume {run_dir}: the data changed since this run started ({name} was {then['start']} .. "
                f"{then['end']}, {then['bars']} bars; now {now[name]['start']} .. {now[name]['end']}, "
                f"{now[name]['bars']} bars); pin data.start/data.end to the run's dates or start a new run")
    scaler = Scaler.from_dict(ckpt.read_json(run_dir / ckpt.SCALER))
    if scaler.feature_names != prepared.panel.feature_names:
        raise UserError(f"--resume {run_dir}: the features differ from the run's scaler.json; "
                        "resume with the run's own config")
    return Prepared(prepared.panel, prepared.splits, scaler)


def start_run(spec: RunSpec) -> tuple[Path, dict]:
    """(run folder, metadata): claimed and written by rank 0, or the resumed run's own; rank 0's log lines
    go to logs/<run>.log from here on (hftraining.run_log)."""
    if spec.resume:
        distributed.on_main(lambda: run_log.attach(spec.config.paths.root, spec.run_id))
        return spec.run_dir, ckpt.read_json(spec.run_dir / ckpt.METADATA)
    meta = run_metadata(spec.kind, spec.run_id, spec.config, spec.prepared, **spec.metadata)

    def claim() -> Path:
        folder = claim_run_dir(spec.run_dir)
        claimed = [folder]
        try:                    # reports/<run> is shared by every symbol: a reused run name must not overwrite it
            for other in spec.also_claim:
                claimed.append(claim_run_dir(other))
        except UserError:
            for path in reversed(claimed):
                path.rmdir()
            raise
        ckpt.save_run_files(folder, spec.config, spec.prepared.scaler, meta)
        run_log.attach(spec.config.paths.root, spec.run_id)
        return folder

    return distributed.on_main(claim), meta


def training_job(spec: RunSpec, run_dir: Path, meta: dict) -> TrainingJob:
    """The single-asset model's job (trainer.fit); a spec with `job` builds its own."""
    if spec.job is not None:
        return spec.job(spec, run_dir, meta)
    p = spec.prepared
    return TrainingJob(config=spec.config, panel=p.panel, splits=p.splits, scaler=p.scaler, run_dir=run_dir,
                       tensorboard_dir=spec.tensorboard_dir, kind=spec.label, learning_rate=spec.learning_rate,
                       max_steps=spec.max_steps, metadata=meta, init_weights=spec.init_weights, resume=spec.resume,
                       progress=spec.progress, on_step=spec.on_step)


def finish_run(run_dir: Path, result: FitResult, **fields: Any) -> dict:
    """metadata.json of a finished run: status completed, the fit's record, the stage's fields."""
    return ckpt.update_metadata(run_dir, status="completed", best_step=result.best_step,
                                steps_done=result.steps_done, stopped_early=result.stopped_early,
                                device=result.device, validation=result.best_metrics, history=result.history,
                                nan_skipped=result.nan_skipped, **fields)


def train_run(spec: RunSpec, after_fit: Optional[Callable[[FitResult, TrainingJob], dict]] = None,
              test: Optional[Callable[[FitResult, Path, dict], Tested]] = None) -> RunOutcome:
    """start -> fit -> after_fit (every rank; returns metadata fields) -> the prior check (every rank; one-stock
    models from scratch, hftraining.prior) -> test (rank 0) -> finish -> trials -> report.

    Rank 0's outcome carries the finished metadata and the test; the other ranks' carry the metadata
    as started and an empty Tested.
    """
    from hftraining.trainer import fit

    run_dir, meta = start_run(spec)
    job = training_job(spec, run_dir, meta)
    result = fit(job)
    extra = after_fit(result, job) if after_fit is not None else {}
    if wanted(spec.config.training.prior_candidate, spec.kind, job.panel):
        extra.update(hold_prior_unless_beaten(result, job))
    if not distributed.context().is_main:
        return RunOutcome(spec.run_id, run_dir, spec.tensorboard_dir, result, meta, Tested())
    tested = test(result, run_dir, meta) if test is not None else Tested()
    meta = finish_run(run_dir, result, **extra, **tested.metadata)
    if spec.trials:
        from hftraining.trials import register_trial

        root = spec.config.paths.root
        for trial in spec.trials:
            register_trial(root, trial.trial_id or spec.run_id, trial.kind, trial.symbols,
                           result.best_metrics.get("sharpe_ratio"), tested.test_sharpe, run_dir=str(run_dir))
    html = None
    if tested.report_dir is not None:
        from hftraining.html_report import write_report_html

        html = write_report_html(tested.report_dir, run_dir)
    return RunOutcome(spec.run_id, run_dir, spec.tensorboard_dir, result, meta, tested, html)

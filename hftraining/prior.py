"""The always-long prior a model trained from scratch on one stock must beat on validation.

Why: on real stocks a single-asset model fits a great deal of noise, and the timing it learns can
lose to simply being long one unit of risk (the `vol_long` baseline: raw +1 sized by the same
risk sizing, same costs). Training that cannot make things worse than that prior by choice keeps its
weights only if their validation net Sharpe beats the prior's on the same bars; otherwise the run
holds the prior (the model's `holds_prior` buffer, saved with its weights, so every backtest, paper
trade and ensemble trades exactly raw +1), logs it and records both Sharpes in its metadata. This is
the single-stock counterpart of a fine-tune keeping its base (hftraining.finetune) and of the
portfolio policy's prior candidate.

`training.prior_candidate: auto` (the default) checks real data only. On a synthetic market the
planted drift has mean zero, so being long earns no premium there: the prior would win validation
only where that range happened to drift up, and trading it afterwards discards what the model learned
(on 30 tuning series of five markets the reports never use, it cut the mean test Sharpe from 1.04 to
0.46). It would also hide the synthetic market's purpose, measuring the edge training captured.
`true` checks every run, `false` none.
"""

from __future__ import annotations

import logging

import torch

from hftraining import checkpoint as ckpt
from hftraining import distributed

log = logging.getLogger("hftraining")


# Run kinds (hftraining.lifecycle.RunSpec.kind) of one-stock models trained from random weights: `single`
# runs (also a study's and `base --compare-single`'s) and walk-forward folds. Base models, fine-tunes
# (which keep their base instead) and portfolio policies (their own prior candidate) are not checked.
CHECKED_KINDS = ("single", "walk_forward_fold")


def wanted(setting, kind: str, panel) -> bool:
    """Whether a run of this kind on this panel is checked under `training.prior_candidate` (auto: real data)."""
    from hftraining.data.synthetic import SOURCE

    if kind not in CHECKED_KINDS:
        return False
    if setting == "auto":
        return not any(source == SOURCE for source in panel.data_source.values())
    return bool(setting)


def hold_prior_unless_beaten(result, job) -> dict:
    """Compare the selected, calibrated weights with the prior on a one-symbol job's validation range; keep the better.

    Returns the metadata block {"prior": {holds_prior, validation_sharpe_model, validation_sharpe_prior}}.
    A tie holds the prior: training must beat it to trade.
    """
    from hftraining.evaluation import validation_sharpe

    model = result.model
    x = torch.from_numpy(job.scaler.transform(job.panel)).to(next(model.parameters()).device)
    with torch.no_grad():
        model.holds_prior.fill_(False)
        trained = validation_sharpe(model, job, x)
        model.holds_prior.fill_(True)
        prior = validation_sharpe(model, job, x)
        holds = not trained > prior
        model.holds_prior.fill_(holds)
    if holds:
        if distributed.context().is_main:
            ckpt.save_tensors(result.best_path, model.state_dict())
        log.info("%s: the trained model's validation net Sharpe %.3f does not beat the always-long prior's %.3f; "
                 "this run holds the prior (raw +1 in risk units)", job.kind, trained, prior)
    else:
        log.info("%s: validation net Sharpe %.3f beats the always-long prior's %.3f", job.kind, trained, prior)
    return {"prior": {"holds_prior": holds, "validation_sharpe_model": trained, "validation_sharpe_prior": prior}}

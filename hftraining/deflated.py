"""The Deflated Sharpe of a result, with N counted from the trial registry each time its report is written.

A DSR frozen when a run ends would say N = 3 for the 3rd of 20 configurations forever, though the
registry keeps growing. So the DSR stores which trials it competes with (its symbol set and run id)
and is recomputed from every trial registered under the output root whenever the report is
(re)written, `hftrain report` included; it also says what N is and where it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hftraining import atomic
from hftraining.significance import deflated_sharpe_ratio, finite_or_none
from hftraining.trials import TrialScope


def deflated(scope: TrialScope, net_returns, sharpe: float | None, periods_per_year: int) -> dict:
    """DSR of `net_returns` against the trials `scope` competes with, as registered now (JSON-ready)."""
    n_trials, sharpes = scope.stats(sharpe)
    out = deflated_sharpe_ratio(np.asarray(net_returns, dtype=np.float64), n_trials, sharpes, periods_per_year)
    return finite_or_none({**out, "n_trials_source": scope.source(n_trials), "trials": scope.describe(),
                           "periods_per_year": periods_per_year})


def refresh_report(report_dir: Path) -> int:
    """Recount N and recompute the DSR in every metrics file of a report that records its trials.

    The output root is the folder holding `reports/`. Reports written before the DSR recorded its trials
    keep their numbers. Returns how many metrics files were updated.
    """
    report_dir = Path(report_dir)
    root = report_dir.parent.parent
    updated = 0
    for path in sorted(report_dir.glob("*metrics.json")):
        summary = json.loads(path.read_text())
        sig = summary.get("significance") or {}
        old = sig.get("deflated") or {}
        returns = report_dir / f"{path.name[: -len('metrics.json')]}test_returns.csv"
        if not old.get("trials") or not returns.is_file():
            continue
        scope = TrialScope(root, **old["trials"])
        net = pd.read_csv(returns)["net_return"].to_numpy()
        sig["deflated"] = deflated(scope, net, sig.get("sharpe_ratio"), int(old.get("periods_per_year") or 252))
        atomic.write_json(path, summary)
        updated += 1
    return updated

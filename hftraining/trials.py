"""The trial registry `runs/trials.jsonl`: one line per training run of a symbol or group.

Why: a Sharpe ratio picked as the best of N tries is inflated by the picking. The Deflated Sharpe
ratio (hftraining.significance) needs N and the spread of the Sharpes of those tries, so every
training run appends what it measured here. The file is append-only (one `write` of one line per
run, O_APPEND, so concurrent runs do not interleave); a re-registered run id (a resumed run)
replaces its earlier line when read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hftraining.layout import Layout, normalize_symbol

log = logging.getLogger("hftraining")

TRIALS_FILE = "trials.jsonl"


def trials_path(root: str | Path) -> Path:
    return Layout.at(root).root / TRIALS_FILE


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def register_trial(root: str | Path, run_id: str, kind: str, symbols: Iterable[str],
                   val_sharpe: float | None, test_sharpe: float | None,
                   date: str | None = None, **extra) -> dict:
    """Append one trial (annualised Sharpes, None when unknown) and return the record written."""
    record = {
        "run_id": str(run_id),
        "kind": str(kind),
        "symbols": [normalize_symbol(s) for s in symbols],
        "val_sharpe": _number(val_sharpe),
        "test_sharpe": _number(test_sharpe),
        "date": date or time.strftime("%Y-%m-%dT%H:%M:%S"),
        **extra,
    }
    path = trials_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read_trials(root: str | Path, symbols: Iterable[str] | None = None) -> list[dict]:
    """Trials in file order, one per run id (the last line wins).

    `symbols` keeps the trials of exactly that symbol set (order ignored): the tries that compete
    with a model of those symbols. A malformed line is skipped with a warning, never fatal.
    """
    path = trials_path(root)
    if not path.is_file():
        return []
    wanted = None if symbols is None else sorted(normalize_symbol(s) for s in symbols)
    by_run: dict[str, dict] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            run_id = str(record["run_id"])
            record_symbols = sorted(record.get("symbols") or [])
        except (json.JSONDecodeError, KeyError, TypeError):
            log.warning("%s line %d: not a trial record, skipped", path, number)
            continue
        if wanted is None or record_symbols == wanted:
            by_run.pop(run_id, None)
            by_run[run_id] = record
    return list(by_run.values())


def count_trials(root: str | Path, symbols: Iterable[str] | None = None) -> int:
    return len(read_trials(root, symbols))


def trial_sharpes(root: str | Path, symbols: Iterable[str] | None = None, key: str = "test_sharpe",
                  exclude_run: str | None = None) -> list[float]:
    """The finite annualised Sharpes (`test_sharpe` or `val_sharpe`) of the registered trials."""
    values = []
    for record in read_trials(root, symbols):
        if exclude_run is not None and record["run_id"] == exclude_run:
            continue
        value = _number(record.get(key))
        if value is not None:
            values.append(value)
    return values


@dataclass
class TrialScope:
    """The registered trials a result competes with, and whether the result is itself a new trial.

    A training run being evaluated is not registered yet (it registers after its report), so it is
    counted in here; a backtest of an existing model is not a new trial.
    """

    root: Path
    symbols: list[str]
    run_id: str | None = None
    new_trial: bool = True

    def stats(self, sharpe: float | None = None) -> tuple[int, list[float]]:
        """(number of trials, their annualised test Sharpes) for the Deflated Sharpe ratio.

        The result itself is always one of the trials: a new trial with `sharpe`, an existing run with
        its registered test Sharpe (or `sharpe` when it was trained under another output root).
        """
        records = read_trials(self.root, self.symbols)
        others = [r.get("test_sharpe") for r in records if r["run_id"] != self.run_id]
        registered = [r.get("test_sharpe") for r in records if r["run_id"] == self.run_id]
        mine = registered if registered and not self.new_trial else [sharpe]
        return len(others) + 1, [s for s in map(_number, others + mine) if s is not None]

    def describe(self) -> dict:
        """What a report stores so the count can be redone when it is rewritten (the root is where it lives)."""
        return {"symbols": sorted(normalize_symbol(s) for s in self.symbols), "run_id": self.run_id,
                "new_trial": self.new_trial}

    def source(self, n_trials: int) -> str:
        """Where N came from, in words, for the report."""
        records = [r for r in read_trials(self.root, self.symbols) if r["run_id"] != self.run_id]
        kinds: dict[str, int] = {}
        for r in records:
            kinds[str(r.get("kind"))] = kinds.get(str(r.get("kind")), 0) + 1
        listed = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        return (f"{len(records)} other trial(s) of {'+'.join(self.describe()['symbols'])} in {trials_path(self.root)}"
                f"{f' ({listed})' if listed else ''} plus this {'run' if self.new_trial else 'model'}, "
                f"counted {time.strftime('%Y-%m-%d %H:%M:%S')}: N = {n_trials}")

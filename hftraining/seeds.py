"""Multi-seed runs (`hftrain single --seeds 0 1 2`): how much of a result is the luck of the initialisation?

Trains one ordinary `single` run per training seed (same data, same splits; only weights, batch order
and dropout change) and reports the mean and sample standard deviation (ddof=1) of the validation and
test metrics across seeds. A test Sharpe whose spread across seeds is as large as its mean is noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from hftraining import atomic
from hftraining.config import Config
from hftraining.errors import UserError
from hftraining.layout import Layout, new_run_id, normalize_symbol
from hftraining.report import _clean

SHOWN = ["total_return", "sharpe_ratio", "max_drawdown", "win_rate", "trade_count"]


def mean_std(rows: Sequence[dict]) -> dict[str, dict]:
    """{metric: {mean, std, n}} over the rows where each numeric metric is defined (std with ddof=1; 0 for
    one row). A metric that is undefined in some rows (a win rate with no closed trade) has a smaller n."""
    if not rows:
        return {}
    keys = [k for k in rows[0] if all(r.get(k) is None or isinstance(r.get(k), (int, float)) for r in rows)
            and any(r.get(k) is not None for r in rows)]
    out = {}
    for key in keys:
        values = np.array([float(r[key]) for r in rows if r.get(key) is not None])
        out[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values)}
    return out


@dataclass
class SeedsResult:
    group_id: str
    report_dir: Path
    runs: list[dict]
    summary: dict


def run_seeds(stock: str, config: Config, seeds: Sequence[int], progress: bool = True) -> SeedsResult:
    """One `single` run per seed (run ids <group>-seed<N>), then seeds.json with mean ± std."""
    from hftraining.train_with_profit import run_single

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("--seeds: give at least one seed, e.g. --seeds 0 1 2")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds: seed {repeated[0]} is given twice; each seed trains one run")
    symbol = normalize_symbol(stock)
    group_id = config.paths.run_name or new_run_id("seeds-")
    report_dir = Layout.at(config.paths.root).report(group_id)
    runs: list[dict] = []
    buy_and_hold: Optional[dict] = None
    for seed in seeds:
        cfg = config.model_copy(deep=True)
        cfg.training.seed = seed
        cfg.paths.run_name = f"{group_id}-seed{seed}"
        run = run_single(symbol, cfg, progress=progress)
        buy_and_hold = run.summary["buy_and_hold"]
        runs.append({"seed": seed, "run_id": run.summary["run_id"], "run_dir": str(run.run_dir),
                     "report_dir": str(run.report_dir), "best_step": run.fit.best_step,
                     "validation": _clean(run.fit.best_metrics), "test": run.summary["test"]})
    summary = {"group_id": group_id, "symbol": symbol, "seeds": seeds, "report_dir": str(report_dir),
               "synthetic": run.summary["synthetic"], "test_start": run.test["test_start"],
               "test_end": run.test["test_end"],
               "validation": mean_std([r["validation"] for r in runs]), "test": mean_std([r["test"] for r in runs]),
               "buy_and_hold": buy_and_hold, "runs": runs}
    atomic.write_json(report_dir / "seeds.json", summary)
    return SeedsResult(group_id, report_dir, runs, summary)


def format_seeds_table(result: SeedsResult, keys: Sequence[str] = SHOWN) -> str:
    """Per-seed test metrics, then mean ± std of validation and test, then buy-and-hold."""
    width = max(len("validation mean±std"), *(len(f"seed {r['seed']}") for r in result.runs)) + 2
    lines = [" " * width + "".join(f"{k:>22}" for k in keys)]

    def cell(v) -> str:
        return f"{'n/a':>22}" if v is None else f"{v:>22.4f}"

    for r in result.runs:
        lines.append(f"{'seed ' + str(r['seed']):<{width}}" + "".join(cell(r["test"].get(k)) for k in keys))
    for name in ("validation", "test"):
        stats = result.summary[name]
        row = "".join(f"{'-':>22}" if k not in stats else
                      f"{stats[k]['mean']:.4f} ± {stats[k]['std']:.4f}".rjust(22) for k in keys)
        lines.append(f"{name + ' mean±std':<{width}}" + row)
    bh = result.summary["buy_and_hold"] or {}
    lines.append(f"{'buy_and_hold':<{width}}" + "".join(cell(bh.get(k)) for k in keys))
    return "\n".join(lines)

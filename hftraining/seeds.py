"""Multi-seed runs (`hftrain single --seeds 0 1 2`): how much of a result is the luck of the initialisation?

Trains one ordinary `single` run per training seed (same data, same splits; only weights, batch order
and dropout change) and reports the mean and sample standard deviation (ddof=1) of the validation and
test metrics across seeds. A test Sharpe whose spread across seeds is as large as its mean is noise.
The group's report folder holds metrics.json (every seed's run, mean ± std, the baselines on the same
bars) and report.html, which links each seed's own report.
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
from hftraining.metrics import COUNTS
from hftraining.report import _clean

SHOWN = ["total_return", "sharpe_ratio", "max_drawdown", "volatility", "mean_abs_position", "win_rate", "trade_count"]


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
    """One `single` run per seed (run ids <group>-seed<N>), then metrics.json with mean ± std and report.html."""
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
    baselines: dict = {}
    for seed in seeds:
        cfg = config.model_copy(deep=True)
        cfg.training.seed = seed
        cfg.paths.run_name = f"{group_id}-seed{seed}"
        run = run_single(symbol, cfg, progress=progress)
        baselines = run.summary["baselines"]          # the same bars and costs for every seed
        runs.append({"seed": seed, "run_id": run.summary["run_id"], "run_dir": str(run.run_dir),
                     "report_dir": str(run.report_dir), "report_html": run.summary.get("report_html"),
                     "best_step": run.fit.best_step, "validation": _clean(run.fit.best_metrics),
                     "test": run.summary["test"], "significance": run.summary.get("significance")})
    summary = {"group_id": group_id, "kind": "seeds", "symbol": symbol, "symbols": [symbol], "seeds": seeds,
               "report_dir": str(report_dir), "synthetic": run.summary["synthetic"],
               "test_start": run.test["test_start"], "test_end": run.test["test_end"],
               "validation": mean_std([r["validation"] for r in runs]), "test": mean_std([r["test"] for r in runs]),
               "buy_and_hold": baselines.get("buy_and_hold"), "baselines": baselines, "runs": runs}
    atomic.write_json(report_dir / "metrics.json", summary)
    summary["report_html"] = str(write_seeds_html(report_dir, summary))
    return SeedsResult(group_id, report_dir, runs, summary)


def write_seeds_html(report_dir: Path, summary: dict, out: Optional[Path] = None) -> Path:
    """report.html of a seeds group (in `out` when given): each seed's test row (linking its own report), mean
    and std over seeds, the baselines on the same bars, and the verdict of the mean against the best of them."""
    import html
    import os

    from hftraining.html_page import page
    from hftraining.html_report import baseline_comparison, metrics_table, write_page

    rows = {f"seed {r['seed']}": r["test"] for r in summary["runs"]}
    stats = summary["test"]
    rows["mean over seeds"] = {k: v["mean"] for k, v in stats.items()}
    rows["std over seeds"] = {k: v["std"] for k, v in stats.items()}
    rows.update(summary.get("baselines") or {})
    links = "".join(
        f'<li><a href="{html.escape(os.path.relpath(r["report_html"], out or report_dir))}">seed {r["seed"]}: '
        f'{html.escape(r["run_id"])}</a></li>' for r in summary["runs"] if r.get("report_html"))
    banner = ('<div class="banner synthetic">SYNTHETIC DATA: these prices were generated, not observed.</div>'
              if summary.get("synthetic") else "")
    body = (f"<h1>Seeds {html.escape(summary['group_id'])} — {html.escape(summary['symbol'])}</h1>{banner}"
            f'<p class="sub">{len(summary["seeds"])} runs of one config that differ only in the training seed; '
            f"test {summary['test_start']} .. {summary['test_end']}, net of costs. A test Sharpe whose spread "
            "over seeds is as large as its mean is noise.</p>"
            f'<div class="card"><h3>Test, per seed and over seeds, vs baselines</h3>{metrics_table(rows)}'
            f"{baseline_comparison({'model': rows['mean over seeds'], **(summary.get('baselines') or {})})}</div>"
            f'<div class="card"><h3>Each seed\'s report</h3><ul>{links}</ul></div>')
    return write_page(report_dir, page(f"Seeds {summary['group_id']}", body), out)


def format_seeds_table(result: SeedsResult, keys: Sequence[str] = SHOWN) -> str:
    """Per-seed test metrics, then mean ± std of validation and test, then the baselines on the same bars."""
    width = max(len("validation mean±std"), *(len(f"seed {r['seed']}") for r in result.runs)) + 2
    lines = [" " * width + "".join(f"{k:>22}" for k in keys)]

    def cell(v, key: str) -> str:
        if v is None:
            return f"{'n/a':>22}"
        return f"{int(round(v)):>22}" if key in COUNTS else f"{v:>22.4f}"

    for r in result.runs:
        lines.append(f"{'seed ' + str(r['seed']):<{width}}" + "".join(cell(r["test"].get(k), k) for k in keys))
    for name in ("validation", "test"):
        stats = result.summary[name]
        digits = {k: 1 if k in COUNTS else 4 for k in keys}         # a count's mean has no four decimals
        row = "".join(f"{'-':>22}" if k not in stats else
                      f"{stats[k]['mean']:.{digits[k]}f} ± {stats[k]['std']:.{digits[k]}f}".rjust(22) for k in keys)
        lines.append(f"{name + ' mean±std':<{width}}" + row)
    for name, metrics in (result.summary.get("baselines") or {}).items():
        lines.append(f"{name:<{width}}" + "".join(cell(metrics.get(k), k) for k in keys))
    return "\n".join(lines)

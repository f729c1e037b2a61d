"""`hftrain portfolio` (and `--walk-forward`): one allocation policy per --pairs group; the tables, --json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from hftraining.commands.common import ConfigOptions, Output, significance_line
from hftraining.config import Config
from hftraining.errors import UserError

TABLE_KEYS = ["total_return", "sharpe_ratio", "max_drawdown", "volatility", "period_win_rate", "trade_count",
              "rebal_turnover"]


def group_configs(pairs: list[str], options: ConfigOptions) -> list[tuple[list[str], Config]]:
    """`--pairs A,B --pairs C,D,E` -> (group, config) per group; --steps sets portfolio.max_steps and a
    run name is suffixed with the group when there are several, so groups never share a run folder."""
    from hftraining.layout import parse_symbols

    groups = []
    for value in pairs:
        group = parse_symbols(value)
        if len(group) < 2:
            raise UserError(f"--pairs {value}: a group needs at least two different symbols, e.g. AAPL,MSFT")
        groups.append(group)
    cfg = options.build(symbols=groups[0], extra={"portfolio.max_steps": options.steps}, use_steps=False)
    out = []
    for group in groups:
        group_cfg = cfg.model_copy(deep=True)
        if cfg.paths.run_name and len(groups) > 1:
            group_cfg.paths.run_name = f"{cfg.paths.run_name}-{'_'.join(group)}"
        out.append((group, group_cfg))
    return out


def portfolio(pairs: Optional[list[str]], options: ConfigOptions, base_run: Optional[Path] = None,
              resume: Optional[Path] = None, walk_forward: bool = False, retrain_every: Optional[int] = None,
              walk_forward_window: Optional[str] = None, json_: bool = False, quiet: bool = False) -> list:
    """`hftrain portfolio --pairs A,B [--pairs C,D,E] [--walk-forward]`: one model (or walk-forward) per group;
    `--resume RUN_DIR` continues one run from its last checkpoint, with its own config."""
    if not walk_forward and (retrain_every is not None or walk_forward_window is not None):
        raise UserError("--retrain-every and --walk-forward-window need --walk-forward")
    from hftraining.distributed import is_main_process
    from hftraining.portfolio import run_portfolio
    from hftraining.walk_forward import run_walk_forward_portfolio

    if resume is not None:
        if pairs or walk_forward or base_run is not None:
            raise UserError("--resume continues one run with its own groups and base; drop --pairs, --base and "
                            "--walk-forward")
        from hftraining.commands.common import finished, resume_config

        cfg = resume_config(resume, options, steps_key="portfolio.max_steps")
        if cfg is None:                             # already finished: nothing to do
            finished(Output(json_), resume, runs_list=True)
            return []
        groups = [(list(cfg.data.symbols), cfg)]
    elif not pairs:
        raise UserError("--pairs: give at least one group, e.g. --pairs AAPL,MSFT (or --resume RUN_DIR)")
    else:
        groups = group_configs(pairs, options)
    results = []
    out = Output(json_)
    for group, group_cfg in groups:
        if walk_forward:
            result = run_walk_forward_portfolio(group, group_cfg, retrain_every or 252,
                                                walk_forward_window or "expanding", base_run, progress=not quiet)
            from hftraining.commands.single import print_walk_forward

            result.summary["verdict"] = print_walk_forward(out, result)
        else:
            start_time = time.time()
            result = run_portfolio(group, group_cfg, base_run=base_run, progress=not quiet, resume=resume)
            if not is_main_process():               # under torchrun rank 0 alone prints
                continue
            result.summary["seconds"] = round(time.time() - start_time, 1)
            result.summary["verdict"] = print_portfolio(out, result.summary)
        results.append(result)
    if not is_main_process():
        return results
    out.json_summary({"runs": [r.summary for r in results]})
    return results


def print_portfolio(out: Output, s: dict, title: bool = True) -> Optional[str]:
    """The policy's test table against 1/N, buy-and-hold, each asset, minimum variance and momentum; the verdict
    against the best of them, significance, its mean weights and where things are. Returns the verdict."""
    from hftraining.report import format_table

    label = " (SYNTHETIC market)" if s["synthetic"] else ""
    weights = ", ".join(f"{k} {v:.2f}" for k, v in s["mean_weights"].items())
    heading = (f"portfolio {'_'.join(s['symbols'])}{label} test {s['test_start']} .. {s['test_end']} "
               f"({s['test_bars']} bars, rebalance every {s['rebalance_every']}, net of "
               f"{s['cost_per_turnover'] * 1e4:g} bps per unit turnover)")
    if title:
        out.title(heading)
    else:
        out.line(heading)
    out.line(format_table({"policy": s["test"], **s["baselines"]}, TABLE_KEYS))
    verdict = out.verdict({"model": s["test"], **s["baselines"]})
    if s.get("significance"):
        out.line(significance_line(s))
    out.line(f"mean target weights: {weights}")
    out.paths(run=s["run_dir"], report=s.get("report_html") or s["report_dir"], log=s.get("log"),
              tensorboard=f"tensorboard --logdir {Path(s['tensorboard_dir']).parent.parent}")
    return verdict

"""`hftrain single` (one run, `--resume`, `--walk-forward`, `--seeds`) and `hftrain study`: run, print, --json."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hftraining.commands.common import (
    ConfigOptions,
    Output,
    finished,
    prior_line,
    resume_config,
    significance_line,
    symbols_of,
)
from hftraining.errors import UserError

SUMMARY_KEYS = ["total_return", "sharpe_ratio", "max_drawdown", "volatility", "mean_abs_position",
                "total_return_at_target", "max_drawdown_at_target", "trade_count"]


def single(stock: Optional[str], options: ConfigOptions, resume: Optional[Path] = None, walk_forward: bool = False,
           retrain_every: Optional[int] = None, walk_forward_window: Optional[str] = None,
           seeds: Optional[list[int]] = None, json_: bool = False, quiet: bool = False) -> None:
    """Train one stock (or resume, walk forward, or repeat over seeds) and print its test table.

    Without --stock the config's first data.symbols is trained; `--resume` of a finished run says so and trains
    nothing."""
    from hftraining.distributed import is_main_process
    from hftraining.train_with_profit import run_single

    if walk_forward or seeds or retrain_every is not None or walk_forward_window is not None:
        _variant(stock, options, resume, walk_forward, retrain_every, walk_forward_window, seeds, json_, quiet)
        return
    if resume is not None:
        cfg = resume_config(resume, options, stock=stock)
        if cfg is None:                             # already finished: nothing to do
            finished(Output(json_), resume)
            return
    else:
        cfg = options.build(symbols=symbols_of([stock]) if stock else None)
    run = run_single(cfg.data.symbols[0], cfg, resume=resume, progress=not quiet)
    if not is_main_process():                       # under torchrun rank 0 alone prints
        return
    out = Output(json_)
    verdict = print_single(out, run)
    out.json_summary({**run.summary, "verdict": verdict})


def _variant(stock: Optional[str], options: ConfigOptions, resume: Optional[Path], walk_forward: bool,
             retrain_every: Optional[int], window: Optional[str], seeds: Optional[list[int]], json_: bool,
             quiet: bool) -> None:
    """`single --walk-forward ...` or `single --seeds ...`: check the combination, run, print."""
    if not walk_forward and (retrain_every is not None or window is not None):
        raise UserError("--retrain-every and --walk-forward-window need --walk-forward")
    if resume is not None:
        raise UserError("--resume continues one run; it cannot be combined with --walk-forward or --seeds")
    if walk_forward and seeds:
        raise UserError("--walk-forward and --seeds cannot be combined yet; run one walk-forward per --seed")
    if seeds and options.seed is not None:
        raise UserError("--seed and --seeds cannot be combined; use --seeds alone")
    cfg = options.build(symbols=symbols_of([stock]) if stock else None)
    stock = cfg.data.symbols[0]
    out = Output(json_)
    if walk_forward:
        from hftraining.walk_forward import run_walk_forward

        result = run_walk_forward(stock, cfg, retrain_every or 252, window or "expanding", progress=not quiet)
        verdict = print_walk_forward(out, result)
    else:
        from hftraining.seeds import run_seeds

        result = run_seeds(stock, cfg, seeds, progress=not quiet)
        verdict = print_seeds(out, result)
    out.json_summary({**result.summary, "verdict": verdict})


def print_single(out: Output, run) -> Optional[str]:
    """The test table of one run (model, buy-and-hold, momentum, oracle), the verdict against the best
    baseline, significance and where things are. Returns the verdict."""
    from hftraining.report import format_table

    label = " (SYNTHETIC market)" if run.summary["synthetic"] else ""
    rows = {"model": run.test["model"], **run.test["baselines"]}
    out.title(f"{run.summary['symbol']}{label} test {run.test['test_start']} .. {run.test['test_end']} "
              f"({run.test['test_bars']} bars, net of costs, forecaster: {run.summary['forecast_backend']})")
    out.line(format_table(rows, SUMMARY_KEYS))
    out.line(f"(volatility: annualised, of the net returns; mean_abs_position: average |traded position|; "
             f"*_at_target: rescaled to {run.test.get('sigma_target', 0.15):.0%} annual volatility)")
    verdict = out.verdict(rows)
    out.line(significance_line(run.test))
    if held := prior_line(run.summary.get("prior")):
        out.line(held)
    out.paths(run=run.run_dir, report=run.summary.get("report_html") or run.report_dir,
              log=run.summary.get("log"),
              tensorboard=f"tensorboard --logdir {run.tensorboard_dir.parent.parent}")
    return verdict


def print_walk_forward(out: Output, result) -> Optional[str]:
    """Per-fold and stitched test metrics of a walk-forward (single stock or portfolio group); the verdict."""
    from hftraining.report import format_table

    s = result.summary
    label = " (SYNTHETIC market)" if s["synthetic"] else ""
    out.title(f"{s['symbol']}{label} walk-forward, {s['folds']} folds ({s['window']}, retrain every "
              f"{s['retrain_every']} bars): stitched test {s['test_start']} .. {s['test_end']} "
              f"({s['test_bars']} bars, net of costs)")
    rows = {f"fold {r.fold.index} ({len(r.fold.test)} bars)": r.test for r in result.folds}
    rows.update({"stitched": s["test"], **s["baselines"]})
    out.line(format_table(rows))
    verdict = out.verdict({"model": s["test"], **s["baselines"]})
    if s.get("significance"):
        out.line(significance_line(s))
    out.paths(report=s.get("report_html") or result.report_dir)
    return verdict


def print_seeds(out: Output, result) -> Optional[str]:
    """Per-seed test rows, mean ± std, the baselines; the verdict on the mean test Sharpe over seeds."""
    from hftraining.seeds import format_seeds_table

    s = result.summary
    label = " (SYNTHETIC market)" if s["synthetic"] else ""
    out.title(f"{s['symbol']}{label} {len(s['seeds'])} seeds, test {s['test_start']} .. "
              f"{s['test_end']} (net of costs; rows per seed are test metrics)")
    out.line(format_seeds_table(result))
    mean = (s["test"].get("sharpe_ratio") or {}).get("mean")
    verdict = out.verdict({"model": {"sharpe_ratio": mean}, **(s.get("baselines") or {})})
    out.paths(report=s.get("report_html") or result.report_dir)
    return verdict


def study(stocks: Optional[list[str]], stocks_file: Optional[Path], mode: str, pairs: Optional[list[str]],
          seeds: Optional[list[int]], walk_forward: bool, retrain_every: int, options: ConfigOptions,
          json_: bool = False, quiet: bool = False) -> None:
    """`hftrain study`: one config over many tickers (or groups); the table, metrics.json and report.html."""
    from hftraining.data.universe import read_stocks_file
    from hftraining.study import format_study, run_study

    symbols = symbols_of(stocks) + (read_stocks_file(stocks_file) if stocks_file else [])
    groups = None
    if mode == "portfolio" or pairs:
        groups, symbols = study_groups(pairs, mode, symbols)
    if not symbols:
        raise UserError("hftrain study: no stocks given; use --stocks AAPL MSFT ... or --stocks-file FILE")
    if walk_forward:
        if mode not in ("single", "walk_forward"):
            raise UserError(f"--walk-forward and --mode {mode} cannot be combined")
        mode = "walk_forward"
    if seeds and options.seed is not None:
        raise UserError("--seed and --seeds cannot be combined; use --seeds alone")
    portfolio_steps = {"portfolio.max_steps": options.steps} if groups else None   # --steps: the policy's steps
    cfg = options.build(symbols=list(dict.fromkeys(symbols)), extra=portfolio_steps, use_steps=not groups)
    result = run_study(cfg.data.symbols, cfg, mode, seeds or [cfg.training.seed], retrain_every,
                       progress=not quiet, groups=groups)
    out = Output(json_)
    out.line(format_study(result))
    out.json_summary(result.summary)


def study_groups(pairs: Optional[list[str]], mode: str, stocks: list[str]) -> tuple[list[list[str]], list[str]]:
    """`hftrain study --mode portfolio --pairs A,B --pairs C,D,E`: the groups, and their symbols in order."""
    from hftraining.layout import parse_symbols
    from hftraining.study import portfolio_groups

    if stocks:
        raise UserError("hftrain study --mode portfolio: give the groups with --pairs, not --stocks")
    groups = portfolio_groups([parse_symbols(p) for p in pairs or []], mode)
    return groups, list(dict.fromkeys(s for g in groups for s in g))


"""`hftrain base`, `finetune` and `pipeline`: a base model on many stocks, its fine-tunes, the portfolio stage.

Each prints, per stock, the comparison table (the leading model, the base, buy-and-hold, momentum, ...),
its verdict against the best baseline, the paths of the runs and the report; `pipeline` then prints each
portfolio group as `hftrain portfolio` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hftraining.commands.common import FLAGS, ConfigOptions, Output, check_dates, symbols_of, universe


def stock_rows(stock: dict) -> dict[str, dict]:
    """One stock's strategies with the leading model (fine-tuned, else base) as "model", the way its
    <SYMBOL>_metrics.json and report.html put them, so the verdict printed is the page's."""
    strategies = dict(stock["strategies"])
    lead = stock.get("model_name") or next(iter(strategies))
    return {"model": strategies.pop(lead), **strategies}


def format_report(report: dict) -> str:
    """The printed comparison: one block per stock with its verdict, then the average over stocks."""
    from hftraining.report import format_table
    from hftraining.verdict import against_best_baseline

    blocks = []
    label = " (SYNTHETIC market)" if report.get("synthetic") else ""
    for symbol, stock in report["stocks"].items():
        verdict = against_best_baseline(stock_rows(stock))
        blocks.append(f"{symbol}{label}: test {stock['test_start']} .. {stock['test_end']} "
                      f"({stock['test_bars']} bars, net of costs)\n" + format_table(stock["strategies"])
                      + (f"\n{symbol}: {verdict}" if verdict else ""))
    if len(report["stocks"]) > 1:
        blocks.append(f"average over {len(report['stocks'])} stocks\n" + format_table(report["average"]))
    return "\n\n".join(blocks)


def verdicts(report: dict) -> dict[str, str | None]:
    """Each stock's verdict against its best baseline, for --json."""
    from hftraining.verdict import against_best_baseline

    return {symbol: against_best_baseline(stock_rows(stock)) for symbol, stock in report["stocks"].items()}


def base(stocks: Optional[list[str]], stocks_file: Optional[Path], options: ConfigOptions, finetune: bool = True,
         base_steps: Optional[int] = None, finetune_epochs: Optional[int] = None, batch_size: Optional[int] = None,
         compare_single: bool = False, json_: bool = False, quiet: bool = False) -> None:
    """`hftrain base`: --batch-size applies to every stage; --steps (training.max_steps) is the base's default
    step count and the single-from-scratch schedule; --base-steps overrides the base's alone."""
    from hftraining.base_model_trainer import run_base_pipeline
    from hftraining.distributed import is_main_process
    from hftraining.layout import Layout

    symbols = universe(stocks, stocks_file, "base")     # none is an error, never the config's default ticker
    cfg = options.build(symbols=symbols, extra={"training.batch_size": batch_size})
    run = run_base_pipeline(cfg.data.symbols, cfg, finetune=finetune, base_steps=base_steps,
                            finetune_epochs=finetune_epochs, compare_single=compare_single, progress=not quiet)
    if not is_main_process():                       # under torchrun rank 0 alone prints
        return
    out = Output(json_)
    out.line("\n" + format_report(run.report))
    out.paths(base=run.base.run_dir, report=run.summary.get("report_html") or run.report_dir,
              log=run.summary.get("log"),
              tensorboard=f"tensorboard --logdir {Layout.at(cfg.paths.root).root / 'tensorboard'}")
    out.json_summary({**run.summary, "verdict": verdicts(run.report)})


def finetune(stock: str, base_run: Path, options: ConfigOptions, epochs: Optional[int] = None,
             json_: bool = False, quiet: bool = False) -> None:
    """`hftrain finetune`: without --config the base run's own config (+ --set) is used; with one, it
    must agree with the base on model shape and features. --steps overrides the epochs rule."""
    from hftraining.base_model_trainer import run_finetune
    from hftraining.checkpoint import open_base
    from hftraining.distributed import is_main_process
    from hftraining.finetune import finetune_config_from_base

    base_dir = open_base(base_run).path.resolve()
    o = options
    if o.config is None:
        updates = {"paths.root": str(o.out) if o.out else None,
                   "data.source": o.source or ("csv" if o.data_dir else None),
                   "data.data_dir": str(o.data_dir) if o.data_dir else None, "data.start": o.start,
                   "data.end": o.end, "training.device": o.device, "training.seed": o.seed}
        check_dates(o.start, o.end)
        cfg = finetune_config_from_base(base_dir, o.set_, updates, FLAGS)
    else:
        cfg = options.build(use_steps=False)
    _, report, summary = run_finetune(stock, base_dir, cfg, epochs=epochs, steps=o.steps, progress=not quiet)
    if not is_main_process():                       # under torchrun rank 0 alone prints
        return
    out = Output(json_)
    out.line("\n" + format_report(report))
    out.paths(run=summary["run_dir"], report=summary.get("report_html") or summary["report_dir"],
              log=summary.get("log"))
    out.json_summary({**summary, "verdict": verdicts(report)})


def pipeline(stocks: list[str], pairs: list[str], options: ConfigOptions, json_: bool = False,
             quiet: bool = False) -> None:
    """`hftrain pipeline`: base -> fine-tune every stock -> one portfolio per --pairs group; each stage's
    table, verdict and report path."""
    from hftraining.base_model_trainer import BaseModelTrainer, parse_groups
    from hftraining.commands.portfolio import print_portfolio
    from hftraining.portfolio import run_portfolio  # noqa: F401  (a broken import fails before hours of training)

    groups = parse_groups(pairs)
    cfg = options.build(symbols=symbols_of(stocks))
    trainer = BaseModelTrainer(cfg.data.symbols, cfg, progress=not quiet)
    result = trainer.run_complete_pipeline(pair_symbols=groups)
    run = trainer.pipeline_run
    out = Output(json_)
    out.title("pipeline stage 1-2: base and fine-tunes")
    out.line(format_report(run.report))
    out.paths(base=result["base"], report=run.summary.get("report_html") or result["report"],
              log=run.summary.get("log"))
    portfolio_verdicts = {}
    for name, portfolio in result["portfolios"].items():
        out.title(f"pipeline stage 3: portfolio {name}")
        portfolio_verdicts[name] = print_portfolio(out, portfolio["summary"], title=False)
    out.json_summary({**result, "verdict": {"stocks": verdicts(run.report), "portfolios": portfolio_verdicts}})

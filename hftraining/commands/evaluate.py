"""`hftrain backtest`, `ensemble`, `paper` and `report`: judge trained runs; print the tables, --json."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hftraining.commands.common import Output, prior_line, significance_line


def backtest(model: Path, stock: Optional[str] = None, cost_bps: Optional[float] = None,
             config: Optional[Path] = None, set_: Optional[list[str]] = None, out: Optional[Path] = None,
             source: Optional[str] = None, data_dir: Optional[Path] = None, start: Optional[str] = None,
             end: Optional[str] = None, device: Optional[str] = None, json_: bool = False, quiet: bool = False):
    """`hftrain backtest --model RUN_DIR [--stock X] [--start D] [--end D] [--cost-bps N]`."""
    from hftraining.backtest import BacktestResult, backtest_model

    result = backtest_model(model, start_date=start, end_date=end, stock=stock, cost_bps=cost_bps,
                            config_path=config, overrides=set_, source=source, data_dir=data_dir, device=device,
                            out=out, progress=not quiet)
    printed = Output(json_)
    if isinstance(result, BacktestResult):
        verdict = print_backtest(printed, result)
        printed.json_summary({"backtest_id": result.backtest_id, "report_dir": str(result.report_dir),
                          "report_html": str(result.html) if result.html else None, "symbol": result.symbol,
                          "start": result.start, "end": result.end, "in_sample": result.in_sample,
                          "overlap": result.overlap, "model": result.metrics,
                          "baselines": result.summary["baselines"], "significance": result.summary["significance"],
                          "cost_sensitivity": result.summary["cost_sensitivity"],
                          "prior": result.metadata.get("prior"), "verdict": verdict})
    else:                                             # a portfolio run (hftraining.portfolio_backtest)
        verdict = print_portfolio_backtest(printed, result)
        printed.json_summary({**result.summary, "verdict": verdict})
    return result


def print_backtest_table(out: Output, title: str, result, rows: dict,
                         keys: Optional[list[str]] = None) -> Optional[str]:
    """The part every backtest printout shares: a flagged title, the in-sample warning, the table, the verdict,
    significance. Returns the verdict."""
    from hftraining.report import format_table

    s = result.summary
    flags = (" (SYNTHETIC market)" if s.get("synthetic") else "") + (" IN SAMPLE" if result.in_sample else "")
    out.title(f"backtest {title}{flags} {result.start} .. {result.end} ({s['test_bars']} bars, "
              f"net of {s['cost_per_turnover'] * 1e4:g} bps per unit turnover)",
              style="bold yellow" if result.in_sample else "bold")
    if result.in_sample:
        out.line(f"IN SAMPLE: overlaps the model's {' and '.join(result.overlap)}", style="yellow")
    out.line(format_table(rows, keys))
    verdict = out.verdict({"model": s["model"], **s["baselines"]})
    out.line(significance_line(s))
    return verdict


def print_backtest(out: Output, result) -> Optional[str]:
    s = result.summary
    verdict = print_backtest_table(out, result.symbol, result, {"model": s["model"], **s["baselines"]})
    if held := prior_line(result.metadata.get("prior")):
        out.line(held)
    out.line(f"forecaster: {s['forecast_backend']}")
    out.paths(report=result.html or result.report_dir)
    return verdict


def print_portfolio_backtest(out: Output, result) -> Optional[str]:
    from hftraining.commands.portfolio import TABLE_KEYS

    s = result.summary
    verdict = print_backtest_table(out, f"portfolio {s['symbol']} (rebalance every {s['rebalance_every']})", result,
                                   {"policy": s["model"], **s["baselines"]}, TABLE_KEYS)
    weights = ", ".join(f"{k} {v:.2f}" for k, v in s["mean_weights"].items())
    out.line(f"mean target weights: {weights}")
    out.paths(report=result.html or result.report_dir)
    return verdict


def ensemble(models: list[Path], stock: Optional[str] = None, out: Optional[Path] = None,
             source: Optional[str] = None, data_dir: Optional[Path] = None, start: Optional[str] = None,
             end: Optional[str] = None, device: Optional[str] = None, json_: bool = False, quiet: bool = False) -> None:
    """`hftrain ensemble --models RUN1 RUN2 ... [--stock X]`: the averaged positions against each member."""
    from hftraining.ensemble import run_ensemble
    from hftraining.report import format_table

    result = run_ensemble(models or [], stock, start, end, out, source, data_dir, device=device or "cpu",
                          progress=not quiet)
    printed = Output(json_)
    s = result.summary
    flag = "  IN SAMPLE" if s["in_sample"] else ""
    printed.title(f"ensemble of {len(s['members'])} on {s['symbol']} {s['start']} .. {s['end']} "
                  f"({s['bars']} bars, {s['range_from']}, net of costs){flag}")
    printed.line(format_table(result.table))
    verdict = printed.verdict({"model": s["ensemble"], **s["members"], **s["baselines"]})
    if s.get("significance"):
        printed.line(significance_line({"significance": s["significance"],
                                        "cost_sensitivity": s["cost_sensitivity"]}))
    printed.paths(report=s.get("report_html") or result.report_dir)
    printed.json_summary({**s, "verdict": verdict})


def paper(model: Path, feed: str, stock: Optional[str] = None, speed: float = 0.0, state: Optional[Path] = None,
          start: Optional[str] = None, out: Optional[Path] = None, json_: bool = False, quiet: bool = False) -> None:
    """`hftrain paper --model RUN_DIR --feed csv:PATH|yahoo`: trade bar by bar on paper, resumable; the report of
    the bars traded so far is written when the feed ends or the command is interrupted."""
    from hftraining.paper import open_paper, run_paper, write_paper_report

    trader, source = open_paper(model, stock, feed, state, start, out)
    trader.echo = not quiet
    try:
        summary = run_paper(trader, source, speed=speed)
    finally:
        report_html = write_paper_report(trader)
    summary["report_html"] = report_html
    printed = Output(json_)
    printed.title(f"paper {trader.symbol}: {summary['bars_traded']} bars traded through {summary['last_date']}, "
                  f"equity {summary['equity']:,.2f} ({summary['total_return']:+.2%})")
    printed.paths(state=trader.dir, report=summary.get("report_html"))
    printed.json_summary(summary)


def report(run_dir: Path, out: Optional[Path] = None, json_: bool = False) -> Path:
    """`hftrain report RUN_DIR [--out DIR]`: (re)write report.html (into DIR when given) and say where it is (a
    study's or a seeds group's page is drawn by its own module)."""
    import json

    from hftraining.html_report import resolve_report_dir, write_html_report, write_page

    report_dir, model_dir = resolve_report_dir(run_dir)
    metrics = report_dir / "metrics.json"
    summary = json.loads(metrics.read_text()) if metrics.is_file() else {}
    if summary.get("kind") == "study":
        from hftraining.study import render_html

        path = write_page(report_dir, render_html(summary), out)
    elif summary.get("kind") == "seeds":
        from hftraining.seeds import write_seeds_html

        path = write_seeds_html(report_dir, summary, out)
    else:
        path = write_html_report(report_dir, model_dir, out=out)
    printed = Output(json_)
    printed.paths(report=path)
    printed.json_summary({"report_html": str(path), "report_dir": str(report_dir)})
    return path

"""`hftrain backtest`, `ensemble`, `paper` and `report`: judge trained runs; print the tables, --json."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hftraining.commands.common import console, emit_json, plain, say, significance_line


def backtest(model: Path, stock: Optional[str] = None, cost_bps: Optional[float] = None,
             config: Optional[Path] = None, set_: Optional[list[str]] = None, out: Optional[Path] = None,
             source: Optional[str] = None, data_dir: Optional[Path] = None, start: Optional[str] = None,
             end: Optional[str] = None, device: Optional[str] = None, json_: bool = False, quiet: bool = False):
    """`hftrain backtest --model RUN_DIR [--stock X] [--start D] [--end D] [--cost-bps N]`."""
    from hftraining.backtest import BacktestResult, backtest_model

    result = backtest_model(model, start_date=start, end_date=end, stock=stock, cost_bps=cost_bps,
                            config_path=config, overrides=set_, source=source, data_dir=data_dir, device=device,
                            out=out, progress=not quiet)
    if isinstance(result, BacktestResult):
        print_backtest(result)
        if json_:
            emit_json({"backtest_id": result.backtest_id, "report_dir": str(result.report_dir),
                       "report_html": str(result.html) if result.html else None, "symbol": result.symbol,
                       "start": result.start, "end": result.end, "in_sample": result.in_sample,
                       "overlap": result.overlap, "model": result.metrics, "baselines": result.summary["baselines"],
                       "significance": result.summary["significance"],
                       "cost_sensitivity": result.summary["cost_sensitivity"]})
    else:                                             # a portfolio run (hftraining.portfolio_backtest)
        print_portfolio_backtest(result)
        if json_:
            emit_json(result.summary)
    return result


def print_backtest_table(out, title: str, result, rows: dict, keys: Optional[list[str]] = None) -> None:
    """The part every backtest printout shares: a flagged title, the in-sample warning, the table, significance."""
    from hftraining.report import format_table

    s = result.summary
    flags = (" [bold red](SYNTHETIC market)[/]" if s.get("synthetic") else "") + (
        " [bold yellow]IN SAMPLE[/]" if result.in_sample else "")
    out.print(f"\n[bold]backtest {title}[/]{flags} {result.start} .. {result.end} ({s['test_bars']} bars, "
              f"net of {s['cost_per_turnover'] * 1e4:g} bps per unit turnover)")
    if result.in_sample:
        out.print(f"[yellow]IN SAMPLE: overlaps the model's {' and '.join(result.overlap)}[/]")
    plain(out, format_table(rows, keys), table=True)
    plain(out, significance_line(s))


def print_backtest(result) -> None:
    out = console()
    s = result.summary
    print_backtest_table(out, result.symbol, result, {"model": s["model"], **s["baselines"]})
    out.print(f"forecaster: {s['forecast_backend']}\nreport: {result.html or result.report_dir}")


def print_portfolio_backtest(result) -> None:
    from hftraining.commands.portfolio import TABLE_KEYS

    out = console()
    s = result.summary
    print_backtest_table(out, f"portfolio {s['symbol']} (rebalance every {s['rebalance_every']})", result,
                         {"policy": s["model"], **s["baselines"]}, TABLE_KEYS)
    weights = ", ".join(f"{k} {v:.2f}" for k, v in s["mean_weights"].items())
    out.print(f"mean target weights: {weights}\nreport: {result.html or result.report_dir}")


def ensemble(models: list[Path], stock: Optional[str] = None, out: Optional[Path] = None,
             source: Optional[str] = None, data_dir: Optional[Path] = None, start: Optional[str] = None,
             end: Optional[str] = None, device: Optional[str] = None, json_: bool = False, quiet: bool = False) -> None:
    """`hftrain ensemble --models RUN1 RUN2 ... [--stock X]`: the averaged positions against each member."""
    from hftraining.ensemble import run_ensemble
    from hftraining.report import format_table

    result = run_ensemble(models or [], stock, start, end, out, source, data_dir, device=device or "cpu",
                          progress=not quiet)
    c = console()
    s = result.summary
    flag = "  [bold yellow]IN SAMPLE[/]" if s["in_sample"] else ""
    c.print(f"\n[bold]ensemble of {len(s['members'])} on {s['symbol']}[/] {s['start']} .. {s['end']} "
            f"({s['bars']} bars, {s['range_from']}, net of costs){flag}")
    plain(c, format_table(result.table), table=True)
    if s.get("significance"):
        plain(c, significance_line({"significance": s["significance"], "cost_sensitivity": s["cost_sensitivity"]}))
    c.print(f"report: {result.report_dir}")
    if json_:
        emit_json(result.summary)


def paper(model: Path, feed: str, stock: Optional[str] = None, speed: float = 0.0, state: Optional[Path] = None,
          start: Optional[str] = None, out: Optional[Path] = None, json_: bool = False, quiet: bool = False) -> None:
    """`hftrain paper --model RUN_DIR --feed csv:PATH|yahoo`: trade bar by bar on paper, resumable."""
    from hftraining.paper import open_paper, run_paper

    trader, source = open_paper(model, stock, feed, state, start, out)
    trader.echo = not quiet
    summary = run_paper(trader, source, speed=speed)
    say(f"paper {trader.symbol}: {summary['bars_traded']} bars traded through {summary['last_date']}, "
        f"equity {summary['equity']:,.2f} ({summary['total_return']:+.2%}); state {trader.dir}")
    if json_:
        emit_json(summary)


def report(run_dir: Path, out: Optional[Path] = None, json_: bool = False) -> Path:
    """`hftrain report RUN_DIR [--out DIR]`: (re)write report.html (into DIR when given) and say where it is."""
    from hftraining.html_report import resolve_report_dir, write_html_report

    report_dir, model_dir = resolve_report_dir(run_dir)
    path = write_html_report(report_dir, model_dir, out=out)
    say(f"report: {path}")
    if json_:
        emit_json({"report_html": str(path), "report_dir": str(report_dir)})
    return path

"""What an output root holds: one row per report (name, kind, symbols, date, test net Sharpe, report page).

Why: `reports/` is a flat list of run ids (timestamps), which says neither what was trained nor on
what. Every report folder holds a `metrics.json` (and a `report.html`) whatever its kind, so the
folders describe themselves; the trial registry (`trials.jsonl`) adds when each run was registered
and names the kind of reports written before metrics.json carried one. `hftrain runs list` prints
these rows and `reports/index.html` links them; the index is rewritten whenever a report is.
Paper-trading folders (`paper/<run>/<SYMBOL>/`) are listed too.
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

from hftraining import atomic
from hftraining.html_page import page
from hftraining.layout import short_symbols
from hftraining.trials import read_trials

log = logging.getLogger("hftraining")

INDEX = "index.html"
METRICS = "metrics.json"


def _lead_sharpe(summary: dict) -> Optional[float]:
    """The test net Sharpe a report leads with, whatever its kind."""
    if isinstance(summary.get("model"), dict):                 # single, portfolio, backtest, walk-forward, ...
        return summary["model"].get("sharpe_ratio")
    if isinstance(summary.get("average"), dict):               # base / fine-tune comparison: the leading model
        average = summary["average"]
        lead = next((name for name in ("finetuned", "base") if name in average), None)
        return (average.get(lead) or {}).get("sharpe_ratio") if lead else None
    if isinstance(summary.get("book"), dict):                  # a study: its equal-weight book
        return summary["book"].get("sharpe")
    test = summary.get("test")
    if isinstance(test, dict) and isinstance(test.get("sharpe_ratio"), dict):   # seeds: the mean over seeds
        return test["sharpe_ratio"].get("mean")
    return None


def _symbols(summary: dict) -> list[str]:
    symbols = summary.get("symbols")
    if isinstance(symbols, list) and symbols:
        return [str(s) for s in symbols]
    return [str(summary["symbol"])] if summary.get("symbol") else []


def describe(folder: Path, registered: dict[str, dict]) -> Optional[dict]:
    """The row of one report folder; None when it holds no readable metrics.json."""
    path = folder / METRICS
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    paper = folder.parent.parent.name == "paper"              # paper/<run>/<SYMBOL>: not a trial
    name = f"{folder.parent.name}/{folder.name}" if paper else folder.name
    record = {} if paper else registered.get(folder.name) or {}
    kind = summary.get("kind") or record.get("kind") or ("base" if "stocks" in summary else "single")
    date = record.get("date") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(path.stat().st_mtime))
    report = folder / "report.html"
    sharpe = _lead_sharpe(summary)
    return {"name": name, "kind": str(kind), "symbols": _symbols(summary) or list(record.get("symbols") or []),
            "date": str(date), "test_sharpe": float(sharpe) if isinstance(sharpe, (int, float)) else None,
            "report": str(report if report.is_file() else folder)}


def _registered(root: Path) -> dict[str, dict]:
    """Trial records by run id (`<run>/<model>/<SYMBOL>` trials of a base count for `<run>`); the first wins."""
    out: dict[str, dict] = {}
    for record in read_trials(root):
        out.setdefault(str(record["run_id"]).split("/")[0], record)
    return out


def list_runs(root: str | Path) -> list[dict]:
    """Every report under the output root, oldest first."""
    root = Path(root)
    folders = [p for p in sorted((root / "reports").glob("*")) if p.is_dir()]
    folders += [p for p in sorted((root / "paper").glob("*/*")) if p.is_dir()]
    registered = _registered(root)
    described = [(describe(folder, registered), folder) for folder in folders]
    # dates have one-second resolution: reports written within the same second keep the order they were written
    ordered = sorted(((row, folder) for row, folder in described if row is not None),
                     key=lambda pair: (pair[0]["date"], (pair[1] / METRICS).stat().st_mtime_ns, pair[0]["name"]))
    return [row for row, _ in ordered]


def format_runs(rows: list[dict]) -> str:
    """The terminal table of `hftrain runs list`."""
    head = ("name", "kind", "symbols", "date", "test_sharpe", "report")
    cells = [(r["name"], r["kind"], short_symbols(r["symbols"]), r["date"].replace("T", " "),
              "n/a" if r["test_sharpe"] is None else f"{r['test_sharpe']:+.2f}", r["report"]) for r in rows]
    widths = [max(len(str(row[i])) for row in [head, *cells]) for i in range(len(head) - 1)]
    lines = []
    for row in [head, *cells]:
        first = [f"{str(value):>{w}}" if i == 4 else f"{str(value):<{w}}" for i, (value, w) in
                 enumerate(zip(row[:-1], widths, strict=True))]
        lines.append("  ".join(first) + "  " + str(row[-1]))
    return "\n".join(lines)


def render_index(root: Path, rows: list[dict]) -> str:
    """reports/index.html: newest first, each row linking its report page."""
    reports = root / "reports"
    body = []
    for r in reversed(rows):
        target = os.path.relpath(r["report"], reports)
        sharpe = "n/a" if r["test_sharpe"] is None else f"{r['test_sharpe']:+.2f}"
        css = "" if r["test_sharpe"] is None else (' class="pos"' if r["test_sharpe"] > 0 else ' class="neg"')
        body.append(f'<tr><td><a href="{html.escape(target)}">{html.escape(r["name"])}</a></td>'
                    f'<td>{html.escape(r["kind"])}</td><td>{html.escape(short_symbols(r["symbols"], 8))}</td>'
                    f'<td>{html.escape(r["date"].replace("T", " "))}</td><td{css}>{sharpe}</td></tr>')
    table = ("<table><tr><th>Report</th><th>Kind</th><th>Symbols</th><th>Date</th><th>Test net Sharpe</th></tr>"
             f"{''.join(body)}</table>")
    text = (f"<h1>Reports under {html.escape(str(root))}</h1>"
            f'<p class="sub">{len(rows)} report(s), newest first; `hftrain runs list --out {html.escape(str(root))}` '
            "prints the same rows. Test net Sharpe: the model's (a comparison: its leading model averaged over "
            "stocks; seeds: the mean over seeds; a study: its equal-weight book).</p>"
            f'<div class="card">{table}</div>')
    return page(f"Reports under {root}", text)


def output_root(report_dir: Path) -> Optional[Path]:
    """The output root of `<root>/reports/<name>` or `<root>/paper/<run>/<SYMBOL>`; None elsewhere."""
    report_dir = Path(report_dir).resolve()
    if report_dir.parent.name == "reports":
        return report_dir.parent.parent
    if report_dir.parent.parent.name == "paper":
        return report_dir.parent.parent.parent
    return None


def write_index(root: str | Path) -> Path:
    """Rewrite `<root>/reports/index.html` from every report under the root."""
    root = Path(root)
    (root / "reports").mkdir(parents=True, exist_ok=True)
    return atomic.write_text(root / "reports" / INDEX, render_index(root, list_runs(root)))


def refresh_index(report_dir: Path) -> Optional[Path]:
    """After a report is written: rewrite its output root's index (a failure warns; the report is kept)."""
    root = output_root(report_dir)
    if root is None:
        return None
    try:
        return write_index(root)
    except Exception as exc:  # noqa: BLE001 - the index is a convenience; the report itself is written
        log.warning("reports/index.html not rewritten (%s: %s); `hftrain runs list` shows the runs",
                    type(exc).__name__, exc)
        return None

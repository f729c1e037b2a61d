"""report.html: one self-contained page per run or backtest that a skeptic can read in a browser.

Why: numbers in a JSON file do not show a drawdown, a cost cliff or an in-sample test. The page
puts the model next to its baselines (same bars, same costs), with equity, drawdown, positions,
monthly returns, cost sensitivity, training curves, significance (PSR, DSR, bootstrap interval)
and what data and forecaster were actually used. SYNTHETIC data and IN SAMPLE ranges are banners.
Images are PNGs embedded as base64, so the file can be mailed or archived alone.

Inputs, all in the report folder: `[<SYM>_]metrics.json` (hftraining.report), `[<SYM>_]series.csv`
(date, strategy, position, net_return: written by `save_series`; older reports fall back to
test_returns.csv), optional `weights.csv` (portfolios) and `backtest.json`; plus the run folder's
metadata.json / config.yaml and its TensorBoard events (or the metadata's history). The data behind the
page: hftraining.report_data; its figures: hftraining.report_figures.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from pathlib import Path

from hftraining import atomic
from hftraining.errors import UserError
from hftraining.html_page import page
from hftraining.report_data import load_series, load_weights, training_curves
from hftraining.report_figures import (  # noqa: F401  (monthly_returns: importable from here)
    cost_figure,
    equity_drawdown_figure,
    figure_png,
    monthly_heatmap_figure,
    monthly_returns,
    positions_figure,
    strategy_label,
    training_figure,
)
from hftraining.verdict import against_best_baseline

log = logging.getLogger("hftraining")

REPORT = "report.html"
# The page title per kind of result (metrics.json "kind", else the run's metadata); "Run" otherwise.
TITLES = {"base": "Base run", "finetune": "Fine-tune", "portfolio": "Portfolio", "walk_forward": "Walk-forward",
          "walk_forward_portfolio": "Walk-forward portfolio", "ensemble": "Ensemble", "paper": "Paper trading"}
RANGE_LABELS = {"backtest": "Backtest", "paper": "Paper trading"}   # the range's name when it is not "Test"


# --- HTML --------------------------------------------------------------------------------------

TABLE_COLUMNS = [("total_return", "Total return", "pct"), ("cagr", "CAGR", "pct"),
                 ("sharpe_ratio", "Sharpe", "num"), ("psr", "PSR (SR&gt;0)", "pct0"),
                 ("sortino", "Sortino", "num"), ("max_drawdown", "Max drawdown", "pct"),
                 ("volatility", "Volatility", "pct"), ("win_rate", "Win rate", "pct0"),
                 ("period_win_rate", "Period win rate", "pct0"),
                 ("trade_count", "Trades", "int"), ("turnover", "Turnover / bar", "num3"),
                 ("exposure", "Exposure", "pct0"), ("mean_abs_position", "Mean |position|", "plain"),
                 ("total_return_at_target", "Total return at target vol", "pct"),
                 ("max_drawdown_at_target", "Max drawdown at target vol", "pct")]


def _fmt(value, kind: str = "num") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    if kind == "pct":
        return f"{value * 100:+.2f}%"
    if kind == "pct0":
        return f"{value * 100:.1f}%"
    if kind == "int":
        return f"{int(value):d}"
    if kind == "num3":
        return f"{value:.4f}"
    if kind == "plain":
        return f"{value:.2f}"
    return f"{value:+.2f}"


COLORED = {"total_return", "cagr", "sharpe_ratio", "sortino"}


def _sign_class(value, kind: str = "num") -> str:
    if kind in ("pct", "num") and isinstance(value, (int, float)) and math.isfinite(value) and value != 0:
        return ' class="pos"' if value > 0 else ' class="neg"'
    return ""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def metrics_table(rows: dict[str, dict]) -> str:
    """Strategies by metrics; a metric no row has is left out, an undefined one (None) reads n/a."""
    columns = [c for c in TABLE_COLUMNS if any(c[0] in values for values in rows.values())]
    head = "".join(f"<th>{title}</th>" for _, title, _ in columns)
    body = []
    for name, values in rows.items():
        cells = "".join(f"<td{_sign_class(values.get(key), kind) if key in COLORED else ''}>"
                        f"{'n/a' if key in values and values[key] is None else _fmt(values.get(key), kind)}</td>"
                        for key, _, kind in columns)
        css = ' class="model"' if name == "model" else ""
        body.append(f"<tr{css}><td>{html.escape(strategy_label(name))}</td>{cells}</tr>")
    return f"<table><tr><th>Strategy</th>{head}</tr>{''.join(body)}</table>"


def kv_table(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv">{rows}</table>'


def _stat(label: str, value: str) -> str:
    return f'<div class="stat"><div class="k">{label}</div><div class="v">{value}</div></div>'


def baseline_comparison(rows: dict[str, dict]) -> str:
    """One sentence: the model's net Sharpe against the best baseline's (hftraining.verdict, as printed)."""
    text = against_best_baseline(rows)
    if text is None:
        return ""
    head, rest = text.split(": ", 1)
    return f"<p><b>{html.escape(head)}</b>: {html.escape(rest)}</p>"


def significance_section(sig: dict | None) -> str:
    if not sig:
        return ('<p class="small">No significance figures in this report; '
                '<code>hftrain backtest --model RUN_DIR</code> computes them for one model.</p>')
    boot, dsr = sig.get("bootstrap") or {}, sig.get("deflated") or {}
    low, high = boot.get("low"), boot.get("high")
    conf = boot.get("confidence", 0.95)
    if low is None or high is None:
        verdict = "Too few bars or constant returns: no interval."
    elif low > 0:
        verdict = f"The {conf:.0%} interval of the net Sharpe lies above 0."
    elif high < 0:
        verdict = f"The {conf:.0%} interval of the net Sharpe lies below 0: the model loses money net of costs."
    else:
        verdict = (f"The {conf:.0%} interval of the net Sharpe includes 0: this result cannot be told apart "
                   "from luck.")
    stats = "".join([
        _stat("Net Sharpe (annualised)", _fmt(sig.get("sharpe_ratio"))),
        _stat(f"Bootstrap {conf:.0%} interval", f"[{_fmt(low)}, {_fmt(high)}]"),
        _stat("PSR: P(true Sharpe &gt; 0)", _fmt(sig.get("psr"), "pct0")),
        _stat(f"Deflated Sharpe (N = {dsr.get('n_trials', '–')})", _fmt(dsr.get("dsr"), "pct0")),
    ])
    notes = (f"{html.escape(verdict)} PSR and DSR follow Bailey &amp; López de Prado (skew and kurtosis "
             f"included; {sig.get('n_bars', '–')} bars). DSR tests against SR0 = {_fmt(dsr.get('sr0'))}, the "
             f"Sharpe the best of {dsr.get('n_trials', '–')} worthless trials would show by luck "
             f"({html.escape(str(dsr.get('variance_source', '')))}; trial Sharpe std "
             f"{_fmt(dsr.get('trial_sharpe_std'), 'plain')}). "
             f"{html.escape('N: ' + dsr['n_trials_source'] + '. ') if dsr.get('n_trials_source') else ''}"
             f"Interval: {html.escape(str(boot.get('method', '')))}, "
             f"{boot.get('n_boot', '–')} resamples, mean block {boot.get('mean_block', '–')} bars, seeded.")
    return f'<div class="grid">{stats}</div><p class="small">{notes}</p>'


def cost_section(costs: dict | None) -> str:
    if not costs:
        return '<p class="small">No cost sensitivity in this report.</p>'
    rows = "".join(f"<tr><td>{r['cost_bps']:g} bps</td><td{_sign_class(r['sharpe_ratio'], 'num')}>"
                   f"{_fmt(r['sharpe_ratio'])}</td><td{_sign_class(r['total_return'], 'pct')}>"
                   f"{_fmt(r['total_return'], 'pct')}</td></tr>" for r in costs["rows"])
    be = costs.get("break_even_bps")
    be_text = (f"<b>Break-even cost: {be:.1f} bps</b> per unit turnover ({html.escape(costs['break_even_how'])})"
               if be is not None else f"<b>Break-even cost: none</b> ({html.escape(costs['break_even_how'])})")
    basis = html.escape(costs.get("break_even_basis", ""))
    table = f"<table class=\"narrow\"><tr><th>Cost</th><th>Net Sharpe</th><th>Total return</th></tr>{rows}</table>"
    text = (f'<p>{be_text}; basis: {basis}. The same positions are re-simulated at each cost '
            '(commission + slippage per unit turnover).</p>')
    return table + text + _img(figure_png(cost_figure(costs)), "cost sensitivity")


def _banners(summary: dict, meta: dict) -> str:
    out = []
    synthetic = summary.get("synthetic") or meta.get("synthetic")
    if synthetic:
        out.append('<div class="banner synthetic">SYNTHETIC DATA: these prices were generated, not observed. '
                   'No number on this page says anything about a real market.</div>')
    if summary.get("in_sample"):
        where = "; ".join(html.escape(x) for x in summary.get("overlap", []))
        out.append(f'<div class="banner insample">IN SAMPLE: the tested dates overlap the dates this model '
                   f'was trained or selected on ({where}). Treat every number as optimistic.</div>')
    prior = meta.get("prior") or {}
    if prior.get("holds_prior"):
        out.append(f'<div class="banner note">This run holds the always-long prior: the trained model\'s validation '
                   f'net Sharpe ({prior["validation_sharpe_model"]:+.2f}) did not beat that of raw +1 in risk units '
                   f'({prior["validation_sharpe_prior"]:+.2f}), so the model row trades the vol_long position '
                   '(training.prior_candidate).</div>')
    if meta.get("kept_base"):
        out.append(f'<div class="banner note">This fine-tune kept its base model\'s weights: its validation net Sharpe '
                   f'({meta["validation_sharpe_finetuned"]:+.2f}) did not beat the base\'s '
                   f'({meta["validation_sharpe_base"]:+.2f}).</div>')
    for symbol, info in (summary.get("forecast") or meta.get("forecast") or {}).items():
        if info.get("fallback_reason"):
            out.append(f'<div class="banner note">{html.escape(symbol)}: forecaster requested '
                       f'{html.escape(str(info.get("requested")))}, used {html.escape(str(info.get("backend")))} '
                       f'({html.escape(str(info["fallback_reason"]))}).</div>')
    return "".join(out)


def symbol_section(report_dir: Path, summary: dict, prefix: str) -> str:
    """Headline table, significance, curves and cost sensitivity of one metrics file."""
    rows = {"model": summary.get("model", {}), **summary.get("baselines", {})}
    series = load_series(report_dir, prefix)
    cost = summary.get("cost_per_turnover")
    cost_text = f"{cost * 1e4:g} bps per unit turnover" if isinstance(cost, (int, float)) else "configured costs"
    parts = [(f"<h2>{html.escape(str(summary.get('symbol') or ''))} {html.escape(summary.get('range_label', 'Test'))}"
             f" {summary.get('test_start', '')} .. {summary.get('test_end', '')} "
             f"({summary.get('test_bars', '–')} bars)</h2>"),
             (f'<div class="card"><h3>Net performance vs baselines</h3>{metrics_table(rows)}'
             f'<p class="small">All strategies on the same bars, net of {cost_text}, simulated bar by bar by '
             'the ProfitTracker and marked to market. Max drawdown is negative (equity / running peak − 1). '
             'Win rate = winning closed trades / closed trades (n/a when none closed). '
             'PSR = probability that the true Sharpe exceeds 0.</p></div>'),
             (f'<div class="card"><h3>Significance</h3>{baseline_comparison(rows)}'
             f'{significance_section(summary.get("significance"))}</div>')]
    if series:
        parts.append(f'<div class="card"><h3>Equity and drawdown</h3>'
                     f'{_img(figure_png(equity_drawdown_figure(series)), "equity and drawdown")}</div>')
        weights = load_weights(report_dir, prefix)
        parts.append(f'<div class="card"><h3>{"Weights" if weights is not None else "Positions"}</h3>'
                     f'{_img(figure_png(positions_figure(series, weights)), "positions")}</div>')
        if "model" in series and len(series["model"]):
            parts.append(f'<div class="card"><h3>Monthly returns</h3>'
                         f'{_img(figure_png(monthly_heatmap_figure(series["model"]["net_return"])), "monthly")}</div>')
    parts.append(f'<div class="card"><h3>Cost sensitivity</h3>{cost_section(summary.get("cost_sensitivity"))}</div>')
    return "".join(parts)


def metadata_section(summary: dict, meta: dict, config_text: str | None) -> str:
    data = meta.get("data") or {}
    sources = "; ".join(f"{s}: {v.get('source')} ({v.get('origin')})" for s, v in data.items()) or "–"
    forecast = "; ".join(f"{s}: {v.get('backend', 'none')}" for s, v in (meta.get("forecast") or {}).items())
    splits = meta.get("splits") or {}
    split_text = ", ".join(f"{k} {splits[k]['start']} .. {splits[k]['end']} ({splits[k]['bars']} bars)"
                           for k in ("train", "val", "test") if isinstance(splits.get(k), dict))
    if "embargo" in splits:
        split_text += f", embargo {splits['embargo']} bars"
    pairs = [("Run", html.escape(str(meta.get("run_id", summary.get("run_id", "–"))))),
             ("Kind", html.escape(str(meta.get("kind", "–")))),
             ("Symbols", html.escape(", ".join(meta.get("symbols", [])) or str(summary.get("symbol", "–")))),
             ("Data", ("<b>SYNTHETIC</b> — " if meta.get("synthetic") or summary.get("synthetic") else "")
              + html.escape(sources)),
             ("Forecaster used", html.escape(forecast or str(summary.get("forecast_backend", "–")))),
             ("Splits (decision dates)", html.escape(split_text or "–")),
             ("Best step / steps", f"{meta.get('best_step', '–')} / {meta.get('steps_done', '–')}"
              + (" (stopped early)" if meta.get("stopped_early") else "")),
             ("Device", html.escape(str(meta.get("device", "–")))),
             ("Created", html.escape(str(meta.get("created", "–")))),
             ("Run folder", html.escape(str(summary.get("run_dir") or summary.get("model_dir") or "–"))),
             ("Versions", html.escape(", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())))]
    if summary.get("kind") == "backtest":
        pairs.insert(0, ("Backtest", html.escape(f"{summary.get('backtest_id')} of model {summary.get('model_dir')}, "
                                                 f"requested {summary.get('requested_start') or 'start'} .. "
                                                 f"{summary.get('requested_end') or 'end'}")))
    config_html = (f"<details><summary>Resolved config (config.yaml)</summary><pre>{html.escape(config_text)}</pre>"
                   "</details>") if config_text else ""
    return f'<div class="card">{kv_table(pairs)}{config_html}</div>'


def _metrics_files(report_dir: Path) -> list[tuple[str, Path]]:
    """(prefix, path) of each result's metrics: metrics.json, or each stock's <SYMBOL>_metrics.json of a
    comparison (whose own metrics.json only gathers them)."""
    files = [(p.name[: -len("metrics.json")], p) for p in sorted(report_dir.glob("*_metrics.json"))]
    top = report_dir / "metrics.json"
    if top.is_file() and not (files and "stocks" in json.loads(top.read_text())):
        files.insert(0, ("", top))
    return files


def _tensorboard_dir(run_dir: Path | None, meta: dict) -> Path | None:
    if meta.get("tensorboard_dir") and Path(meta["tensorboard_dir"]).is_dir():
        return Path(meta["tensorboard_dir"])
    if run_dir is None or "models" not in run_dir.parts or not meta.get("run_id"):
        return None
    root = Path(*run_dir.parts[: len(run_dir.parts) - 1 - run_dir.parts[::-1].index("models")])
    found = [p for p in (root / "tensorboard").glob(f"**/{meta['run_id']}") if p.is_dir()]
    return found[0] if found else None


def render_report(report_dir: Path, run_dir: Path | None = None, tensorboard_dir: Path | None = None) -> str:
    """The whole page as one HTML string."""
    report_dir = Path(report_dir)
    files = _metrics_files(report_dir)
    if not files:
        raise UserError(f"{report_dir}: no metrics.json; not a report folder (runs/reports/<run>)")
    summaries = [(prefix, json.loads(path.read_text())) for prefix, path in files]
    first = summaries[0][1]
    run_dir = Path(run_dir) if run_dir else Path(first.get("model_dir") or first.get("run_dir") or report_dir)
    meta = json.loads((run_dir / "metadata.json").read_text()) if (run_dir / "metadata.json").is_file() else {}
    config_text = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else None
    kind = first.get("kind") or meta.get("kind") or "single"
    is_backtest = kind == "backtest"
    title = (f"Backtest {first.get('backtest_id', '')}" if is_backtest
             else f"{TITLES.get(kind, 'Run')} {first.get('run_id') or meta.get('run_id') or report_dir.name}")
    symbols = (str(first.get("symbol", "")) if is_backtest or not meta.get("symbols")
               else ", ".join(meta.get("symbols", [])))
    subtitle = ("net profit of a trained model over chosen dates vs baselines" if is_backtest
                else "out-of-sample (test range) net profit vs baselines")
    curves = training_curves(tensorboard_dir or _tensorboard_dir(run_dir, meta), meta.get("history"))
    training = (_img(figure_png(training_figure(curves, meta.get("best_step"))), "training curves") if curves
                else '<p class="small">No training curves found (no TensorBoard events or history).</p>')
    body = [f"<h1>{html.escape(title)} — {html.escape(symbols)}</h1>",
            (f'<p class="sub">hftraining report: {subtitle}, significance and provenance.'
             f'{" Model run: " + html.escape(str(run_dir)) if is_backtest else ""}</p>'),
            _banners(first, meta)]
    for prefix, summary in summaries:
        if kind in RANGE_LABELS:
            summary = {**summary, "range_label": RANGE_LABELS[kind]}
        body.append(symbol_section(report_dir, summary, prefix))
    body.append(f'<h2>Training</h2><div class="card">{training}<p class="small">Validation numbers choose '
                'the checkpoint; they are not out-of-sample results.</p></div>')
    body.append(f"<h2>Provenance</h2>{metadata_section(first, meta, config_text)}")
    return page(title, "".join(body))


def write_page(report_dir: Path, text: str, out: Path | None = None) -> Path:
    """Write `report_dir/report.html` (or `out/report.html`: `hftrain report --out DIR`) atomically and refresh
    the output root's reports/index.html."""
    from hftraining.run_index import refresh_index

    folder = Path(out) if out is not None else Path(report_dir)
    if out is not None:
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--out {folder}: is a file; pass a folder to write report.html into")
        folder.mkdir(parents=True, exist_ok=True)
    path = atomic.write_text(folder / REPORT, text)
    refresh_index(folder)
    return path


def write_html_report(report_dir: Path, run_dir: Path | None = None,
                      tensorboard_dir: Path | None = None, out: Path | None = None) -> Path:
    """Recount the Deflated Sharpe's trials, then render and write `report_dir/report.html` (or `out/report.html`:
    `hftrain report --out DIR`) atomically; the page embeds its images, so it stands alone anywhere."""
    from hftraining.deflated import refresh_report

    refresh_report(Path(report_dir))
    return write_page(Path(report_dir), render_report(Path(report_dir), run_dir, tensorboard_dir), out)


def write_report_html(report_dir: Path, run_dir: Path | None) -> str | None:
    """report.html at the end of a run; a rendering failure warns instead of losing the finished run."""
    try:
        return str(write_html_report(report_dir, run_dir))
    except Exception as exc:  # noqa: BLE001 - the metrics and weights are already saved
        log.warning("report.html not written (%s: %s); retry with: hftrain report %s", type(exc).__name__, exc,
                    run_dir)
        return None


def resolve_report_dir(path: Path) -> tuple[Path, Path | None]:
    """(report folder, run folder) from either a report folder or a run folder."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such folder; pass a run folder (runs/models/...) or a report folder")
    if _metrics_files(path):
        return path, None
    if (path / "metadata.json").is_file():
        meta = json.loads((path / "metadata.json").read_text())
        report_dir = Path(meta.get("report_dir") or "")
        if meta.get("report_dir") and report_dir.is_dir():
            return report_dir, path
        raise UserError(f"{path}: this run has no test report yet (status {meta.get('status', 'unknown')})")
    raise UserError(f"{path}: neither a run folder (metadata.json) nor a report folder (metrics.json)")

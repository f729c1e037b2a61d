"""report.html: one self-contained page per run or backtest that a skeptic can read in a browser.

Why: numbers in a JSON file do not show a drawdown, a cost cliff or an in-sample test. The page
puts the model next to its baselines (same bars, same costs), with equity, drawdown, positions,
monthly returns, cost sensitivity, training curves, significance (PSR, DSR, bootstrap interval)
and what data and forecaster were actually used. SYNTHETIC data and IN SAMPLE ranges are banners.
Images are PNGs embedded as base64, so the file can be mailed or archived alone.

Inputs, all in the report folder: `[<SYM>_]metrics.json` (hftraining.report), `[<SYM>_]series.csv`
(date, strategy, position, net_return: written by `save_series`; older reports fall back to
test_returns.csv), optional `weights.csv` (portfolios) and `backtest.json`; plus the run folder's
metadata.json / config.yaml and its TensorBoard events (or the metadata's history).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from hftraining import atomic
from hftraining.errors import UserError

log = logging.getLogger("hftraining")

REPORT = "report.html"
SERIES = "series.csv"
COLORS = {"model": "#1f5fbf", "buy_and_hold": "#7f7f7f", "momentum": "#e07b00", "equal_weight": "#2ca02c",
          "min_variance": "#9467bd"}
NAMES = {"model": "Model", "buy_and_hold": "Buy & hold", "momentum": "TS momentum (12m sign, vol-scaled)",
         "equal_weight": "1/N rebalanced", "buy_and_hold_equal": "1/N buy & hold", "min_variance": "Minimum variance"}
TRAINING_TAGS = [("train/loss", "Training loss"), ("eval/loss", "Validation loss"),
                 ("profit/sharpe_ratio", "Validation net Sharpe")]


# --- the series behind the plots ---------------------------------------------------------------

def frame_of(sim) -> pd.DataFrame:
    """date, position, net_return of a Simulation (or a DataFrame with those columns)."""
    frame = sim if isinstance(sim, pd.DataFrame) else sim.frame
    out = frame[["date", "position", "net_return"]].copy()
    out["date"] = pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%d")
    return out


def save_series(report_dir: Path, strategies: dict, prefix: str = "") -> Path:
    """Write `[prefix]series.csv` in long form: one row per (date, strategy)."""
    parts = [frame_of(sim).assign(strategy=name) for name, sim in strategies.items()]
    long = pd.concat(parts, ignore_index=True)[["date", "strategy", "position", "net_return"]]
    return atomic.write_text(Path(report_dir) / f"{prefix}{SERIES}", long.to_csv(index=False, float_format="%.10g"))


def load_series(report_dir: Path, prefix: str = "") -> dict[str, pd.DataFrame]:
    """strategy -> frame indexed by date (position, net_return); test_returns.csv when no series.csv."""
    path = report_dir / f"{prefix}{SERIES}"
    if path.is_file():
        long = pd.read_csv(path, parse_dates=["date"])
        return {name: group.set_index("date")[["position", "net_return"]]
                for name, group in long.groupby("strategy", sort=False)}
    path = report_dir / f"{prefix}test_returns.csv"
    if path.is_file():
        frame = pd.read_csv(path, parse_dates=["date"]).set_index("date")
        if "position" not in frame:
            weights = [c for c in frame if c.startswith("weight_") and not c.endswith("CASH")]
            frame["position"] = frame[weights].sum(axis=1) if weights else np.nan
        return {"model": frame[["position", "net_return"]]}
    return {}


def load_weights(report_dir: Path, prefix: str = "") -> pd.DataFrame | None:
    path = report_dir / f"{prefix}weights.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, parse_dates=["date"]).set_index("date")
    return frame[[c for c in frame if c.startswith("weight_")]].rename(columns=lambda c: c[len("weight_"):])


def training_curves(tensorboard_dir: Path | None, history: list | None = None) -> dict[str, tuple]:
    """tag -> (steps, values) from the TensorBoard events, else from metadata history (validation only)."""
    curves: dict[str, tuple] = {}
    if tensorboard_dir is not None and Path(tensorboard_dir).is_dir():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
        events.Reload()
        available = set(events.Tags().get("scalars", []))
        for tag, _ in TRAINING_TAGS:
            if tag in available:
                points = events.Scalars(tag)
                curves[tag] = (np.array([p.step for p in points]), np.array([p.value for p in points]))
    if not curves and history:
        steps = np.array([h["step"] for h in history])
        for tag, key in (("eval/loss", "val_loss"), ("profit/sharpe_ratio", "sharpe_ratio")):
            if all(key in h for h in history):
                curves[tag] = (steps, np.array([h[key] for h in history], dtype=float))
    return curves


# --- figures -----------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.grid": True, "grid.alpha": 0.3, "axes.titleweight": "bold",
                         "axes.titlesize": 10, "legend.frameon": True,
                         "legend.framealpha": 0.85, "legend.edgecolor": "#dddddd"})
    return plt


def figure_png(fig) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards)."""
    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, facecolor="white")
    plt.close(fig)
    return buffer.getvalue()


def _color(name: str, i: int) -> str:
    return COLORS.get(name, f"C{(i + 3) % 10}")


def _label(name: str) -> str:
    return NAMES.get(name, name.replace("_", " "))


def equity_drawdown_figure(series: dict[str, pd.DataFrame]):
    plt = _plt()
    fig, (ax, dd) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    for i, (name, frame) in enumerate(series.items()):
        equity = (1.0 + frame["net_return"]).cumprod()
        width, alpha = (1.8, 1.0) if name == "model" else (1.1, 0.85)
        ax.plot(frame.index, equity, color=_color(name, i), lw=width, alpha=alpha, label=_label(name))
        drawdown = equity / np.maximum.accumulate(np.maximum(equity, 1.0)) - 1.0
        dd.plot(frame.index, drawdown * 100, color=_color(name, i), lw=width * 0.8, alpha=alpha)
        if name == "model":
            dd.fill_between(frame.index, drawdown * 100, 0, color=_color(name, i), alpha=0.15)
    ax.axhline(1.0, color="black", lw=0.6, alpha=0.5)
    ax.set_yscale("log")     # a flat-looking model and a 16x buy-and-hold both stay readable
    ax.set_ylabel("equity (net of costs, start = 1, log scale)")
    ax.set_title("Equity curve (log scale: equal slopes are equal returns)")
    ax.legend(loc="upper left", ncol=min(4, len(series)))
    dd.set_ylabel("drawdown (%)")
    dd.set_title("Drawdown from running peak")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def positions_figure(series: dict[str, pd.DataFrame], weights: pd.DataFrame | None = None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 2.8))
    if weights is not None and len(weights):
        ax.stackplot(weights.index, weights.to_numpy().T, labels=list(weights.columns), step="post", alpha=0.85)
        ax.set_ylabel("target weight")
        ax.set_title("Portfolio weights at each rebalance")
        ax.legend(loc="upper left", ncol=min(6, weights.shape[1]))
    else:
        for i, (name, frame) in enumerate(series.items()):
            if name == "model":
                ax.fill_between(frame.index, frame["position"], 0, step="post", color=_color(name, i), alpha=0.25)
                ax.step(frame.index, frame["position"], where="post", color=_color(name, i), lw=1.0, label="Model")
            elif name == "momentum":
                ax.step(frame.index, frame["position"], where="post", color=_color(name, i), lw=0.9, alpha=0.8,
                        label=_label(name))
        ax.axhline(0, color="black", lw=0.6)
        ax.set_ylabel("position (fraction of equity)")
        ax.set_title("Positions held (+ long, - short)")
        ax.legend(loc="upper left", ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def monthly_returns(net: pd.Series) -> pd.DataFrame:
    """Compounded net return per calendar month: rows = years, columns = 1..12 (NaN where no bars)."""
    monthly = (1.0 + net).groupby([net.index.year, net.index.month]).prod() - 1.0
    table = monthly.unstack()
    return table.reindex(columns=range(1, 13))


def monthly_heatmap_figure(net: pd.Series):
    plt = _plt()
    table = monthly_returns(net) * 100
    yearly = ((1.0 + net).groupby(net.index.year).prod() - 1.0) * 100
    values = table.to_numpy(dtype=float)
    limit = max(1.0, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0)
    fig, ax = plt.subplots(figsize=(10, 0.9 + 0.42 * len(table)))
    ax.grid(False)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    for (row, col), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(col, row, f"{value:+.1f}", ha="center", va="center", fontsize=8,
                    color="black" if abs(value) < 0.6 * limit else "white")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(table)), [f"{year}   ({yearly[year]:+.1f}%)" for year in table.index])
    ax.set_title("Model monthly net returns (%), year total in brackets")
    fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01, label="%")
    fig.tight_layout()
    return fig


def cost_figure(costs: dict):
    plt = _plt()
    rows = costs["rows"]
    bps = [r["cost_bps"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
    left.plot(bps, [r["sharpe_ratio"] for r in rows], "o-", color=COLORS["model"])
    right.plot(bps, [r["total_return"] * 100 for r in rows], "o-", color=COLORS["model"])
    for ax in (left, right):
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlabel("cost per unit turnover (bps)")
        if costs.get("break_even_bps") is not None and costs["break_even_bps"] <= max(bps) * 1.5:
            ax.axvline(costs["break_even_bps"], color="#c0392b", ls="--", lw=1, label="break-even (Sharpe = 0)")
            ax.legend(loc="best")
    left.set_ylabel("net Sharpe (annualised)")
    left.set_title("Net Sharpe vs cost")
    right.set_ylabel("total net return (%)")
    right.set_title("Total return vs cost")
    fig.tight_layout()
    return fig


def training_figure(curves: dict[str, tuple], best_step: int | None = None):
    plt = _plt()
    shown = [(tag, title) for tag, title in TRAINING_TAGS if tag in curves]
    fig, axes = plt.subplots(1, len(shown), figsize=(10, 2.8), squeeze=False)
    for ax, (tag, title) in zip(axes[0], shown, strict=True):
        steps, values = curves[tag]
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, lw=1.2, color=COLORS["model"])
        if best_step is not None and best_step >= 0:
            ax.axvline(best_step, color="#c0392b", ls="--", lw=1, label=f"best step {best_step}")
            ax.legend(loc="best")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(tag)
        ax.set_title(title)
    fig.tight_layout()
    return fig


# --- HTML --------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#1d2733;background:#f4f6f9;margin:0;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:30px 0 10px;border-bottom:2px solid #dde3ea;
 padding-bottom:4px}h3{font-size:15px;margin:18px 0 8px}
.sub{color:#5b6876;margin:0 0 14px}.card{background:#fff;border:1px solid #dde3ea;border-radius:8px;
 padding:16px 18px;margin:12px 0;box-shadow:0 1px 2px rgba(0,0,0,.04);overflow-x:auto}
.banner{border-radius:8px;padding:12px 16px;margin:10px 0;font-weight:600}
.synthetic{background:#fde2e1;border:2px solid #c0392b;color:#8e1b10;font-size:17px}
.insample{background:#fff1d6;border:2px solid #e08e0b;color:#7a4a00;font-size:17px}
.note{background:#eef4fb;border:1px solid #b8cde6;color:#24476b;font-weight:500}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{padding:6px 9px;border-bottom:1px solid #e6eaef;text-align:right;white-space:nowrap}
th{background:#eef1f5;color:#33404d;font-weight:600;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}tr.model td{background:#e8f0fc;font-weight:600}
td.pos{color:#1e7b34}td.neg{color:#b42318}
table.narrow{width:auto;min-width:420px}.card h3{margin-top:0}
.kv td{text-align:left;white-space:normal}.kv td:first-child{color:#5b6876;width:230px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px}
.stat{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:10px 14px}
.stat .v{font-size:22px;font-weight:700}.stat .k{color:#5b6876;font-size:12px}
img{max-width:100%;display:block;margin:6px auto;border-radius:4px}
.small{font-size:12px;color:#5b6876}pre{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:6px;
 padding:10px;overflow:auto;font-size:12px;max-height:420px}details summary{cursor:pointer;font-weight:600}
"""

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
        body.append(f"<tr{css}><td>{html.escape(_label(name))}</td>{cells}</tr>")
    return f"<table><tr><th>Strategy</th>{head}</tr>{''.join(body)}</table>"


def kv_table(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv">{rows}</table>'


def _stat(label: str, value: str) -> str:
    return f'<div class="stat"><div class="k">{label}</div><div class="v">{value}</div></div>'


def baseline_comparison(rows: dict[str, dict]) -> str:
    """One sentence: the model's net Sharpe against the best baseline's."""
    model = (rows.get("model") or {}).get("sharpe_ratio")
    others = {k: v.get("sharpe_ratio") for k, v in rows.items()
              if k not in ("model", "oracle") and v.get("sharpe_ratio") is not None}
    if model is None or not others:
        return ""
    best = max(others, key=others.get)
    side = "above" if model > others[best] else "below"
    text = (f"<p><b>Against the best baseline</b>: {html.escape(_label(best))} has a net Sharpe of "
            f"{_fmt(others[best])}; the model's {_fmt(model)} is {side} it.")
    oracle = (rows.get("oracle") or {}).get("sharpe_ratio")
    if oracle is not None and oracle > 0:      # a synthetic market: how much of the planted edge was found
        text += (f" The oracle, who knows the planted drift, reaches {_fmt(oracle)}: the model captured "
                 f"{model / oracle:.2f} of its Sharpe.")
    return text + "</p>"


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
             'Win rate = winning closed trades / closed trades (0% when none closed). '
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
    files = [("", report_dir / "metrics.json")] if (report_dir / "metrics.json").is_file() else []
    files += [(p.name[: -len("metrics.json")], p) for p in sorted(report_dir.glob("*_metrics.json"))]
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
    is_backtest = first.get("kind") == "backtest"
    title = (f"Backtest {first.get('backtest_id', '')}" if is_backtest
             else f"Run {meta.get('run_id', first.get('run_id', report_dir.name))}")
    symbols = str(first.get("symbol", "")) if is_backtest else ", ".join(meta.get("symbols", []))
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
        if is_backtest:
            summary = {**summary, "range_label": "Backtest"}
        body.append(symbol_section(report_dir, summary, prefix))
    body.append(f'<h2>Training</h2><div class="card">{training}<p class="small">Validation numbers choose '
                'the checkpoint; they are not out-of-sample results.</p></div>')
    body.append(f"<h2>Provenance</h2>{metadata_section(first, meta, config_text)}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body><main>{"".join(body)}</main></body></html>')


def write_html_report(report_dir: Path, run_dir: Path | None = None,
                      tensorboard_dir: Path | None = None) -> Path:
    """Recount the Deflated Sharpe's trials, then render and write `report_dir/report.html` atomically."""
    from hftraining.deflated import refresh_report

    refresh_report(Path(report_dir))
    page = render_report(Path(report_dir), run_dir, tensorboard_dir)
    return atomic.write_text(Path(report_dir) / REPORT, page)


def write_report_html(report_dir: Path, run_dir: Path) -> str | None:
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

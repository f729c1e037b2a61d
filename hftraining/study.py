"""`hftrain study`: one configuration over many tickers, judged out of sample, as one table a skeptic trusts.

Why: one ticker's test Sharpe is mostly luck (its standard error is about 1 / sqrt(years)). A study
runs the same config on every ticker (and seed), compares each with buy-and-hold, momentum, the
volatility-targeted long and, on synthetic markets, the oracle on the same bars and costs, and
summarises with medians, means and wins out of N. Each study is itself a trial: its equal-weight book
of the tickers' test returns gets a Deflated Sharpe whose N counts every study run under the same
output root, so trying twenty configurations and reporting the best one is visible in the number.

Modes: `single` trains one model per ticker and seed; `base` trains one pooled model per seed and
evaluates it per ticker; `walk_forward` retrains each ticker's model every N bars and stitches its
out-of-sample segments. Validation numbers are reported beside test numbers; choose by validation.
"""

from __future__ import annotations

import hashlib
import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from hftraining import atomic, run_log
from hftraining.config import Config, to_yaml
from hftraining.errors import UserError
from hftraining.html_page import page
from hftraining.html_report import write_page, write_report_html
from hftraining.layout import Layout, new_run_id, parse_symbols
from hftraining.metrics import sharpe_ratio
from hftraining.significance import deflated_sharpe_ratio, probabilistic_sharpe_ratio
from hftraining.trials import read_trials, register_trial

log = logging.getLogger("hftraining")

MODES = ("single", "base", "walk_forward", "portfolio")
BASELINES = ("buy_and_hold", "momentum", "vol_long", "oracle")
PORTFOLIO_BASELINES = ("equal_weight", "buy_and_hold_equal", "min_variance", "momentum")
STUDY_KIND = "study"


@dataclass
class Outcome:
    """One trained model's result on one ticker's test range (one seed)."""

    symbol: str
    seed: int
    run_id: str
    val_sharpe: Optional[float]
    test: dict                      # the model's test metrics (metrics.json "model")
    baselines: dict                 # name -> test metrics of each baseline on the same bars
    net_returns: pd.Series          # model net return per test date
    test_start: str = ""
    test_end: str = ""
    val_baselines: dict = field(default_factory=dict)   # name -> each baseline's validation Sharpe, same bars


@dataclass
class StudyResult:
    study_id: str
    report_dir: Path
    rows: list[dict]
    overall: dict
    summary: dict = field(default_factory=dict)


# --- running the models ------------------------------------------------------------------------

def _returns_of(report_dir: Path, prefix: str = "") -> pd.Series:
    frame = pd.read_csv(report_dir / f"{prefix}test_returns.csv", parse_dates=["date"])
    return pd.Series(frame["net_return"].to_numpy(), index=frame["date"], name="net_return")


def _outcome(symbol: str, seed: int, run_id: str, val_sharpe, test_summary: dict, report_dir: Path,
             prefix: str = "", val_baselines: Optional[dict] = None) -> Outcome:
    return Outcome(symbol, seed, run_id, _finite(val_sharpe), test_summary["model"], test_summary["baselines"],
                   _returns_of(report_dir, prefix), test_summary.get("test_start", ""),
                   test_summary.get("test_end", ""), dict(val_baselines or {}))


def _seeded(config: Config, seed: int, run_name: str) -> Config:
    cfg = config.model_copy(deep=True)
    cfg.training.seed = seed
    cfg.paths.run_name = run_name
    return cfg


def traded_validation_sharpe(summary: dict) -> Optional[float]:
    """The validation net Sharpe of what the run trades: its model's, or the always-long prior's when it holds that."""
    prior = summary.get("prior") or {}
    if prior.get("holds_prior"):
        return prior.get("validation_sharpe_prior")
    return (summary.get("validation") or {}).get("sharpe_ratio")


def run_single_mode(symbols: list[str], config: Config, seeds: Sequence[int], study_id: str,
                    progress: bool) -> list[Outcome]:
    from hftraining.train_with_profit import run_single

    out = []
    for symbol in symbols:
        for seed in seeds:
            cfg = _seeded(config, seed, f"{study_id}-{symbol}-seed{seed}")
            cfg.data.symbols = [symbol]
            run = run_single(symbol, cfg, progress=progress)
            out.append(_outcome(symbol, seed, run.summary["run_id"], traded_validation_sharpe(run.summary),
                                run.test, run.report_dir, val_baselines=run.summary["validation_baselines"]))
            log.info("study %s: %s seed %d test Sharpe %.2f", study_id, symbol, seed,
                     run.test["model"].get("sharpe_ratio") or 0.0)
    return out


def run_base_mode(symbols: list[str], config: Config, seeds: Sequence[int], study_id: str,
                  progress: bool) -> list[Outcome]:
    """One pooled model per seed over every ticker, evaluated on each ticker's test range."""
    import torch

    from hftraining.base_model_trainer import train_base
    from hftraining.baselines import validation_sharpes
    from hftraining.data.panel import symbol_views
    from hftraining.evaluation import model_positions, simulate
    from hftraining.train_with_profit import evaluate_test

    out = []
    for seed in seeds:
        cfg = _seeded(config, seed, f"{study_id}-base-seed{seed}")
        base = train_base(symbols, cfg, progress=progress)
        report_dir = Layout.at(cfg.paths.root).report(base.run_id)
        info = {"run_id": base.run_id, "run_dir": str(base.run_dir), "kind": "base", "study": study_id}
        summaries = evaluate_test(base.model, base.prepared, cfg, report_dir, info)
        write_report_html(report_dir, base.run_dir)           # like every report folder: metrics.json + report.html
        panel, splits = base.prepared.panel, base.prepared.splits
        x = torch.from_numpy(base.prepared.scaler.transform(panel)).to(next(base.model.parameters()).device)
        for symbol, one, s, rows, val_bars in symbol_views(panel, x, splits.val):  # ragged: on its own bars
            if symbol not in summaries:                      # no test bars in this symbol's history
                continue
            val = simulate(one, s, val_bars, model_positions(base.model, rows, one, s, val_bars, cfg),
                           cfg.tracker, cfg.data.periods_per_year)
            prefix = "" if len(panel.symbols) == 1 else f"{symbol}_"
            out.append(_outcome(symbol, seed, base.run_id, val.metrics["sharpe_ratio"], summaries[symbol],
                                report_dir, prefix, validation_sharpes(one, s, val_bars, cfg)))
    return out


def run_walk_forward_mode(symbols: list[str], config: Config, seeds: Sequence[int], study_id: str,
                          progress: bool, retrain_every: int = 252) -> list[Outcome]:
    from hftraining.walk_forward import run_walk_forward

    out = []
    for symbol in symbols:
        for seed in seeds:
            cfg = _seeded(config, seed, f"{study_id}-{symbol}-wf-seed{seed}")
            result = run_walk_forward(symbol, cfg, retrain_every, progress=progress)
            vals = [traded_validation_sharpe({"validation": f.validation, "prior": f.prior}) for f in result.folds]
            vals = [v for v in vals if _finite(v) is not None]
            summary = {"model": result.summary["test"], "baselines": result.summary["baselines"],
                       "test_start": result.summary["test_start"], "test_end": result.summary["test_end"]}
            out.append(_outcome(symbol, seed, result.group_id, float(np.mean(vals)) if vals else None, summary,
                                result.report_dir))
    return out


# --- aggregation -------------------------------------------------------------------------------

def _finite(value) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _mean_std(values: list) -> tuple[Optional[float], Optional[float]]:
    vals = [v for v in map(_finite, values) if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def ticker_rows(outcomes: list[Outcome], baselines: Sequence[str] = BASELINES) -> list[dict]:
    """One row per ticker (or group): the model's mean ± std over seeds and each baseline, in ticker order."""
    rows = []
    for symbol in dict.fromkeys(o.symbol for o in outcomes):
        mine = [o for o in outcomes if o.symbol == symbol]
        sharpe, sharpe_std = _mean_std([o.test.get("sharpe_ratio") for o in mine])
        row = {"symbol": symbol, "seeds": [o.seed for o in mine], "runs": [o.run_id for o in mine],
               "test_start": mine[0].test_start, "test_end": mine[0].test_end,
               "model_sharpe": sharpe, "model_sharpe_std": sharpe_std,
               "model_val_sharpe": _mean_std([o.val_sharpe for o in mine])[0],
               "model_volatility": _mean_std([o.test.get("volatility") for o in mine])[0],
               "model_total_at_target": _mean_std([o.test.get("total_return_at_target") for o in mine])[0],
               "model_total_return": _mean_std([o.test.get("total_return") for o in mine])[0]}
        for name in baselines:
            metrics = mine[0].baselines.get(name)
            row[f"{name}_sharpe"] = _finite(metrics.get("sharpe_ratio")) if metrics else None
            row[f"{name}_total_at_target"] = _finite(metrics.get("total_return_at_target")) if metrics else None
            row[f"{name}_val_sharpe"] = _mean_std([o.val_baselines.get(name) for o in mine])[0]
        oracle = row.get("oracle_sharpe")
        row["edge_captured"] = sharpe / oracle if sharpe is not None and oracle and oracle > 0 else None
        rows.append(row)
    return rows


def overall(rows: list[dict], baselines: Sequence[str] = BASELINES) -> dict:
    """Medians and means over tickers (or groups), and the model's wins out of N against each baseline."""
    out: dict = {"n_tickers": len(rows)}
    for name in ("model", *baselines):
        values = [r[f"{name}_sharpe"] for r in rows if r.get(f"{name}_sharpe") is not None]
        if values:
            out[f"{name}_sharpe_median"] = float(np.median(values))
            out[f"{name}_sharpe_mean"] = float(np.mean(values))
    for name in ("model", *baselines):
        vals = [r[f"{name}_val_sharpe"] for r in rows if r.get(f"{name}_val_sharpe") is not None]
        if vals:
            out[f"{name}_val_sharpe_median"] = float(np.median(vals))
    for name in baselines:
        for test_or_val, key in (("", "sharpe"), ("val_", "val_sharpe")):
            pairs = [(r[f"model_{key}"], r[f"{name}_{key}"]) for r in rows
                     if r.get(f"model_{key}") is not None and r.get(f"{name}_{key}") is not None]
            if pairs:
                out[f"{test_or_val}wins_vs_{name}"] = sum(1 for m, b in pairs if m > b)
                out[f"{test_or_val}n_vs_{name}"] = len(pairs)
    captured = [r["edge_captured"] for r in rows if r.get("edge_captured") is not None]
    if captured:
        out["edge_captured_median"] = float(np.median(captured))
        out["edge_captured_mean"] = float(np.mean(captured))
    return out


def study_book(outcomes: list[Outcome]) -> pd.Series:
    """Equal-weight book: each date's mean over tickers (each averaged over its seeds) of the model's net return."""
    per_ticker = {}
    for symbol in dict.fromkeys(o.symbol for o in outcomes):
        series = [o.net_returns for o in outcomes if o.symbol == symbol]
        per_ticker[symbol] = pd.concat(series, axis=1).mean(axis=1)
    return pd.concat(per_ticker, axis=1).sort_index().mean(axis=1, skipna=True)


def config_fingerprint(config: Config, mode: str, seeds: Sequence[int]) -> str:
    """A short hash of what makes a study configuration (output root and run names excluded)."""
    cfg = config.model_copy(deep=True)
    cfg.paths.root, cfg.paths.run_name, cfg.data.symbols = "-", None, []
    text = f"{to_yaml(cfg)}\nmode={mode}\nseeds={list(seeds)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def book_significance(book: pd.Series, root, study_id: str, periods_per_year: int) -> dict:
    """PSR and a DSR whose N is every study run under this output root (this one included)."""
    net = book.to_numpy()
    sharpe = sharpe_ratio(net, periods_per_year)
    others = [r for r in read_trials(root) if r.get("kind") == STUDY_KIND and r["run_id"] != study_id]
    sharpes = [s for s in (_finite(r.get("test_sharpe")) for r in others) if s is not None] + [sharpe]
    dsr = deflated_sharpe_ratio(net, len(others) + 1, sharpes, periods_per_year)
    dsr["n_trials_source"] = (f"{len(others)} earlier study run(s) registered in {Path(root) / 'trials.jsonl'} "
                              "plus this one")
    return {"sharpe": sharpe, "bars": int(len(net)), "psr": probabilistic_sharpe_ratio(net, 0.0, periods_per_year),
            **dsr}


# --- the command ------------------------------------------------------------------------------

@run_log.captured
def run_study(symbols: Sequence[str], config: Config, mode: str = "single", seeds: Sequence[int] = (0,),
              retrain_every: int = 252, progress: bool = True,
              groups: Optional[Sequence[Sequence[str]]] = None) -> StudyResult:
    """`groups` (portfolio mode only): the asset groups, e.g. [["AAPL", "MSFT"], ["SPY", "AGG", "GLD"]]."""
    groups = portfolio_groups(groups, mode)
    symbols = parse_symbols(list(symbols)) if groups is None else list(dict.fromkeys(s for g in groups for s in g))
    if len(symbols) < 1:
        raise UserError("hftrain study: no stocks given; use --stocks AAPL MSFT ... or --stocks-file FILE")
    if mode not in MODES:
        raise UserError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    seeds = [int(s) for s in seeds] or [config.training.seed]
    if len(set(seeds)) != len(seeds):
        raise UserError("--seeds: each seed may be given once")
    root = Path(config.paths.root)
    layout = Layout.at(root)
    layout.ensure_writable()
    study_id = config.paths.run_name or new_run_id("study-")
    report_dir = layout.report(study_id)
    if report_dir.exists():
        raise UserError(f"{report_dir} already exists; choose another paths.run_name")
    run_log.attach(root, study_id)
    base_config = config.model_copy(deep=True)
    base_config.paths.run_name = None
    log.info("study %s: %s mode, %d %s x %d seeds", study_id, mode, len(groups or symbols),
             "groups" if groups else "tickers", len(seeds))
    baselines = BASELINES
    if mode == "portfolio":
        outcomes = run_portfolio_mode(groups, base_config, seeds, study_id, progress)
        baselines = PORTFOLIO_BASELINES
    elif mode == "single":
        outcomes = run_single_mode(symbols, base_config, seeds, study_id, progress)
    elif mode == "base":
        outcomes = run_base_mode(symbols, base_config, seeds, study_id, progress)
    else:
        outcomes = run_walk_forward_mode(symbols, base_config, seeds, study_id, progress, retrain_every)

    rows = ticker_rows(outcomes, baselines)
    summary_all = overall(rows, baselines)
    ppy = config.data.periods_per_year
    book = study_book(outcomes)
    significance = book_significance(book, root, study_id, ppy)
    val_book = [r["model_val_sharpe"] for r in rows if r.get("model_val_sharpe") is not None]
    fingerprint = config_fingerprint(config, mode, seeds)
    summary = {"study_id": study_id, "kind": STUDY_KIND, "mode": mode, "seeds": seeds, "symbols": symbols,
               "config_fingerprint": fingerprint, "report_dir": str(report_dir),
               "synthetic": config.data.source == "synthetic", "cost_bps": config.profit.transaction_cost_bps,
               "sigma_target": config.profit.sigma_target, "rows": rows, "overall": summary_all,
               "book": significance, "config": config.model_dump(mode="json"), "baselines": list(baselines)}
    if groups is not None:
        summary["groups"] = [list(g) for g in groups]
    report_dir.mkdir(parents=True, exist_ok=False)
    atomic.write_json(report_dir / "metrics.json", summary)
    register_trial(root, study_id, STUDY_KIND, symbols, float(np.median(val_book)) if val_book else None,
                   significance["sharpe"], mode=mode, config_fingerprint=fingerprint, seeds=seeds)
    write_page(report_dir, render_html(summary))
    return StudyResult(study_id, report_dir, rows, summary_all, summary)


# --- portfolio mode: one allocation policy per group of assets --------------------------------------

def portfolio_groups(groups: Optional[Sequence[Sequence[str]]], mode: str) -> Optional[list[list[str]]]:
    """The groups of a portfolio study, each normalised and of two or more symbols; None for other modes."""
    if mode != "portfolio":
        if groups:
            raise UserError(f"--pairs needs --mode portfolio (got --mode {mode})")
        return None
    if not groups:
        raise UserError("hftrain study --mode portfolio: no groups given; use --pairs AAPL,MSFT --pairs SPY,AGG,GLD")
    out = []
    for group in groups:
        symbols = parse_symbols(list(group))
        if len(symbols) < 2:
            raise UserError(f"--pairs {','.join(group)}: a group needs at least two different symbols, e.g. AAPL,MSFT")
        out.append(symbols)
    names = ["_".join(g) for g in out]
    if len(set(names)) != len(names):
        raise UserError("--pairs: each group may be given once")
    return out


def run_portfolio_mode(groups: list[list[str]], config: Config, seeds: Sequence[int], study_id: str,
                       progress: bool) -> list[Outcome]:
    """One `hftrain portfolio` run per group and seed; its test book vs 1/N, buy-and-hold 1/N, minimum variance
    and the long-only momentum book."""
    from hftraining.portfolio import run_portfolio

    out = []
    for group in groups:
        name = "_".join(group)
        for seed in seeds:
            cfg = _seeded(config, seed, f"{study_id}-{name}-seed{seed}")
            run = run_portfolio(group, cfg, progress=progress)
            s = run.summary
            out.append(Outcome(name, seed, s["run_id"], _finite(s["validation"].get("sharpe_ratio")), s["test"],
                               s["baselines"], _returns_of(run.report_dir), s["test_start"], s["test_end"]))
            log.info("study %s: %s seed %d test Sharpe %.2f (1/N %.2f)", study_id, name, seed,
                     s["test"].get("sharpe_ratio") or 0.0, s["baselines"]["equal_weight"].get("sharpe_ratio") or 0.0)
    return out


PORTFOLIO_COLUMNS = [("model_val_sharpe", "val"), ("model_sharpe", "policy"), ("model_sharpe_std", "± seeds"),
                     ("equal_weight_sharpe", "1/N"), ("buy_and_hold_equal_sharpe", "B&H 1/N"),
                     ("min_variance_sharpe", "min var"), ("momentum_sharpe", "momentum"),
                     ("model_volatility", "policy vol"),
                     ("model_total_return", "policy tot")]


# --- presentation -----------------------------------------------------------------------------

COLUMNS = [("model_val_sharpe", "val"), ("vol_long_val_sharpe", "vol long val"),
           ("model_sharpe", "model"), ("model_sharpe_std", "± seeds"),
           ("buy_and_hold_sharpe", "B&H"), ("momentum_sharpe", "momentum"), ("vol_long_sharpe", "vol long"),
           ("oracle_sharpe", "oracle"),
           ("model_volatility", "model vol"), ("model_total_at_target", "model tot@σ"),
           ("buy_and_hold_total_at_target", "B&H tot@σ"), ("momentum_total_at_target", "mom tot@σ")]


def _width(header: str) -> int:
    """A column's width: 12, or wider so that a long header keeps a space before it."""
    return max(12, len(header) + 2)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def _layout(summary: dict) -> tuple[list, tuple, str, int]:
    """(columns, baseline names, row label, label width) of a study's tables: per ticker, or per group."""
    if summary.get("mode") == "portfolio":
        return PORTFOLIO_COLUMNS, PORTFOLIO_BASELINES, "group", 16
    return COLUMNS, BASELINES, "ticker", 8


def format_study(result: StudyResult) -> str:
    """The terminal table: test net Sharpe per ticker (model mean ± std over seeds) and the overall lines."""
    s, o = result.summary, result.overall
    all_columns, names, label, width = _layout(s)
    columns = [c for c in all_columns if any(r.get(c[0]) is not None for r in result.rows)]
    scale = ("tot = total return" if label == "group"
             else f"tot@σ = total return at {s['sigma_target']:.0%} volatility")
    lines = [f"study {s['study_id']} ({s['mode']}, {len(s['seeds'])} seed(s), net of {s['cost_bps']:g} bps; "
             f"Sharpe on each {label}'s test range; {scale})",
             f"{label:<{width}}" + "".join(f"{text:>{_width(text)}}" for _, text in columns)]
    for row in result.rows:
        lines.append(f"{row['symbol']:<{width}}" + "".join(f"{_cell(row.get(key)):>{_width(text)}}"
                                                          for key, text in columns))
    medians = {f"{n}_{key}": o.get(f"{n}_{key}_median") for n in ("model", *names) for key in ("sharpe", "val_sharpe")}
    lines.append(f"{'median':<{width}}" + "".join(f"{_cell(medians.get(key)):>{_width(text)}}"
                                                  for key, text in columns))
    wins = ", ".join(f"{o[f'wins_vs_{n}']}/{o[f'n_vs_{n}']} vs {n}" for n in names if f"wins_vs_{n}" in o)
    lines.append(f"model wins: {wins}")
    val_wins = ", ".join(f"{o[f'val_wins_vs_{n}']}/{o[f'val_n_vs_{n}']} vs {n}" for n in names
                         if f"val_wins_vs_{n}" in o)
    if val_wins:
        lines.append(f"on validation (compare configurations by these): model wins {val_wins}")
    if "edge_captured_median" in o:
        lines.append(f"edge captured (model / oracle Sharpe): median {o['edge_captured_median']:.2f}, "
                     f"mean {o['edge_captured_mean']:.2f}")
    b = s["book"]
    lines.append(f"equal-weight book of the {label}s: Sharpe {b['sharpe']:.2f} over {b['bars']} bars, "
                 f"PSR {b['psr']:.3f}, DSR {b['dsr']:.3f} (N={b['n_trials']} study runs under this output root)")
    lines.append(f"metrics: {result.report_dir / 'metrics.json'}\nreport: {result.report_dir / 'report.html'}")
    return "\n".join(lines)


def render_html(summary: dict) -> str:
    """A self-contained page: the per-ticker table, the overall lines and the configuration."""
    o, b = summary["overall"], summary["book"]
    all_columns, _, label, _ = _layout(summary)
    columns = [c for c in all_columns if any(r.get(c[0]) is not None for r in summary["rows"])]
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    ticker_rows_html = "".join(
        "<tr><td>" + html.escape(r["symbol"]) + "</td>"
        + "".join(f"<td>{_cell(r.get(key))}</td>" for key, _ in columns) + "</tr>" for r in summary["rows"])
    stats = "".join(f"<tr><td>{html.escape(k)}</td><td>{_cell(v)}</td></tr>" for k, v in o.items())
    book = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_cell(v))}</td></tr>" for k, v in b.items())
    synthetic = ('<div class="banner synthetic">SYNTHETIC market: not real prices</div>'
                 if summary.get("synthetic") else "")
    body = f"""<h1>Study {html.escape(summary['study_id'])}</h1>{synthetic}
<p class="sub">Mode {html.escape(summary['mode'])}, seeds {summary['seeds']}, net of {summary['cost_bps']:g} bps. Test
net Sharpe per ticker (model: mean over seeds, ± their std), validation Sharpe beside it; tot@σ is the total return
rescaled to {summary['sigma_target']:.0%} annual volatility. Choose configurations by validation, never by test.</p>
<div class="card"><table><tr><th>{label}</th>{head}</tr>{ticker_rows_html}</table></div>
<h2>Overall</h2><div class="card"><table class="narrow">{stats}</table></div>
<h2>Equal-weight book and its Deflated Sharpe</h2><div class="card"><table class="narrow">{book}</table></div>
<h2>Configuration</h2><pre>{html.escape(str(summary.get('config_fingerprint')))}</pre>"""
    return page(f"Study {summary['study_id']}", body)

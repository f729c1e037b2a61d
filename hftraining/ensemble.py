"""`hftrain ensemble`: average the positions of several trained runs and judge the average like any model.

Each member keeps its own scaler, context length and data settings: its features are built with its own
data config (forecast backend actually used, forecast context, mode, model), because a member fed another
forecaster's numbers under the same feature names trades on inputs it never saw. The feature names must
match, and the members are scored on the dates every member's panel has. The default range is the test
range the members share (from their metadata), so the ensemble is scored on bars none of them trained on
or was selected on; a range that reaches into a member's training or validation bars is reported, with a
warning, as in-sample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from hftraining import checkpoint as ckpt
from hftraining.config import Config
from hftraining.data.panel import Panel, build_panel
from hftraining.errors import UserError
from hftraining.evaluation import model_positions, simulate
from hftraining.layout import Layout, new_run_id, normalize_symbol
from hftraining.model import AllocationTransformer
from hftraining.trials import TrialScope, register_trial

log = logging.getLogger("hftraining")


def average_predictions(positions: Sequence[np.ndarray], weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """Weighted mean of several members' position series (weights are normalised to sum to 1)."""
    if len(positions) == 0:
        raise ValueError("average_predictions needs at least one position array")
    arrays = [np.asarray(p, dtype=np.float64).reshape(-1) for p in positions]
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"position arrays differ in length: {[a.size for a in arrays]}")
    stacked = np.stack(arrays)
    w = np.ones(len(positions)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(positions),):
        raise ValueError(f"{w.size} weights for {len(positions)} position arrays")
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w.tolist()}")
    return (w / w.sum()) @ stacked


@dataclass
class Member:
    name: str
    run: ckpt.RunFiles
    model: AllocationTransformer


def load_members(paths: Sequence[str | Path], device: torch.device | str = "cpu") -> list[Member]:
    """Open each run; refuse a member whose feature names differ from the first one's."""
    if len(paths) < 2:
        raise UserError("ensemble: give at least two runs with --models RUN1 RUN2 ...")
    members: list[Member] = []
    for path in paths:
        run = ckpt.open_run(path)
        name = str(run.metadata.get("run_id") or Path(path).name)
        if any(m.name == name for m in members):
            name = f"{name}#{len(members)}"
        members.append(Member(name, run, run.model(device)))
    first = members[0]
    for member in members[1:]:
        ours, theirs = first.run.scaler.feature_names, member.run.scaler.feature_names
        if ours != theirs:
            diff = sorted(set(ours) ^ set(theirs)) or ["same names in another order"]
            raise UserError(f"ensemble: {member.run.path} uses a different feature set from {first.run.path} "
                            f"({', '.join(diff[:6])}); members must share their features")
    return members


def _forecast_used(run: ckpt.RunFiles) -> str:
    """The forecaster the run's features came from (after any fallback), else the one its config asks for."""
    from hftraining.replay import forecast_backend_used

    return forecast_backend_used(run.metadata) or run.config.data.resolved_forecast_backend


def _date_index(panel: Panel, date: str, side: str) -> int:
    """First bar on/after `date` (side='left') or one past the last bar on/before it (side='right')."""
    return int(np.searchsorted(panel.dates, np.datetime64(date, "ns"), side=side))


def decision_range(panel: Panel, members: list[Member], start: Optional[str], end: Optional[str]) -> tuple[range, str]:
    """Decision bars for the ensemble and where the range came from (CLI dates or the common test range)."""
    origin = "--start/--end"
    if start is None and end is None:
        tests = [m.run.metadata.get("splits", {}).get("test") for m in members]
        if any(t is None for t in tests):
            missing = next(m.name for m, t in zip(members, tests, strict=True) if t is None)
            raise UserError(f"ensemble: run {missing} records no test range; pass --start and --end")
        start, end = max(t["start"] for t in tests), min(t["end"] for t in tests)
        if start > end:
            raise UserError(f"ensemble: the members' test ranges do not overlap (latest start {start}, earliest "
                            f"end {end}); pass --start and --end")
        origin = "the members' common test range"
    start = start or panel.date_str(0)
    end = end or panel.date_str(panel.n_time - 1)
    context = max(m.model.context_length for m in members)
    lo = max(_date_index(panel, start, "left"), context - 1)
    hi = min(_date_index(panel, end, "right"), panel.n_time - 1)   # the last bar has no next-bar return
    if hi - lo < 2:
        raise UserError(f"ensemble: no decision bars between {start} and {end} with {context} bars of history "
                        f"before them and a next bar after them (data covers {panel.date_str(0)} .. "
                        f"{panel.date_str(panel.n_time - 1)})")
    return range(lo, hi), origin


def in_sample_members(panel: Panel, members: list[Member], decisions: range) -> list[str]:
    """Members whose training or validation dates overlap the decision range, as text."""
    from hftraining.replay import in_sample_overlap

    first, last = panel.date_str(decisions.start), panel.date_str(decisions.stop - 1)
    out = []
    for m in members:
        if not (m.run.metadata.get("splits") or {}).get("train"):
            out.append(f"{m.name} (records no splits)")
        elif overlap := in_sample_overlap(m.run.metadata, first, last):
            out.append(f"{m.name} ({' and '.join(overlap)})")
    return out


def member_positions(member: Member, panel: Panel, symbol: int, decisions: range) -> np.ndarray:
    """One member's positions with its own scaler, exactly as its backtest would compute them."""
    device = next(member.model.parameters()).device
    x = torch.from_numpy(member.run.scaler.transform(panel)).to(device)
    return model_positions(member.model, x, panel, symbol, decisions, member.run.config)


def panel_config(member: Member, symbol: str, out: Optional[Path], source: Optional[str],
                 data_dir: Optional[Path]) -> Config:
    """The member's own data settings (so its features are the ones it trained on), with the data options applied.

    data.end is cleared: --end selects decisions after featurising, it does not cut bars (as in backtest).
    """
    from hftraining.replay import output_root

    cfg = member.run.config.model_copy(deep=True)
    cfg.data.forecast_backend = _forecast_used(member.run)        # the features the weights learned from
    cfg.data.symbols = [symbol]
    cfg.data.end = None
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)
        cfg.data.source = source or "csv"
    elif source is not None:
        cfg.data.source = source
    cfg.paths.root = str(output_root(member.run.path, out, cfg))
    return cfg


def member_panels(members: list[Member], symbol: str, out: Optional[Path], source: Optional[str],
                  data_dir: Optional[Path], progress: bool = False) -> tuple[list[Panel], Panel]:
    """Each member's panel from its own data config (built once per distinct config), and the reference
    panel: the one starting last, whose dates every other panel must hold (forecast warm-ups differ)."""
    built: dict[str, Panel] = {}
    panels = []
    for m in members:
        cfg = panel_config(m, symbol, out, source, data_dir)
        key = cfg.data.model_dump_json()
        if key not in built:
            built[key] = build_panel([symbol], cfg, Path(cfg.paths.root), progress=progress,
                                     min_bars=m.model.context_length + 2)
        panels.append(built[key])
    reference = max(panels, key=lambda p: p.dates[0])
    for m, panel in zip(members, panels, strict=True):
        if not np.isin(reference.dates, panel.dates).all():
            raise UserError(f"ensemble: {m.run.path}'s data for {symbol} lacks some dates the other members have; "
                            "ensemble runs trained on the same bars")
    return panels, reference


def on_panel(panel: Panel, reference: Panel, decisions: range) -> range:
    """The reference panel's decision bars as indices of another panel holding the same dates."""
    start = int(np.searchsorted(panel.dates, reference.dates[decisions.start]))
    return range(start, start + len(decisions))


@dataclass
class EnsembleResult:
    run_id: str
    report_dir: Path
    summary: dict
    table: dict


def run_ensemble(models: Sequence[str | Path], stock: Optional[str] = None, start: Optional[str] = None,
                 end: Optional[str] = None, out: Optional[Path] = None, source: Optional[str] = None,
                 data_dir: Optional[Path] = None, weights: Optional[Sequence[float]] = None,
                 device: str = "cpu", progress: bool = False) -> EnsembleResult:
    """Score the averaged positions of `models` against each member and buy-and-hold on the same bars."""
    from hftraining.trainer import resolve_device

    members = load_members(models, resolve_device(device))
    symbol = normalize_symbol(stock or members[0].run.metadata.get("symbols", [None])[0] or "")
    cfg = panel_config(members[0], symbol, out, source, data_dir)        # costs, periods, output root
    panels, panel = member_panels(members, symbol, out, source, data_dir, progress)
    decisions, origin = decision_range(panel, members, start, end)
    s = panel.symbol_index(symbol)
    inside = in_sample_members(panel, members, decisions)
    if inside:
        log.warning("IN SAMPLE: ensemble range %s .. %s overlaps %s", panel.date_str(decisions.start),
                    panel.date_str(decisions.stop - 1), "; ".join(inside))

    from hftraining.report import evaluate_and_report

    tracker, ppy = cfg.tracker, cfg.data.periods_per_year
    per_member = {m.name: member_positions(m, own, s, on_panel(own, panel, decisions))
                  for m, own in zip(members, panels, strict=True)}
    member_sims = {name: simulate(panel, s, decisions, pos, tracker, ppy) for name, pos in per_member.items()}
    run_id = new_run_id("ensemble-")
    report_dir = Layout.at(cfg.paths.root).report(run_id)
    info = {"run_id": run_id, "kind": "ensemble", "range_from": origin, "in_sample": bool(inside),
            "in_sample_members": inside, "weights": None if weights is None else [float(w) for w in weights],
            "synthetic": any(v == "synthetic" for v in panel.data_source.values()),
            "members": {name: str(m.run.path) for name, m in zip(per_member, members, strict=True)}}
    # the ensemble is one more try on this symbol: it counts in the Deflated Sharpe's N, and is registered
    trials = TrialScope(cfg.paths.root, [symbol], run_id=run_id)
    report = evaluate_and_report(report_dir, panel, s, decisions, average_predictions(list(per_member.values()),
                                 weights), cfg, info, trials=trials, extra_baselines=member_sims).summary
    register_trial(cfg.paths.root, run_id, "ensemble", [symbol], None, report["model"].get("sharpe_ratio"),
                   members=info["members"])
    members_metrics = {name: report["baselines"][name] for name in per_member}
    others = {k: v for k, v in report["baselines"].items() if k not in per_member}
    from hftraining.html_report import write_report_html

    summary = {"ensemble_run": run_id, "symbol": symbol, "report_dir": str(report_dir),
               "report_html": write_report_html(report_dir, None),
               "start": report["test_start"], "end": report["test_end"], "bars": report["test_bars"],
               "range_from": origin, "in_sample": bool(inside), "ensemble": report["model"],
               "members": members_metrics, "baselines": others,
               "significance": report.get("significance"), "cost_sensitivity": report.get("cost_sensitivity")}
    table = {"ensemble": report["model"], **members_metrics, **others}
    return EnsembleResult(run_id, report_dir, summary, table)

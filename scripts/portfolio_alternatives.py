"""Compare portfolio-policy alternatives on VALIDATION only: which objective, prior and regulariser to default to.

For each group the aligned panel is built once; each alternative (a set of `--set`-style overrides) is
trained per seed exactly as `hftrain portfolio` trains (portfolio.fit_policy, selection on validation)
and scored on the validation range next to 1/N rebalanced, the inverse-volatility book and minimum
variance on the same bars and costs. Test bars are never simulated here: choose defaults from this
table, then run `hftrain study --mode portfolio` once with the chosen config.

    OMP_NUM_THREADS=1 python scripts/portfolio_alternatives.py --data-dir ../shared/data/daily \\
        --groups AAPL,MSFT SPY,AGG,GLD --seeds 0 1 2 --alt base= --alt pooled=portfolio.objective=sharpe

Writes <out>/bench/<tag>.json: per alternative, group and seed the selected checkpoint's validation net
Sharpe ("val_best", optimistic: the best of several evaluations), the last evaluation's ("val_last", no
selection) and the best step; per group the baselines' validation Sharpe. With --holdout, checkpoints are
selected on the first half of the validation range and scored on the second ("val_b"): the honest way to
compare alternatives that differ in how they select (e.g. portfolio.prior_candidate).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_GROUPS = ["AAPL,MSFT", "SPY,AGG,GLD", "JPM,BAC", "XOM,DBC", "PG,PEP,JNJ", "VTI,AGG", "GOOGL,AMZN,META",
                  "HD,NKE,DIS"]


def parse_alt(text: str) -> tuple[str, list[str]]:
    """'name=key=value;key=value' -> (name, ['key=value', ...]); 'name=' is the config as given."""
    name, _, rest = text.partition("=")
    return name, [s for s in rest.split(";") if s]


def baseline_sharpes(data, config, holdout: bool) -> dict:
    from hftraining.portfolio import prior_logits
    from hftraining.portfolio_sim import baselines, rebalance_offsets, simulate_portfolio

    cost = config.tracker.commission + config.tracker.slippage
    ppy = config.data.periods_per_year
    out = {}
    ranges = [("", data.splits.val)] + ([("_b", data.splits.test)] if holdout else [])   # holdout: val's 2nd half
    for suffix, val in ranges:
        books = baselines(data.returns, val, data.every, cost, data.symbols, ppy)
        for name in ("equal_weight", "buy_and_hold_equal", "min_variance"):
            out[name + suffix] = books[name].metrics["sharpe_ratio"]
        offsets = rebalance_offsets(len(val), data.every)
        logits = prior_logits(data.returns, "inverse_vol", config.profit.vol_span)[val.start + offsets]
        inverse = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        out["inverse_vol" + suffix] = simulate_portfolio(data.returns[val.start:val.stop], offsets, inverse, cost,
                                                         ppy).metrics["sharpe_ratio"]
    return out


def holdout_split(prepared):
    """Validation cut in two: checkpoints are selected on the first half and scored on the second (no test bars)."""
    from dataclasses import replace

    from hftraining.train_with_profit import Prepared

    val = prepared.splits.val
    mid = val.start + len(val) // 2
    splits = replace(prepared.splits, val=range(val.start, mid), test=range(mid, val.stop))
    return Prepared(prepared.panel, splits, prepared.scaler)


def fit_one(prepared, config, seed: int, scratch: Path, holdout: bool) -> tuple[dict, object]:
    import torch

    from hftraining.portfolio import PairStockDataset, build_policy, evaluate_policy, fit_policy, rebalance_every

    cfg = config.model_copy(deep=True)
    cfg.training.seed = seed
    device = torch.device("cpu")
    data = PairStockDataset(prepared, rebalance_every(cfg), cfg.portfolio.episode_rebalances, device,
                            cfg.portfolio.prior, cfg.profit.vol_span)
    torch.manual_seed(seed)
    policy = build_policy(len(prepared.panel.feature_names), len(prepared.panel.symbols), cfg).to(device)
    start = time.time()
    fit = fit_policy(policy, data, cfg, scratch / "best.safetensors", scratch / "tb", progress=False)
    row = {"seed": seed, "val_best": fit.best_metrics.get("sharpe_ratio"), "best_step": fit.best_step,
           "val_last": fit.history[-1]["sharpe_ratio"], "val_first": fit.history[0]["sharpe_ratio"],
           "steps": fit.steps_done, "seconds": round(time.time() - start, 1)}
    if holdout:          # splits.test is the second half of validation here (holdout_split), never the real test
        held_out = evaluate_policy(policy, data, data.splits.test, cfg).sim
        row.update(val_b=held_out.metrics["sharpe_ratio"], val_b_cash=float(held_out.cash.mean()))
    return row, data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/daily")
    parser.add_argument("--groups", nargs="+", default=DEFAULT_GROUPS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--alt", action="append", default=None, help="name=key=value;key=value (repeatable)")
    parser.add_argument("--set", dest="common", action="append", default=[], help="override for every alternative")
    parser.add_argument("--config", default=None)
    parser.add_argument("--out", default="runs")
    parser.add_argument("--tag", default="portfolio_alternatives")
    parser.add_argument("--holdout", action="store_true",
                        help="select on the first half of validation, score on the second half (val_b)")
    args = parser.parse_args(argv)

    from hftraining.config import load_config
    from hftraining.layout import parse_symbols
    from hftraining.portfolio import pooled_scaler, prepare_aligned
    from hftraining.train_with_profit import Prepared

    alts = [parse_alt(a) for a in (args.alt or ["default="])]
    common = ["data.source=csv", f"data.data_dir={args.data_dir}", "data.forecast_backend=statistical",
              f"paths.root={args.out}", "training.device=cpu", *args.common]
    report = {"groups": args.groups, "seeds": args.seeds, "common": common, "alternatives": {}, "baselines": {}}
    path = Path(args.out) / "bench" / f"{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for group_text in args.groups:
        group = parse_symbols(group_text)
        name = "_".join(group)
        base_cfg = load_config(args.config, common)
        prepared = prepare_aligned(group, base_cfg, progress=False)
        prepared = Prepared(prepared.panel, prepared.splits,
                            pooled_scaler(prepared.panel, prepared.splits.train, base_cfg.data.context_length))
        if args.holdout:
            prepared = holdout_split(prepared)
        for alt_name, overrides in alts:
            cfg = load_config(args.config, common + overrides)
            rows = []
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as scratch:
                    row, data = fit_one(prepared, cfg, seed, Path(scratch), args.holdout)
                rows.append(row)
            if name not in report["baselines"]:
                report["baselines"][name] = baseline_sharpes(data, cfg, args.holdout)
            report["alternatives"].setdefault(alt_name, {"overrides": overrides, "groups": {}})["groups"][name] = rows
            vb = np.mean([r["val_best"] for r in rows])
            vl = np.mean([r["val_last"] for r in rows])
            b = report["baselines"][name]
            held = (f"val_b {np.mean([r['val_b'] for r in rows]):6.3f} (1/N {b['equal_weight_b']:6.3f})  "
                    if args.holdout else "")
            print(f"{name:<16} {alt_name:<14} val_best {vb:6.3f} val_last {vl:6.3f}  1/N "
                  f"{b['equal_weight']:6.3f}  {held}steps "
                  f"{[r['best_step'] for r in rows]}  {sum(r['seconds'] for r in rows):.0f}s", flush=True)
        path.write_text(json.dumps(report, indent=1))
    print(summarise(report))
    return 0


def summarise(report: dict) -> str:
    """Median over groups of each alternative's seed-mean validation Sharpe, and wins vs 1/N on validation."""
    groups = list(report["baselines"])
    holdout = all("equal_weight_b" in report["baselines"][g] for g in groups)
    lines = [f"{'alternative':<16}{'val_best med':>13}{'val_last med':>13}{'wins(last) vs 1/N':>19}"
             + (f"{'val_b med':>11}{'wins(b)':>9}" if holdout else "")]
    for name in ("equal_weight", "inverse_vol", "min_variance", "buy_and_hold_equal"):
        b = f"{np.median([report['baselines'][g][name + '_b'] for g in groups]):>43.3f}" if holdout else ""
        lines.append(f"{name:<16}{np.median([report['baselines'][g][name] for g in groups]):>13.3f}{b}")
    for alt, info in report["alternatives"].items():
        done = [g for g in groups if g in info["groups"]]
        best = [np.mean([r["val_best"] for r in info["groups"][g]]) for g in done]
        last = [np.mean([r["val_last"] for r in info["groups"][g]]) for g in done]
        wins = sum(v > report["baselines"][g]["equal_weight"] for v, g in zip(last, done, strict=True))
        line = f"{alt:<16}{np.median(best):>13.3f}{np.median(last):>13.3f}{wins:>15}/{len(done)}"
        if holdout:
            held = [np.mean([r["val_b"] for r in info["groups"][g]]) for g in done]
            wins_b = sum(v > report["baselines"][g]["equal_weight_b"] for v, g in zip(held, done, strict=True))
            line += f"{np.median(held):>14.3f}{wins_b:>7}/{len(done)}"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

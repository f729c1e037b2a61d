"""A base, its fine-tunes and their baselines compared per stock on the same test bars and costs.

`simulate_test_range` runs every model and the baselines over one stock's test range;
`write_comparison` writes per-stock `<SYMBOL>_metrics.json` and `<SYMBOL>_test_returns.csv` of the
leading model (the fine-tune when there is one), one `metrics.json` with every stock's rows and the
average over stocks (the same file name as every other report folder), and registers each newly
trained model as a trial so later Deflated Sharpe ratios count it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hftraining import atomic
from hftraining.baselines import single_asset_baselines
from hftraining.config import Config
from hftraining.evaluation import Simulation, average_metrics, model_positions, simulate
from hftraining.prepare import Prepared
from hftraining.report import add_row_metrics, write_test_report

COMPARISON = "metrics.json"      # every stock's rows and the average; each stock's own file is <SYMBOL>_metrics.json

# Order of the strategies in the report; `finetuned` is the product, the rest are its comparisons.
STRATEGIES = ["finetuned", "base", "single", "buy_and_hold", "momentum", "vol_long", "oracle"]


def simulate_test_range(models: dict[str, torch.nn.Module], prepared: Prepared,
                        config: Config) -> dict[str, Simulation]:
    """Every model and the baselines (buy-and-hold, momentum, the vol-targeted long, the oracle on synthetic
    data) on the same test bars of a one-symbol panel, with the same costs."""
    panel, splits = prepared.panel, prepared.splits
    x = torch.from_numpy(prepared.scaler.transform(panel))
    ppy = config.data.periods_per_year
    sims = {}
    for name, model in models.items():
        positions = model_positions(model, x.to(next(model.parameters()).device), panel, 0, splits.test, config)
        sims[name] = simulate(panel, 0, splits.test, positions, config.tracker, ppy)
    sims.update(single_asset_baselines(panel, 0, splits.test, config.tracker, ppy, config))
    for sim in sims.values():
        add_row_metrics(sim, config.profit.sigma_target, ppy)
    return sims


def write_comparison(report_dir: Path, sims_by_symbol: dict[str, dict[str, Simulation]], info: dict,
                     runs: dict[str, dict], trials_root: Path | None = None, new_models: tuple[str, ...] = ()) -> dict:
    """Per stock <SYMBOL>_metrics.json + <SYMBOL>_test_returns.csv (of the leading model) and one metrics.json.

    Each model in `new_models` (trained by this command) is appended to the trial registry under
    `trials_root`, one trial per stock, so the Deflated Sharpe of later reports counts it.
    """
    stocks = {}
    for symbol, sims in sims_by_symbol.items():
        names = [n for n in STRATEGIES if n in sims]
        lead, others = names[0], {n: sims[n] for n in names[1:]}
        extra = {"model_name": lead, "runs": runs.get(symbol, {})}
        if trials_root is not None:             # PSR, DSR and bootstrap interval of the leading model
            extra["significance"] = lead_significance(sims[lead], trials_root, f"{info['run_id']}/{lead}/{symbol}",
                                                      symbol, lead in new_models, info["periods_per_year"])
        summary = write_test_report(report_dir, sims[lead], others, {**info, **extra}, prefix=f"{symbol}_")
        stocks[symbol] = {"test_start": summary["test_start"], "test_end": summary["test_end"],
                          "test_bars": summary["test_bars"], "runs": runs.get(symbol, {}), "model_name": lead,
                          "strategies": {lead: summary["model"], **summary["baselines"]}}
    average = {}
    for name in STRATEGIES:
        rows = {s: v["strategies"][name] for s, v in stocks.items() if name in v["strategies"]}
        if rows:
            average[name] = average_metrics(rows)
    report = {**info, "stocks": stocks, "average": average}
    atomic.write_json(report_dir / COMPARISON, report)
    if trials_root is not None:
        from hftraining.trials import register_trial

        for symbol, stock in stocks.items():
            for name in new_models:
                if name in stock["strategies"]:
                    register_trial(trials_root, f"{info['run_id']}/{name}/{symbol}", name, [symbol], None,
                                   stock["strategies"][name].get("sharpe_ratio"),
                                   run_dir=stock["runs"].get(name))
    return report


def stock_significance(report_dir: Path, symbol: str) -> dict | None:
    """The significance of a stock's leading model as its <SYMBOL>_metrics.json holds it now (the DSR's N is
    recounted there whenever the report is rewritten, so it is not copied into the comparison's metrics.json)."""
    import json

    return json.loads((Path(report_dir) / f"{symbol}_metrics.json").read_text()).get("significance")


def lead_significance(sim: Simulation, root: Path, trial_id: str, symbol: str, new: bool, ppy: int) -> dict:
    """Significance of a comparison's leading model, its DSR counting the trials of this stock under `root`."""
    from hftraining.deflated import deflated
    from hftraining.significance import significance_summary
    from hftraining.trials import TrialScope

    net = sim.frame["net_return"].to_numpy()
    scope = TrialScope(Path(root), [symbol], run_id=trial_id, new_trial=new)
    n_trials, sharpes = scope.stats(sim.metrics["sharpe_ratio"])
    out = significance_summary(net, n_trials, sharpes, ppy)
    out["deflated"] = deflated(scope, net, sim.metrics["sharpe_ratio"], ppy)
    return out


def report_info(run_id: str, config: Config, prepared: Prepared) -> dict:
    panel = prepared.panel
    return {"run_id": run_id, "cost_per_turnover": config.cost_per_turnover,
            "periods_per_year": config.data.periods_per_year,
            "synthetic": any(src == "synthetic" for src in panel.data_source.values()),
            "forecast_backend": {s: panel.forecast.get(s, {}).get("backend", "none") for s in panel.symbols}}

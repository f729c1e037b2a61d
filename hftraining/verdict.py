"""The one-sentence verdict of a result against its best baseline, as the terminal and report.html both say it.

Why: a table of six strategies and fifteen metrics does not say whether the model was worth training.
One sentence does: the best baseline's net Sharpe on the same bars and costs, and whether the model's
is above or below it (and, on a synthetic market, the share of the oracle's Sharpe it captured).
Written once here so the printed line and the HTML page can never disagree.
"""

from __future__ import annotations

from typing import Optional

from hftraining.report_figures import strategy_label

# Rows that are not baselines: the model itself, and the oracle (it knows the planted drift; no one can trade it).
NOT_BASELINES = ("model", "oracle")


def best_baseline(rows: dict[str, dict]) -> Optional[tuple[str, float]]:
    """(name, net Sharpe) of the baseline with the highest net Sharpe; None when there is none."""
    others = {k: v.get("sharpe_ratio") for k, v in rows.items()
              if k not in NOT_BASELINES and v.get("sharpe_ratio") is not None}
    if not others:
        return None
    best = max(others, key=others.get)
    return best, others[best]


def against_best_baseline(rows: dict[str, dict]) -> Optional[str]:
    """The verdict, e.g. "Against the best baseline: buy & hold has a net Sharpe of +0.84; the model's +0.41 is
    below it." `rows` holds "model" and the baselines (an "oracle" row adds the edge it captured); None when
    the model or every baseline lacks a Sharpe."""
    model = (rows.get("model") or {}).get("sharpe_ratio")
    best = best_baseline(rows)
    if model is None or best is None:
        return None
    name, sharpe = best
    side = "above" if model > sharpe else "below"
    text = (f"Against the best baseline: {strategy_label(name)} has a net Sharpe of {sharpe:+.2f}; "
            f"the model's {model:+.2f} is {side} it.")
    oracle = (rows.get("oracle") or {}).get("sharpe_ratio")
    if oracle is not None and oracle > 0:      # a synthetic market: how much of the planted edge was found
        text += (f" The oracle, who knows the planted drift, reaches {oracle:+.2f}: the model captured "
                 f"{model / oracle:.2f} of its Sharpe.")
    return text

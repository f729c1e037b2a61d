"""The figures of report.html (matplotlib, Agg): equity and drawdown, positions or weights, monthly returns,
cost sensitivity and training curves, each returned as a figure and turned into PNG bytes by `figure_png`.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from hftraining.report_data import TRAINING_TAGS

COLORS = {"model": "#1f5fbf", "buy_and_hold": "#7f7f7f", "momentum": "#e07b00", "vol_long": "#8c564b",
          "equal_weight": "#2ca02c", "min_variance": "#9467bd"}
NAMES = {"model": "Model", "buy_and_hold": "Buy & hold", "momentum": "TS momentum (12m sign, vol-scaled)",
         "vol_long": "Long, vol-targeted (risk sizing only)",
         "equal_weight": "1/N rebalanced", "buy_and_hold_equal": "1/N buy & hold", "min_variance": "Minimum variance"}


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


def strategy_label(name: str) -> str:
    return NAMES.get(name, name.replace("_", " "))


def equity_drawdown_figure(series: dict[str, pd.DataFrame]):
    plt = _plt()
    fig, (ax, dd) = plt.subplots(2, 1, figsize=(10, 5.2), sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    for i, (name, frame) in enumerate(series.items()):
        equity = (1.0 + frame["net_return"]).cumprod()
        width, alpha = (1.8, 1.0) if name == "model" else (1.1, 0.85)
        ax.plot(frame.index, equity, color=_color(name, i), lw=width, alpha=alpha, label=strategy_label(name))
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
                        label=strategy_label(name))
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

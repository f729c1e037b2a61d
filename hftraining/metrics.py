"""Performance numbers from per-bar net returns: Sharpe, Sortino, drawdown, CAGR, win rate, turnover.

Pure numpy (no torch) so evaluation, reports and tests share one definition of every number.
The conventions are DESIGN.md's "Metric definitions", which match quantstats (`quantstats.stats`,
rf = 0) and are cross-checked against it in tests/test_metrics.py. Where the two differ it is only
on degenerate input, where quantstats returns nan or inf and we return a finite number so that a
logged or compared metric never poisons a checkpoint choice:

- sharpe_ratio, volatility: 0.0 when there are fewer than 2 bars or every return is equal.
- sortino_ratio: 0.0 when no bar lost money (quantstats: nan).
- calmar: 0.0 when there was no drawdown (quantstats: inf).
- cagr: -1.0 when the compounded wealth ends at or below zero (quantstats: nan below zero).
- win_rate: None (undefined; null in JSON, "n/a" in tables, never logged or averaged) when no trade
  closed: buy-and-hold has no win rate, not a win rate of 0.

Trades and positions smaller than MIN_TRADE (a fraction of equity) are jitter: they pay their cost and
earn their return, but do not count as a trade (trade_count), a held bar (exposure, hit_rate) or a trade
opened or closed (win_rate), so 1e-9 of numerical noise does not turn buy-and-hold's one trade into nine.

Alignment: `r[t]` is the return earned by `positions[t]` (decided at the close of bar t, held to
the close of bar t+1), as produced by hftraining.tracker. Inputs must be finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PERIODS_PER_YEAR = 252
MIN_TRADE = 1e-6    # smallest |position| or |position change| (fraction of equity) that counts; see above
COUNTS = frozenset({"trade_count", "n_bars", "rebalances", "test_bars", "bars"})   # integers wherever they appear


def _as_returns(r) -> np.ndarray:
    return np.asarray(r, dtype=np.float64).reshape(-1)


def _is_constant(r: np.ndarray) -> bool:
    return r.size < 2 or r.max() == r.min()


def total_return(r) -> float:
    """Compounded return over the whole series: prod(1 + r) - 1 (never a sum; defect 5)."""
    r = _as_returns(r)
    return float(np.prod(1.0 + r) - 1.0)


def equity_curve(r, initial: float = 1.0) -> np.ndarray:
    """Compounded equity after each bar, starting from `initial` (length len(r) + 1)."""
    r = _as_returns(r)
    out = np.empty(r.size + 1)
    out[0] = initial
    np.add(r, 1.0, out=out[1:])
    np.cumprod(out, out=out)
    return out


def volatility(r, periods_per_year: int = PERIODS_PER_YEAR) -> float:
    """Annualised standard deviation, std(r, ddof=1) * sqrt(P)."""
    r = _as_returns(r)
    if _is_constant(r):
        return 0.0
    return float(r.std(ddof=1) * np.sqrt(periods_per_year))


def sharpe_ratio(r, periods_per_year: int = PERIODS_PER_YEAR) -> float:
    """mean(r) / std(r, ddof=1) * sqrt(P), rf = 0; 0.0 for fewer than 2 bars or zero spread."""
    r = _as_returns(r)
    if _is_constant(r):
        return 0.0
    return float(r.mean() / r.std(ddof=1) * np.sqrt(periods_per_year))


def sortino_ratio(r, periods_per_year: int = PERIODS_PER_YEAR) -> float:
    """mean(r) * sqrt(P) / sqrt(mean(min(r, 0)^2)): downside deviation over all bars, target 0."""
    r = _as_returns(r)
    if r.size == 0:
        return 0.0
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    if downside == 0.0:
        return 0.0
    return float(r.mean() * np.sqrt(periods_per_year) / downside)


def max_drawdown(r) -> float:
    """Worst equity / running peak - 1 on equity compounded from 1.0 (the start counts as a peak).

    Returned as a negative number (or 0.0); reports that show a magnitude say so.
    """
    return _drawdown_of(equity_curve(r))


def _drawdown_of(equity: np.ndarray) -> float:
    peak = np.maximum.accumulate(equity)
    np.divide(equity, peak, out=peak)
    return float(peak.min() - 1.0)


def cagr(r, periods_per_year: int = PERIODS_PER_YEAR) -> float:
    """Compound annual growth: wealth ** (P / n_bars) - 1, with years = n_bars / P."""
    r = _as_returns(r)
    return _cagr_of(float(np.prod(1.0 + r)), r.size, periods_per_year)


def _cagr_of(wealth: float, n_bars: int, periods_per_year: int) -> float:
    if n_bars == 0:
        return 0.0
    if wealth <= 0.0:
        return -1.0
    return float(wealth ** (periods_per_year / n_bars) - 1.0)


def calmar(r, periods_per_year: int = PERIODS_PER_YEAR) -> float:
    """cagr / |max_drawdown|; 0.0 when there was no drawdown."""
    return _calmar_of(cagr(r, periods_per_year), max_drawdown(r))


def _calmar_of(growth: float, drawdown: float) -> float:
    return 0.0 if drawdown == 0.0 else growth / abs(drawdown)


def hit_rate(r, positions=None) -> float:
    """Per-bar hit rate: share of bars with r > 0 among bars holding a position.

    Not the win rate (that counts closed trades). Without positions, bars with r != 0 count as
    held, which is quantstats' `win_rate` convention.
    """
    r = _as_returns(r)
    held = r != 0.0 if positions is None else np.abs(np.asarray(positions, dtype=np.float64).reshape(-1)) > MIN_TRADE
    n_held = int(np.count_nonzero(held))
    if n_held == 0:
        return 0.0
    return float(np.count_nonzero(held & (r > 0.0)) / n_held)


def traded_amounts(positions) -> np.ndarray:
    """|p_t - p_{t-1}| per bar with p_{-1} = 0: the turnover that costs are charged on."""
    p = _as_returns(positions)
    return np.abs(np.diff(p, prepend=0.0))


# --- trades -----------------------------------------------------------------------------------

def trade_spans(positions, breaks=None) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends): trade k holds positions[starts[k] .. ends[k]] (inclusive).

    A trade opens when the position becomes non-zero or flips sign, and closes at the last bar
    before it goes flat or flips, or at the last bar (|position| <= MIN_TRADE is flat). A resize with
    the same sign stays in the trade. `breaks[t]` (optional) marks a position closed during bar t's
    holding interval (a stop or take-profit), so bar t ends its trade and a position at t+1 opens a new one.
    """
    p = _as_returns(positions)
    sign = np.where(np.abs(p) > MIN_TRADE, np.sign(p), 0.0)
    held = sign != 0.0
    after = sign if breaks is None else np.where(breaks, 0.0, sign)
    opens = np.empty(sign.size, dtype=bool)  # held and a different sign than after the last bar
    opens[:1] = True
    np.not_equal(sign[1:], after[:-1], out=opens[1:])
    opens &= held
    closes = np.empty(sign.size, dtype=bool)  # held and the next bar differs (or this is the last)
    closes[-1:] = True
    np.not_equal(sign[:-1], sign[1:], out=closes[:-1])
    if breaks is not None:
        closes |= breaks
    closes &= held
    return np.flatnonzero(opens), np.flatnonzero(closes)


def span_products(factors: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """prod(factors[starts[k] : starts[k+1]]) per span; factors must be 1 outside every span."""
    if starts.size == 0:
        return np.empty(0)
    return np.multiply.reduceat(factors, starts)


def trade_stats(positions, asset_returns, cost: float = 0.0) -> dict[str, Any]:
    """Trade-level numbers for positions without stops: count, closed trades, win rate, mean return.

    `asset_returns[t]` is the return from close t to close t+1 (what positions[t] earns); `cost`
    is charged per unit of turnover. A trade's return is its compounded return on equity over its
    own bars, net of its entry, resize and exit costs; a trade still open at the last bar is
    marked there and is not closed, so it does not enter the win rate.
    Win rate = winning closed trades / closed trades.
    """
    p = _as_returns(positions)
    ret = _as_returns(asset_returns)
    traded = traded_amounts(p)
    starts, ends = trade_spans(p)
    opens = np.zeros(p.size, dtype=bool)
    opens[starts] = True
    own_cost = np.where(opens, np.abs(p), traded) * cost
    factors = np.where(np.abs(p) > MIN_TRADE, 1.0 + p * ret - own_cost, 1.0)
    growth = span_products(factors, starts)
    closed = ends < p.size - 1
    growth = np.where(closed, growth * (1.0 - cost * np.abs(p[ends])), growth)
    trade_returns = growth - 1.0
    return {
        "trade_count": int(np.count_nonzero(traded > MIN_TRADE)),
        "closed_trades": int(np.count_nonzero(closed)),
        "win_rate": win_rate(trade_returns[closed]),
        "avg_trade_return": float(trade_returns[closed].mean()) if closed.any() else 0.0,
        "trade_returns": trade_returns,
        "closed": closed,
    }


def win_rate(closed_trade_returns) -> float | None:
    """Winning closed trades / closed trades; None (undefined) when no trade closed."""
    x = _as_returns(closed_trade_returns)
    return float(np.count_nonzero(x > 0.0) / x.size) if x.size else None


def _closed_trade_returns(trades) -> np.ndarray:
    """Closed-trade returns from a tracker trade table (exit_reason != 'end') or a plain array."""
    if trades is None:
        return np.empty(0)
    if hasattr(trades, "columns"):
        return trades.loc[trades["exit_reason"] != "end", "return"].to_numpy(dtype=np.float64)
    return _as_returns(trades)


def summarize(net_returns, positions=None, trades=None, periods_per_year: int = PERIODS_PER_YEAR,
              *, turnover: float | None = None, trade_count: int | None = None) -> dict[str, Any]:
    """Every headline number in one dict of plain floats and ints (JSON and TensorBoard ready).

    `positions[t]` is the position that earned `net_returns[t]`; `trades` is the tracker's trade
    table (or an array of closed-trade returns). Turnover is the mean traded fraction of equity per
    bar and trade_count the number of bars that trade more than MIN_TRADE; both come from the positions
    unless the caller (the tracker, which also sees stop exits) passes them. Exposure = share of bars
    holding more than MIN_TRADE. win_rate is None when no trade closed.
    """
    r = _as_returns(net_returns)
    if positions is None:
        positions = np.zeros_like(r)
    p = _as_returns(positions)
    if p.shape != r.shape:
        raise ValueError(f"positions has {p.size} bars but net_returns has {r.size}")
    n = r.size
    if turnover is None or trade_count is None:
        traded = traded_amounts(p)
        if turnover is None:
            turnover = float(traded.mean()) if n else 0.0
        if trade_count is None:
            trade_count = int(np.count_nonzero(traded > MIN_TRADE))
    equity = equity_curve(r)  # compounded once, shared by total return, drawdown, CAGR and Calmar
    growth = _cagr_of(float(equity[-1]), n, periods_per_year)
    drawdown = _drawdown_of(equity)
    held = np.abs(p) > MIN_TRADE
    n_held = int(np.count_nonzero(held))
    return {
        "total_return": float(equity[-1] - 1.0),
        "sharpe_ratio": sharpe_ratio(r, periods_per_year),
        "sortino": sortino_ratio(r, periods_per_year),
        "max_drawdown": drawdown,
        "win_rate": win_rate(_closed_trade_returns(trades)),
        "trade_count": int(trade_count),
        "turnover": float(turnover),
        "exposure": n_held / n if n else 0.0,
        "cagr": growth,
        "calmar": _calmar_of(growth, drawdown),
        "hit_rate": hit_rate(r, p),
        "volatility": volatility(r, periods_per_year),
        "n_bars": int(n),
    }


def at_volatility(r, target: float, periods_per_year: int = PERIODS_PER_YEAR) -> dict[str, Any]:
    """Total return, max drawdown and CAGR of the return series rescaled to `target` annual volatility.

    Why: a model at 8% volatility and buy-and-hold at 30% cannot be compared by total return or
    drawdown. Scaling every strategy's per-bar returns by target / its own realised volatility puts
    them on one risk budget (Sharpe is unchanged). The scale uses the whole series' realised
    volatility, so it is a comparison device, not a tradable strategy. None when the series is flat.
    """
    r = _as_returns(r)
    vol = volatility(r, periods_per_year)
    if not np.isfinite(vol) or vol <= 0:
        return {"total_return_at_target": None, "max_drawdown_at_target": None, "cagr_at_target": None}
    scaled = r * (target / vol)
    equity = equity_curve(scaled)
    return {"total_return_at_target": float(equity[-1] - 1.0), "max_drawdown_at_target": _drawdown_of(equity),
            "cagr_at_target": _cagr_of(float(equity[-1]), len(scaled), periods_per_year)}

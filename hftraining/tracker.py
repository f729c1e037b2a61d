"""ProfitTracker: simulate target positions bar by bar, net of costs and stops, marked to market.

This is how every profit number is measured (DESIGN invariants 3-5; the defects in
shared/notes/prior_system_defects.md item 5 are what it must not repeat).

Alignment (the one rule to remember). Inputs have T bars. `positions[t]` is the target decided at
the close of bar t from data up to t. It is held from close t to close t+1, so bar t's return row
is the interval close t -> close t+1. The last bar's position earns nothing (there is no t+1), so
every per-bar output (net_returns, gross_returns, costs, positions, asset_returns, stopped) has
T-1 rows, row t = decision bar t. `equity` has T values: equity[0] = initial_capital at close 0
(before the first trade) and equity[t+1] = equity[t] * (1 + net_returns[t]) at close t+1.

Costs. A trade fills at close t: a buy pays close * (1 + slippage), a sell receives
close * (1 - slippage), plus commission on the traded notional. Both are charged as a fraction of
equity per unit of turnover, so without stops
    net[t] = p_t * r_{t+1} - c * |p_t - p_{t-1}|,   c = commission + slippage,  p_{-1} = 0,
exactly what the differentiable training objective charges (cost * |dp|): training and evaluation
agree. (Charging slippage on notional is the fill-price offset to first order; the s^2 term is
dropped so that the two agree exactly.)

Stops (when stop_loss or take_profit is set), against the entry fill price of the open trade:
a long stops when a later bar's low <= entry * (1 - stop_loss) and takes profit when its high >=
entry * (1 + take_profit); a short mirrors this. Checks start on the bar after entry. A bar that
opens beyond the level (a gap) fills at the open, else at the level; without `open` it fills at the
level. If both levels are hit in one bar the stop is assumed (conservative). The exit is charged
c * |p| like any trade and the position is flat at the next close. No re-entry: after an exit the
position stays flat while the model's target equals the target that was stopped out; it re-enters
once the target changes (to flat, or to another sign or size). A resize keeps the trade's entry
price. Without high/low, stops are checked on closes.

Trades. A trade opens when the held position becomes non-zero or flips sign and closes when it goes
flat, flips, or is stopped out; a resize trades (counts in trade_count and turnover) but does not
close it. A trade's return is its compounded return on equity over its own bars net of its entry,
resize and exit costs. A position still open at the last bar is marked at the last close with no
exit cost (exit_reason 'end') and is not a closed trade. Win rate = winning closed trades / closed
trades (None when none closed); trade_count = bars on which the held position changes by more than
metrics.MIN_TRADE, plus stop exits; positions within MIN_TRADE of 0 are flat for trades and exposure.

The no-stop path is vectorised; the stop path runs one sequential kernel (numba when installed, the
same code interpreted otherwise; tests check the two agree) and vectorises the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hftraining import metrics

try:  # numba is optional: the kernel below is plain Python that numba compiles when present.
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

NO_EXIT, STOP_LOSS, TAKE_PROFIT, END = 0, 1, 2, 3
EXIT_REASONS = ["signal", "stop_loss", "take_profit", "end"]


def _stop_kernel_py(target, close, high, low, open_, has_open, stop_loss, take_profit, slippage):
    """Sequential stop/take-profit pass over the T-1 holding intervals.

    Returns (held position per decision bar, exit code per bar, exit fill price per bar). A disabled
    level is passed as inf, which never triggers.
    """
    n = close.size - 1
    held = np.zeros(n)
    reason = np.zeros(n, dtype=np.int8)
    fill = np.zeros(n)
    entry = 0.0  # entry fill price of the open trade
    after = 0.0  # position held at the end of the previous interval (0 after a stop exit)
    blocked = False
    blocked_target = 0.0
    for t in range(n):
        h = target[t]
        if blocked:
            if h == blocked_target:
                h = 0.0
            else:
                blocked = False
        held[t] = h
        if h == 0.0:
            after = 0.0
            continue
        long = h > 0.0
        if after == 0.0 or (after > 0.0) != long:
            entry = close[t] * (1.0 + slippage) if long else close[t] * (1.0 - slippage)
        after = h
        j = t + 1
        code, px = NO_EXIT, 0.0
        if long:
            stop_level = entry * (1.0 - stop_loss)
            take_level = entry * (1.0 + take_profit)
            if low[j] <= stop_level:
                code, px = STOP_LOSS, stop_level
                if has_open and open_[j] < px:
                    px = open_[j]
            elif high[j] >= take_level:
                code, px = TAKE_PROFIT, take_level
                if has_open and open_[j] > px:
                    px = open_[j]
        else:
            stop_level = entry * (1.0 + stop_loss)
            take_level = entry * (1.0 - take_profit)
            if high[j] >= stop_level:
                code, px = STOP_LOSS, stop_level
                if has_open and open_[j] > px:
                    px = open_[j]
            elif low[j] <= take_level:
                code, px = TAKE_PROFIT, take_level
                if has_open and open_[j] < px:
                    px = open_[j]
        if code != NO_EXIT:
            reason[t] = code
            fill[t] = px
            after = 0.0
            blocked = True
            blocked_target = target[t]
    return held, reason, fill


_stop_kernel = numba.njit(cache=True, nogil=True)(_stop_kernel_py) if numba is not None else _stop_kernel_py
HAVE_NUMBA = numba is not None


@dataclass
class TrackerResult:
    """Per-bar series (T-1 rows, row t = decided at close t, earned to close t+1) and summaries."""

    net_returns: np.ndarray
    gross_returns: np.ndarray
    costs: np.ndarray
    positions: np.ndarray  # held, after the cap and stop exits
    asset_returns: np.ndarray  # close[t+1] / close[t] - 1
    stopped: np.ndarray  # True where a stop-loss or take-profit closed the position during row t
    equity: np.ndarray  # T values: equity at each close, equity[0] = initial capital
    trades: pd.DataFrame
    metrics: dict[str, Any]
    dates: np.ndarray | None = field(default=None, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per decision bar: date (of the decision), position, asset/gross/net return, cost,
        and equity at the close of the next bar (after that row's return)."""
        n = self.net_returns.size
        date = self.dates[:-1] if self.dates is not None else np.arange(n)
        return pd.DataFrame({
            "date": date,
            "position": self.positions,
            "asset_return": self.asset_returns,
            "gross_return": self.gross_returns,
            "cost": self.costs,
            "net_return": self.net_returns,
            "equity": self.equity[1:],
        })


def _series(name: str, values, length: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != length:
        raise ValueError(f"{name} has {arr.size} bars, expected {length} (one per bar, like positions)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has NaN or infinite values at bars {np.flatnonzero(~np.isfinite(arr))[:5].tolist()}")
    return arr


class ProfitTracker:
    """Simulates positions on adjusted daily bars; see the module docstring for every rule."""

    def __init__(self, initial_capital: float = 100_000.0, commission: float = 0.0005,
                 slippage: float = 0.0005, max_position_size: float = 1.0,
                 stop_loss: float | None = None, take_profit: float | None = None,
                 periods_per_year: int = metrics.PERIODS_PER_YEAR):
        if initial_capital <= 0 or commission < 0 or slippage < 0 or max_position_size <= 0:
            raise ValueError("initial_capital and max_position_size must be > 0; commission and slippage >= 0")
        if stop_loss is not None and not 0 < stop_loss < 1:
            raise ValueError(f"stop_loss must be a fraction in (0, 1), got {stop_loss}")
        if take_profit is not None and not take_profit > 0:
            raise ValueError(f"take_profit must be > 0, got {take_profit}")
        self.initial_capital = float(initial_capital)
        self.commission = float(commission)
        self.slippage = float(slippage)
        self.max_position_size = float(max_position_size)
        self.stop_loss = stop_loss
        self.take_profit = take_profit
        self.periods_per_year = periods_per_year

    @classmethod
    def from_config(cls, tracker_cfg, periods_per_year: int = metrics.PERIODS_PER_YEAR) -> ProfitTracker:
        """Build from `hftraining.config.TrackerConfig` (periods_per_year lives in DataConfig)."""
        return cls(initial_capital=tracker_cfg.initial_capital, commission=tracker_cfg.commission,
                   slippage=tracker_cfg.slippage, max_position_size=tracker_cfg.max_position_size,
                   stop_loss=tracker_cfg.stop_loss, take_profit=tracker_cfg.take_profit,
                   periods_per_year=periods_per_year)

    @property
    def cost_rate(self) -> float:
        """Cost per unit of turnover, commission + slippage (the training objective's `cost`)."""
        return self.commission + self.slippage

    @property
    def uses_stops(self) -> bool:
        return self.stop_loss is not None or self.take_profit is not None

    def run(self, positions, close, high=None, low=None, open=None, dates=None,
            use_numba: bool | None = None) -> TrackerResult:
        """Simulate T bars of target positions; returns T-1 return rows (see the module docstring).

        `use_numba=False` forces the interpreted stop kernel (tests compare the two).
        """
        close = np.asarray(close, dtype=np.float64).reshape(-1)
        T = close.size
        if T < 2:
            raise ValueError(f"need at least 2 bars to earn a return, got {T}")
        close = _series("close", close, T)
        if np.any(close <= 0):
            raise ValueError("close has non-positive prices; returns need positive adjusted prices")
        target = np.clip(_series("positions", positions, T), -self.max_position_size, self.max_position_size)
        if dates is not None:
            dates = np.asarray(dates)
            if dates.shape[0] != T:
                raise ValueError(f"dates has {dates.shape[0]} entries, expected {T}")

        if self.uses_stops:
            high = close if high is None else _series("high", high, T)
            low = close if low is None else _series("low", low, T)
            has_open = open is not None
            open_ = _series("open", open, T) if has_open else close
            kernel = _stop_kernel if (use_numba is None or use_numba) else _stop_kernel_py
            held, reason, fill = kernel(
                target, close, high, low, open_, has_open,
                np.inf if self.stop_loss is None else float(self.stop_loss),
                np.inf if self.take_profit is None else float(self.take_profit), self.slippage)
        else:
            held, reason, fill = target[:-1].copy(), None, None
        return self._account(held, reason, fill, close, dates)

    def _account(self, held, reason, fill, close, dates) -> TrackerResult:
        """Vectorised bookkeeping shared by both paths: returns, costs, equity, trades, metrics."""
        n = held.size
        asset = close[1:] / close[:-1]
        asset -= 1.0
        stopped = np.zeros(n, dtype=bool) if reason is None else reason != NO_EXIT
        if reason is None:
            gross = held * asset
            after = held
        else:
            gross = held * np.where(stopped, fill / close[:-1] - 1.0, asset)
            after = np.where(stopped, 0.0, held)  # flat at the next close after a stop exit
        traded = np.empty(n)  # turnover per bar: |p_t - p_{t-1}|, plus |p_t| for a stop exit
        traded[0] = held[0]
        np.subtract(held[1:], after[:-1], out=traded[1:])
        np.abs(traded, out=traded)
        trade_count = int(np.count_nonzero(traded > metrics.MIN_TRADE))     # jitter is not a trade
        if reason is not None:
            traded += np.where(stopped, np.abs(held), 0.0)
            trade_count += int(np.count_nonzero(stopped))
        costs = traded * self.cost_rate
        net = gross - costs
        equity = metrics.equity_curve(net, self.initial_capital)

        trades = self._trade_table(held, traded, stopped if reason is not None else None,
                                   reason, fill, gross, close, dates)
        summary = metrics.summarize(net, held, trades, self.periods_per_year,
                                    turnover=float(traded.mean()), trade_count=trade_count)
        summary["final_equity"] = float(equity[-1])
        return TrackerResult(net_returns=net, gross_returns=gross, costs=costs, positions=held,
                             asset_returns=asset, stopped=stopped, equity=equity, trades=trades,
                             metrics=summary, dates=dates)

    def _trade_table(self, held, traded, stopped, reason, fill, gross, close, dates) -> pd.DataFrame:
        """One row per trade: where it opened and closed, at what fill prices, why, and its return.

        A trade's growth is the product over its bars of (1 + gross - own costs), where its first
        bar is charged only its own entry (a flip's exit half belongs to the trade it closes), and
        a signal exit multiplies in (1 - c|p|) for the exit trade on the next close.
        """
        c, s, n = self.cost_rate, self.slippage, held.size
        starts, ends = metrics.trade_spans(held, breaks=stopped)
        own = traded.copy()
        own[starts] = np.abs(held[starts])
        if stopped is not None:
            own[starts] += np.where(stopped[starts], own[starts], 0.0)
        factors = gross - own * c
        factors += 1.0
        factors[np.abs(held) <= metrics.MIN_TRADE] = 1.0
        growth = metrics.span_products(factors, starts)

        code = np.where(ends == n - 1, END, NO_EXIT)
        if stopped is not None:
            code = np.where(stopped[ends], reason[ends], code)
        side = np.sign(held[starts])
        signal_exit = code == NO_EXIT
        growth[signal_exit] *= 1.0 - c * np.abs(held[ends[signal_exit]])

        exit_index = ends + 1
        exit_price = close[exit_index] * np.where(code == END, 1.0, 1.0 - s * side)
        if stopped is not None:
            exit_price = np.where(stopped[ends], fill[ends] * (1.0 - s * side), exit_price)
        table = {
            "entry_index": starts,
            "exit_index": exit_index,
            "side": pd.Categorical.from_codes((side < 0).astype(np.int8), categories=["long", "short"]),
            "size": np.abs(held[starts]),
            "entry_price": close[starts] * (1.0 + s * side),
            "exit_price": exit_price,
            "return": growth - 1.0,
            "bars": exit_index - starts,
            "exit_reason": pd.Categorical.from_codes(code.astype(np.int8), categories=EXIT_REASONS),
        }
        if dates is not None:
            table = {"entry_date": dates[starts], "exit_date": dates[exit_index], **table}
        return pd.DataFrame(table)

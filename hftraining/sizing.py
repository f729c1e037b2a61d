"""Positions in risk units: the model says how much of a risk budget to take, sizing turns it into exposure.

Why: a raw position of 1.0 in a 60%-volatility stock and in a 5%-volatility bond fund are different
bets. Following Deep Momentum Networks (Lim, Zohren & Roberts 2019), the traded position is

    traded_t = raw_t * min(cap, sigma_target / sigma_hat_t)

where sigma_hat_t is an ex-ante EWMA volatility of daily returns, annualised, computed from returns
that closed strictly before bar t (lagged one bar, so it is known well before the decision at the
close of t). `cap` is the leverage cap (`tracker.max_position_size`). Until enough returns exist to
estimate sigma_hat the scale is 0: no position without a risk estimate.

Costs are charged on the change of the traded position, in the objective and in the tracker alike,
because both receive traded positions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VOL_SPAN = 60            # EWMA span of the volatility estimate, in bars
VOL_MIN_PERIODS = 20     # returns needed before the estimate is trusted


def ex_ante_volatility(returns: np.ndarray, periods_per_year: int = 252, span: int = VOL_SPAN,
                       min_periods: int = VOL_MIN_PERIODS) -> np.ndarray:
    """Annualised EWMA volatility known at each decision bar, [T] or [T, S].

    `returns[t]` is the return from close t to close t+1 (the panel's convention), so the return
    that closed at bar t is returns[t-1]. The estimate for decision bar t uses returns[: t-1] only,
    i.e. returns that closed at bars <= t-1. NaN returns (gaps, padding) are skipped.
    """
    returns = np.asarray(returns, dtype=np.float64)
    squeeze = returns.ndim == 1
    frame = pd.DataFrame(returns[:, None] if squeeze else returns)
    # known at close t+1: the EWMA std over returns[0..t]; shift by 2 so row t sees returns[.. t-2]
    vol = frame.ewm(span=span, min_periods=min_periods, ignore_na=True).std().shift(2)
    out = vol.to_numpy() * np.sqrt(periods_per_year)
    return out[:, 0] if squeeze else out


def risk_scale(returns: np.ndarray, sigma_target: float, cap: float, periods_per_year: int = 252,
               span: int = VOL_SPAN) -> np.ndarray:
    """Multiplier from raw to traded positions, min(cap, sigma_target / sigma_hat); 0 where unknown."""
    vol = ex_ante_volatility(returns, periods_per_year, span)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.minimum(cap, sigma_target / vol)
    return np.where(np.isfinite(scale) & (vol > 0), scale, 0.0)


def position_scale(panel, profit, tracker, periods_per_year: int = 252) -> np.ndarray:
    """[T, S] multiplier for every bar and symbol of a panel under the configured sizing.

    `profit.position_sizing == "fraction"` keeps the raw position as the fraction of equity (scale 1,
    capped by the tracker); "risk" sizes in risk units as described above.
    """
    return _scale(panel.returns, profit, tracker, periods_per_year)


def _scale(returns: np.ndarray, profit, tracker, periods_per_year: int) -> np.ndarray:
    if profit.position_sizing == "fraction":
        return np.ones_like(returns, dtype=np.float64)
    return risk_scale(returns, profit.sigma_target, tracker.max_position_size, periods_per_year, profit.vol_span)


def traded_positions(raw: np.ndarray, panel, symbol: int, decisions: range, config) -> np.ndarray:
    """Traded positions at the decision bars of one symbol from the model's raw outputs, within the cap.

    The cap (tracker.max_position_size) is applied here so that the positions a report shows are the
    ones the tracker holds.
    """
    # only this symbol's column: the EWMA of each column is independent of the others
    scale = _scale(panel.returns[:, symbol], config.profit, config.tracker, config.data.periods_per_year)
    cap = config.tracker.max_position_size
    return np.clip(np.asarray(raw, dtype=np.float64) * scale[decisions.start:decisions.stop], -cap, cap)

"""Simple strategies every model must beat, simulated on the same bars with the same costs.

Why: a model's net Sharpe means little alone. Buy-and-hold says whether it beats owning the asset;
volatility-scaled time-series momentum (Moskowitz, Ooi & Pedersen 2012) says whether it beats the
oldest systematic rule there is. The volatility-targeted long (a raw position of +1 every bar, sized in
risk units exactly like the model's) says whether training learned any timing beyond what risk sizing
alone gives: a model that only learned "be long" matches it. On a synthetic market the oracle, who
knows the planted drift, says how much edge there was to capture. Portfolio runs add 1/N and minimum
variance (hftraining.portfolio_sim) as extra entries of the same dict.

Momentum, at decision bar t (decided at close t, earning close t -> t+1), with a one-bar lag so
it only uses closes up to t-1:
    signal  = sign(close[t-1] / close[t-1-lookback] - 1)                  (12 months = 252 bars)
    vol     = std(daily returns of the `vol_window` bars ending at t-1, ddof=1) * sqrt(P)
    position = clip(signal * target_vol / vol, -max_position, max_position)
and 0 while there is not enough history (lookback + 2 bars, or vol_window returns).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from hftraining.config import TrackerConfig
from hftraining.data.panel import Panel
from hftraining.data.synthetic import SOURCE, hidden_drift
from hftraining.evaluation import Simulation, buy_and_hold, simulate

LOOKBACK = 252
VOL_WINDOW = 63
TARGET_VOL = 0.15


def momentum_positions(close, lookback: int = LOOKBACK, vol_window: int = VOL_WINDOW,
                       target_vol: float = TARGET_VOL, max_position: float = 1.0,
                       periods_per_year: int = 252, lag: int = 1) -> np.ndarray:
    """Volatility-scaled 12-month sign positions for every bar of `close` (causal; see the docstring)."""
    close = pd.Series(np.asarray(close, dtype=np.float64))
    signal = np.sign(close / close.shift(lookback) - 1.0)
    vol = close.pct_change().rolling(vol_window, min_periods=vol_window).std(ddof=1) * np.sqrt(periods_per_year)
    raw = (signal * target_vol / vol.where(vol > 0)).clip(-max_position, max_position)
    return raw.shift(lag).fillna(0.0).to_numpy()


def momentum(panel: Panel, symbol: int, decisions: range, tracker: TrackerConfig, periods_per_year: int = 252,
             **kwargs) -> Simulation:
    """Momentum simulated over `decisions`, its signal computed from closes before each decision only."""
    close = panel.ohlc[: decisions.stop, symbol, 3]
    positions = momentum_positions(close, max_position=tracker.max_position_size,
                                   periods_per_year=periods_per_year, **kwargs)[decisions.start:]
    return simulate(panel, symbol, decisions, positions, tracker, periods_per_year)


def oracle_positions(drift: np.ndarray) -> np.ndarray:
    """Raw oracle position from the hidden drift known at each decision bar: sign(drift_t).

    The drift is AR(1), so the expected return of the next bar has the sign of today's drift.
    """
    return np.sign(np.nan_to_num(np.asarray(drift, dtype=np.float64), nan=0.0))


def oracle(panel: Panel, symbol: int, decisions: range, config) -> Optional[Simulation]:
    """The trader who knows a synthetic market's hidden drift, sized and charged exactly like the model.

    None for real data (no drift is known). "Edge captured" = model Sharpe / oracle Sharpe tells "the
    market has no edge" (oracle near 0) apart from "training failed" (oracle high, model low).
    """
    name = panel.symbols[symbol]
    if panel.data_source.get(name) != SOURCE:
        return None
    from hftraining.sizing import traded_positions

    d = config.data
    drift = hidden_drift(name, d.synthetic_bars, d.synthetic_seed, d.synthetic_edge)
    known = drift.reindex(pd.DatetimeIndex(panel.dates[decisions.start:decisions.stop])).to_numpy()
    positions = traded_positions(oracle_positions(known), panel, symbol, decisions, config)
    return simulate(panel, symbol, decisions, positions, config.tracker, d.periods_per_year)


def vol_long(panel: Panel, symbol: int, decisions: range, config) -> Optional[Simulation]:
    """Always long one unit of risk: raw +1 sized by the run's own risk sizing, same costs as the model.

    None under `profit.position_sizing: fraction`, where it would be buy-and-hold again.
    """
    if config.profit.position_sizing != "risk":
        return None
    from hftraining.sizing import traded_positions

    positions = traded_positions(np.ones(len(decisions)), panel, symbol, decisions, config)
    return simulate(panel, symbol, decisions, positions, config.tracker, config.data.periods_per_year)


def single_asset_baselines(panel: Panel, symbol: int, decisions: range, tracker: TrackerConfig,
                           periods_per_year: int = 252, config=None) -> dict[str, Simulation]:
    """The baselines of a one-asset report: buy-and-hold and momentum, same bars, same costs.

    Given the run's config, the volatility-targeted long (risk sizing only) and, on a synthetic market,
    the oracle join them (see `vol_long` and `oracle`).
    """
    out = {"buy_and_hold": buy_and_hold(panel, symbol, decisions, tracker, periods_per_year),
           "momentum": momentum(panel, symbol, decisions, tracker, periods_per_year)}
    if config is None:
        return out
    for name, sim in (("vol_long", vol_long(panel, symbol, decisions, config)),
                      ("oracle", oracle(panel, symbol, decisions, config))):
        if sim is not None:
            out[name] = sim
    return out


def validation_sharpes(panel: Panel, symbol: int, decisions: range, config) -> dict[str, Optional[float]]:
    """Net Sharpe of every single-asset baseline over a validation range.

    Why: a model's validation Sharpe means little alone either. Read beside the baselines' on the same
    bars, it says whether training beat them before anyone looks at the test range.
    """
    sims = single_asset_baselines(panel, symbol, decisions, config.tracker, config.data.periods_per_year, config)
    return {name: sim.metrics.get("sharpe_ratio") for name, sim in sims.items()}

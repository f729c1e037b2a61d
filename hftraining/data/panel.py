"""Panel tensors [time, symbol, feature] aligned by date, with the next-bar returns the model trades.

An aligned panel serves a single symbol and a group that needs common dates (a portfolio): symbols
are joined on their common dates after each symbol's features were computed on its own full
history, so alignment never moves information backwards in time. Training on many symbols (base,
study) uses a RaggedPanel instead (hftraining.data.ragged): each symbol on its own full history.
The helpers at the end (`panel_windows`, `symbol_views`, `symbol_slice`, ...) take either kind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from hftraining.config import Config
from hftraining.data.features import short_range_note, symbol_frame  # noqa: F401  (symbol_frame: the frames)
from hftraining.data.universe import featurise_universe
from hftraining.errors import UserError

log = logging.getLogger("hftraining")


@dataclass
class Panel:
    """Everything the trainer and the evaluator need, as aligned arrays (no pandas in the hot path).

    features[t, s] uses bars <= t of symbol s; returns[t, s] is the simple return from close t to
    close t+1 on adjusted prices (NaN on the last bar): the position decided at t earns it.
    """

    symbols: list[str]
    dates: np.ndarray                # datetime64[ns], [T]
    feature_names: list[str]
    features: np.ndarray             # float32 [T, S, F], unscaled
    ohlc: np.ndarray                 # float64 [T, S, 4] adjusted open, high, low, close
    returns: np.ndarray              # float64 [T, S]
    data_origin: dict[str, str] = field(default_factory=dict)
    data_source: dict[str, str] = field(default_factory=dict)
    forecast: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)   # symbols left out (data.on_bad_symbol=skip)

    @property
    def n_time(self) -> int:
        return len(self.dates)

    def by_symbol(self, fn: Callable[["Panel"], np.ndarray]) -> np.ndarray:
        """A per-bar time-series function of a Panel; the same call as on a RaggedPanel (hftraining.data.ragged)."""
        return fn(self)

    def date_str(self, index: int) -> str:
        return str(np.datetime_as_string(self.dates[index], unit="D"))

    def symbol_index(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise UserError(f"symbol {symbol} is not in this panel ({', '.join(self.symbols)})") from None


PRICE_COLUMNS = ["px_open", "px_high", "px_low", "px_close"]


def assemble_panel(frames: dict[str, pd.DataFrame], min_bars: int = 0,
                   origins: Optional[dict[str, str]] = None) -> Panel:
    """Join per-symbol frames on common dates and drop rows where any feature is still warming up."""
    symbols = list(frames)
    feature_names = [c for c in next(iter(frames.values())).columns if not c.startswith("px_")]
    common = None
    for symbol, frame in frames.items():
        valid = frame.index[frame[feature_names].notna().all(axis=1).to_numpy()]
        common = valid if common is None else common.intersection(valid)
        if len(valid) < min_bars:
            where = f"{origins[symbol]}: " if origins and origins.get(symbol) else ""
            note = short_range_note(frame)
            raise UserError(
                f"{where}{symbol}: only {len(valid)} bars with complete features, need at least {min_bars} "
                "(context + horizon + embargoes + split sizes)"
                + (note or "; load more history or shrink data.context_length"))
    if len(common) < min_bars:
        raise UserError(
            f"{', '.join(symbols)}: only {len(common)} common dates with complete features, need {min_bars}")
    features = np.stack([frames[s].loc[common, feature_names].to_numpy(np.float32) for s in symbols], axis=1)
    ohlc = np.stack([frames[s].loc[common, PRICE_COLUMNS].to_numpy(np.float64) for s in symbols], axis=1)
    close = ohlc[..., 3]
    returns = np.full_like(close, np.nan)
    returns[:-1] = close[1:] / close[:-1] - 1.0
    return Panel(symbols=symbols, dates=common.to_numpy(dtype="datetime64[ns]"), feature_names=feature_names,
                 features=features, ohlc=ohlc, returns=returns)


def build_panel(symbols: list[str], config: Config, root: Path, progress: bool = True,
                min_bars: Optional[int] = None) -> Panel:
    """Load, check and featurise each symbol (in parallel), then align them on common dates into one Panel.

    Every symbol must load: an aligned panel (a portfolio, one stock) is meaningless without one of them.
    """
    universe = featurise_universe(symbols, config, root, progress=progress, on_bad_symbol="error")
    panel = assemble_panel(universe.items, min_bars=min_bars if min_bars is not None else required_bars(config),
                           origins=universe.origin)
    panel.data_origin, panel.data_source, panel.forecast = universe.origin, universe.source, universe.forecast
    return panel


# --- chronological splits ---------------------------------------------------------------------

@dataclass(frozen=True)
class Splits:
    """Decision-bar ranges [start, stop) of each split, in panel time indices, with embargo gaps.

    A window ending at decision bar t covers t-L+1..t and its labels use close t+1, so train labels
    stop at close `train.stop`, and validation windows start after an embargo of >= L + horizon bars.
    """

    train: range
    val: range
    test: range
    embargo: int

    def as_dict(self, panel: Panel) -> dict:
        def span(r: range) -> dict:
            return {"start": panel.date_str(r.start), "end": panel.date_str(r.stop - 1), "bars": len(r)}
        return {"train": span(self.train), "val": span(self.val), "test": span(self.test), "embargo": self.embargo}


MIN_TRAIN_DECISIONS = 64


def required_bars(config: Config) -> int:
    """Fewest aligned bars that give every split at least a few decisions after the embargoes."""
    d = config.data
    fixed = d.context_length + 2 * d.resolved_embargo + 1
    share = 1.0 - d.val_fraction - d.test_fraction
    return int(np.ceil(fixed + max(MIN_TRAIN_DECISIONS, d.context_length) / share))


def make_splits(n_time: int, config: Config) -> Splits:
    d = config.data
    first = d.context_length - 1            # first bar with a full window behind it
    last = n_time - 2                       # last bar with a next-bar return
    embargo = d.resolved_embargo
    if embargo < d.context_length + d.horizon:          # DESIGN invariant 2
        raise UserError(
            f"data.embargo = {embargo} is shorter than data.context_length + data.horizon = "
            f"{d.context_length + d.horizon}: validation and test windows would reach the bars training labels "
            "used; raise it or leave it unset")
    usable = last - first + 1 - 2 * embargo
    n_val = int(usable * d.val_fraction)
    n_test = int(usable * d.test_fraction)
    n_train = usable - n_val - n_test
    if n_train < MIN_TRAIN_DECISIONS or n_val < 1 or n_test < 1:
        raise UserError(
            f"history too short: {n_time} aligned bars leave {n_train} training, {n_val} validation and "
            f"{n_test} test decisions; need at least {required_bars(config)} bars")
    train = range(first, first + n_train)
    val = range(train.stop + embargo, train.stop + embargo + n_val)
    test = range(val.stop + embargo, last + 1)
    return Splits(train=train, val=val, test=test, embargo=embargo)


# --- scaler fitted on the training range only --------------------------------------------------

@dataclass
class Scaler:
    """Per-symbol, per-feature standardisation fitted on training bars only (invariant 2)."""

    feature_names: list[str]
    symbols: list[str]
    mean: np.ndarray   # [S, F]
    std: np.ndarray    # [S, F]

    @classmethod
    def fit(cls, panel: Panel, train: range) -> "Scaler":
        if not isinstance(train, range):             # a RaggedPanel's split: per symbol, on its own rows
            return panel.fit_scaler(train)
        rows = panel.features[: train.stop]          # every feature row a training window can see
        mean = rows.mean(axis=0).astype(np.float64)
        std = rows.std(axis=0).astype(np.float64)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(list(panel.feature_names), list(panel.symbols), mean, std)

    def transform(self, panel: Panel) -> np.ndarray:
        if list(panel.feature_names) != self.feature_names:
            missing = sorted(set(self.feature_names) ^ set(panel.feature_names))
            raise UserError(f"feature list differs from the model's scaler: {', '.join(missing) or 'order'}")
        if getattr(panel, "offsets", None) is not None:   # a RaggedPanel: each symbol's rows with its statistics
            return panel.scaled(self)
        index = [self.symbols.index(s) if s in self.symbols else None for s in panel.symbols]
        mean = np.stack([self.mean[i] if i is not None else self._pooled()[0] for i in index])
        std = np.stack([self.std[i] if i is not None else self._pooled()[1] for i in index])
        scaled = (panel.features - mean[None]) / std[None]
        return np.clip(scaled, -10, 10).astype(np.float32)

    def _pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """Statistics for a symbol the scaler never saw (a base model applied to a new stock)."""
        return self.mean.mean(axis=0), np.sqrt((self.std ** 2).mean(axis=0))

    def to_dict(self) -> dict:
        return {"feature_names": self.feature_names, "symbols": self.symbols,
                "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "Scaler":
        return cls(list(data["feature_names"]), list(data["symbols"]),
                   np.asarray(data["mean"], dtype=np.float64), np.asarray(data["std"], dtype=np.float64))


def window_ends(decisions: range, n_symbols: int) -> np.ndarray:
    """All (end bar, symbol) pairs of a split as an int64 array [N, 2]: windows never cross symbols."""
    t = np.repeat(np.arange(decisions.start, decisions.stop), n_symbols)
    s = np.tile(np.arange(n_symbols), len(decisions))
    return np.stack([t, s], axis=1).astype(np.int64)


# --- what the trainer and the evaluator ask of either kind of panel -----------------------------

# Consecutive bars further apart than this many days (or 3x a symbol's median spacing, if more) are a
# gap in the data, not a weekend or holiday: no training window crosses one.
GAP_DAYS = 4


def bar_runs(dates: np.ndarray, breaks: Optional[np.ndarray] = None) -> np.ndarray:
    """Run number of each bar [T]: a new run starts after a gap, or where `breaks[i]` says rows between
    bar i and bar i+1 were dropped (features undefined there)."""
    dates = np.asarray(dates, dtype="datetime64[ns]")
    if len(dates) < 2:
        return np.zeros(len(dates), dtype=np.int64)
    spacing = np.diff(dates).astype("timedelta64[s]").astype(np.float64) / 86400.0
    gap = spacing > max(GAP_DAYS, 3.0 * float(np.median(spacing)))
    if breaks is not None:
        gap |= np.asarray(breaks, dtype=bool)
    return np.concatenate([[0], np.cumsum(gap)]).astype(np.int64)


def panel_windows(panel, decisions, context: int) -> np.ndarray:
    """Window ends [N, 2] of a split that stay inside one symbol and one gap-free run (label bar included).

    `decisions` is a range of an aligned Panel or the RowRanges of a RaggedPanel.
    """
    if not isinstance(decisions, range):             # a RaggedPanel's RowRanges
        return panel.training_windows(decisions, context)
    ends = window_ends(decisions, len(panel.symbols))
    runs = bar_runs(panel.dates)
    t = ends[:, 0]
    inside = runs[t - context + 1] == runs[np.minimum(t + 1, len(runs) - 1)]
    return ends if inside.all() else ends[inside]


def last_rows(panel) -> Optional[np.ndarray]:
    """[rows] the last row of each row's symbol for a RaggedPanel; None for an aligned Panel (its last bar)."""
    return panel.last_rows() if getattr(panel, "offsets", None) is not None else None


def fingerprint(panel) -> str:
    """sha256 of what training reads from a panel (symbols, dates, features, prices): equal on every rank."""
    import hashlib

    digest = hashlib.sha256("\n".join([*panel.symbols, "|", *panel.feature_names]).encode())
    for array in (panel.dates, panel.features, panel.ohlc):
        digest.update(np.ascontiguousarray(array).view(np.uint8))
    return digest.hexdigest()


def symbol_views(panel, x, decisions):
    """(symbol, panel, column, x, decision range) for each symbol with decisions in the split.

    Aligned: the panel itself, column s, the whole x. Ragged: the symbol's own Panel, column 0, its rows
    of x, and its decisions in its own bar indices. Symbols absent from a ragged split are left out.
    """
    if isinstance(decisions, range):
        for s, symbol in enumerate(panel.symbols):
            yield symbol, panel, s, x, decisions
        return
    for s, symbol in enumerate(panel.symbols):
        r = decisions.ranges[s]
        if len(r):
            lo, hi = int(panel.offsets[s]), int(panel.offsets[s + 1])
            yield symbol, panel.symbol_panel(symbol), 0, x[lo:hi], range(r.start - lo, r.stop - lo)


def symbol_slice(panel, splits, symbol: str) -> tuple[Panel, Splits]:
    """One symbol's Panel and splits (in its own indices): the same test bars as in the whole panel."""
    if getattr(panel, "offsets", None) is not None:
        return panel.symbol_panel(symbol), splits.for_symbol(panel, symbol)
    import dataclasses

    s = panel.symbol_index(symbol)
    one = dataclasses.replace(
        panel, symbols=[symbol], features=panel.features[:, s:s + 1], ohlc=panel.ohlc[:, s:s + 1],
        returns=panel.returns[:, s:s + 1], data_origin={symbol: panel.data_origin.get(symbol, "")},
        data_source={symbol: panel.data_source.get(symbol, "")}, forecast={symbol: panel.forecast.get(symbol, {})},
        skipped={})
    return one, splits

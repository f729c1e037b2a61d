"""Ragged panels: many symbols, each on its own full history, stored flat in O(total bars) memory.

A base model over a universe should learn from every bar each symbol has, not only from the dates
all of them share. A RaggedPanel keeps symbol s's bars (those with complete features) as the rows
offsets[s]:offsets[s+1] of flat arrays shaped like a one-column Panel ([rows, 1, F]), so the trainer
gathers windows by (row, 0) exactly as it gathers (bar, symbol) from an aligned panel. Nothing is
padded: memory is the sum of the histories.

Splits stay calendar splits: `make_ragged_splits` runs make_splits on the union of every symbol's
dates, and each symbol's decision rows are its bars inside those split dates, with the embargo
also counted in its own bars (so a symbol with a hole in its history cannot shorten it). A symbol
with no bars in a split is absent from it. A training window (its bars and the next bar its label
uses) lies inside one gap-free run of one symbol (hftraining.data.panel.bar_runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from hftraining.config import Config
from hftraining.data.panel import PRICE_COLUMNS, Panel, Scaler, Splits, bar_runs, make_splits
from hftraining.errors import UserError


@dataclass
class SymbolRows:
    """One symbol's bars with complete features, as arrays (what a loading worker keeps of its frame)."""

    dates: np.ndarray       # datetime64[ns] [n]
    features: np.ndarray    # float32 [n, F]
    ohlc: np.ndarray        # float64 [n, 4] adjusted open, high, low, close
    runs: np.ndarray        # int64 [n]: gap-free run number, from 0
    feature_names: list[str]

    @classmethod
    def from_frame(cls, symbol: str, frame: pd.DataFrame, min_rows: int, where: str = "") -> "SymbolRows":
        """Rows of a symbol_frame whose features are all defined; a row dropped inside the history is a gap."""
        feature_names = [c for c in frame.columns if not c.startswith("px_")]
        values = frame[feature_names].to_numpy(np.float64)
        rows = np.flatnonzero(~np.isnan(values).any(axis=1))
        if len(rows) < min_rows:
            from hftraining.data.features import short_range_note

            raise UserError(
                f"{where}{symbol}: only {len(rows)} bars with complete features, need at least {min_rows} "
                "(one window of data.context_length bars and the bar after it)"
                + (short_range_note(frame) or "; load more history"))
        dates = frame.index.to_numpy(dtype="datetime64[ns]")[rows]
        return cls(dates=dates, features=values[rows].astype(np.float32),
                   ohlc=frame[PRICE_COLUMNS].to_numpy(np.float64)[rows],
                   runs=bar_runs(dates, breaks=np.diff(rows) > 1), feature_names=feature_names)


@dataclass
class RaggedPanel:
    """Several symbols on their own dates, stored flat: symbol s is rows offsets[s]:offsets[s+1].

    The arrays have the shapes of a one-column Panel: features [N, 1, F], ohlc [N, 1, 4], returns
    [N, 1]; returns[r] is the simple return from close r to close r+1 of the same symbol (NaN on each
    symbol's last bar). `symbol_panel(symbol)` is one symbol as an ordinary Panel (views, no copy).
    """

    symbols: list[str]
    feature_names: list[str]
    dates: np.ndarray                # datetime64[ns] [N], ascending within each symbol
    features: np.ndarray             # float32 [N, 1, F], unscaled
    ohlc: np.ndarray                 # float64 [N, 1, 4]
    returns: np.ndarray              # float64 [N, 1]
    offsets: np.ndarray              # int64 [S + 1]
    runs: np.ndarray                 # int64 [N]: gap-free run id, unique over the whole panel
    data_origin: dict[str, str] = field(default_factory=dict)
    data_source: dict[str, str] = field(default_factory=dict)
    forecast: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: dict[str, SymbolRows], feature_names: list[str]) -> "RaggedPanel":
        symbols = list(rows)
        lengths = np.array([len(r.dates) for r in rows.values()], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n = int(offsets[-1])
        dates = np.empty(n, dtype="datetime64[ns]")
        features = np.empty((n, 1, len(feature_names)), dtype=np.float32)
        ohlc = np.empty((n, 1, 4), dtype=np.float64)
        returns = np.full((n, 1), np.nan, dtype=np.float64)
        runs = np.empty(n, dtype=np.int64)
        next_run = 0
        for s, symbol in enumerate(symbols):
            part, lo, hi = rows[symbol], offsets[s], offsets[s + 1]
            dates[lo:hi] = part.dates
            features[lo:hi, 0] = part.features
            ohlc[lo:hi, 0] = part.ohlc
            close = part.ohlc[:, 3]
            returns[lo:hi - 1, 0] = close[1:] / close[:-1] - 1.0
            runs[lo:hi] = part.runs + next_run
            next_run = int(runs[hi - 1]) + 1 if hi > lo else next_run
        return cls(symbols=symbols, feature_names=list(feature_names), dates=dates, features=features, ohlc=ohlc,
                   returns=returns, offsets=offsets, runs=runs)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])

    def rows_of(self, s: int) -> slice:
        return slice(int(self.offsets[s]), int(self.offsets[s + 1]))

    def symbol_index(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise UserError(f"symbol {symbol} is not in this panel ({', '.join(self.symbols)})") from None

    def symbol_panel(self, symbol: str) -> Panel:
        """One symbol on its own dates, as an ordinary one-column Panel (views into the flat arrays)."""
        rows = self.rows_of(self.symbol_index(symbol))
        return Panel(symbols=[symbol], dates=self.dates[rows], feature_names=self.feature_names,
                     features=self.features[rows], ohlc=self.ohlc[rows], returns=self.returns[rows],
                     data_origin={symbol: self.data_origin.get(symbol, "")},
                     data_source={symbol: self.data_source.get(symbol, "")},
                     forecast={symbol: self.forecast.get(symbol, {})})

    def by_symbol(self, fn: Callable[[Panel], np.ndarray]) -> np.ndarray:
        """A per-bar time-series function of a Panel ([T, 1, ...] out), applied to each symbol on its own bars."""
        return np.concatenate([fn(self.symbol_panel(symbol)) for symbol in self.symbols], axis=0)

    def last_rows(self) -> np.ndarray:
        """[N] the last row of each row's symbol: how far ahead a label may look without leaving it."""
        return np.repeat(self.offsets[1:] - 1, np.diff(self.offsets))

    def fit_scaler(self, train: "RowRanges") -> Scaler:
        """Scaler.fit on a ragged split: per symbol, on its own training rows (fit_scaler)."""
        return fit_scaler(self, train)

    def scaled(self, scaler: Scaler) -> np.ndarray:
        """Scaler.transform of a ragged panel: each symbol's rows with its own statistics (transform)."""
        return transform(scaler, self)

    def training_windows(self, decisions: "RowRanges", context: int) -> np.ndarray:
        """panel_windows of a ragged split (training_windows)."""
        return training_windows(self, decisions, context)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.dates, self.features, self.ohlc, self.returns, self.offsets, self.runs))


def build_ragged_panel(symbols: list[str], config: Config, root: Path, progress: bool = True) -> RaggedPanel:
    """Load and featurise every symbol (in parallel) into a RaggedPanel; bad symbols per data.on_bad_symbol."""
    from hftraining.data.universe import featurise_universe

    min_rows = config.data.context_length + 1   # one window and the next bar its label uses

    def keep(symbol: str, frame: pd.DataFrame) -> SymbolRows:
        return SymbolRows.from_frame(symbol, frame, min_rows)

    universe = featurise_universe(symbols, config, root, progress=progress, keep=keep)
    feature_names = next(iter(universe.items.values())).feature_names
    panel = RaggedPanel.from_rows(universe.items, feature_names)
    panel.data_origin, panel.data_source = universe.origin, universe.source
    panel.forecast, panel.skipped = universe.forecast, universe.skipped
    return panel


# --- calendar splits on own bars ---------------------------------------------------------------

@dataclass(frozen=True)
class RowRanges:
    """One split of a ragged panel: per symbol, its decision rows [start, stop) in the flat arrays."""

    ranges: tuple[range, ...]

    def __len__(self) -> int:
        return sum(len(r) for r in self.ranges)

    def rows(self) -> np.ndarray:
        """Every decision row, symbol after symbol."""
        parts = [np.arange(r.start, r.stop, dtype=np.int64) for r in self.ranges if len(r)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class RaggedSplits:
    """Calendar train | embargo | val | embargo | test, each symbol's rows inside the same dates."""

    train: RowRanges
    val: RowRanges
    test: RowRanges
    embargo: int
    calendar: dict[str, tuple[str, str, int]]   # split -> (first, last decision date, dates) on the union calendar

    def as_dict(self, panel: RaggedPanel) -> dict:
        """As Splits.as_dict: each split's first and last decision date and its dates on the union calendar."""
        spans = {name: {"start": first, "end": last, "bars": bars}
                 for name, (first, last, bars) in self.calendar.items()}
        return {**spans, "embargo": self.embargo}

    def per_symbol(self, panel: RaggedPanel) -> dict[str, dict[str, int]]:
        """Decision bars of each symbol in each split (0: absent from it)."""
        return {symbol: {name: len(getattr(self, name).ranges[s]) for name in ("train", "val", "test")}
                for s, symbol in enumerate(panel.symbols)}

    def for_symbol(self, panel: RaggedPanel, symbol: str) -> Splits:
        """The symbol's splits as ranges of its own bars (panel.symbol_panel(symbol)'s indices)."""
        s = panel.symbol_index(symbol)
        lo = int(panel.offsets[s])

        def local(r: range) -> range:
            return range(r.start - lo, r.stop - lo) if len(r) else range(0)
        return Splits(train=local(self.train.ranges[s]), val=local(self.val.ranges[s]),
                      test=local(self.test.ranges[s]), embargo=self.embargo)


def _day(value: np.datetime64) -> str:
    return str(np.datetime_as_string(value, unit="D"))


def make_ragged_splits(panel: RaggedPanel, config: Config) -> RaggedSplits:
    """Split dates from the union calendar of all symbols; each symbol's decision rows inside them."""
    d = config.data
    calendar = np.unique(panel.dates)
    nominal = make_splits(len(calendar), config)
    on_calendar = {"train": nominal.train, "val": nominal.val, "test": nominal.test}
    spans = {name: (calendar[r.start], calendar[r.stop - 1]) for name, r in on_calendar.items()}
    embargo = nominal.embargo
    ranges: dict[str, list[range]] = {"train": [], "val": [], "test": []}
    for s in range(len(panel.symbols)):
        lo, hi = int(panel.offsets[s]), int(panel.offsets[s + 1])
        dates = panel.dates[lo:hi]
        earliest, last = d.context_length - 1, hi - lo - 2       # a full window behind, a next bar ahead
        previous_stop: Optional[int] = None
        for name in ("train", "val", "test"):
            first_date, last_date = spans[name]
            start = max(earliest, int(np.searchsorted(dates, first_date, side="left")))
            if previous_stop is not None:                        # the embargo in this symbol's own bars too
                start = max(start, previous_stop + embargo)
            stop = min(last + 1, int(np.searchsorted(dates, last_date, side="right")))
            if stop > start:
                ranges[name].append(range(lo + start, lo + stop))
                previous_stop = stop
            else:
                ranges[name].append(range(0))
    splits = RaggedSplits(train=RowRanges(tuple(ranges["train"])), val=RowRanges(tuple(ranges["val"])),
                          test=RowRanges(tuple(ranges["test"])), embargo=embargo,
                          calendar={name: (_day(a), _day(b), len(on_calendar[name])) for name, (a, b) in spans.items()})
    for name in ("train", "val", "test"):
        if len(getattr(splits, name)) == 0:
            raise UserError(f"{', '.join(panel.symbols[:5])}{', ...' if len(panel.symbols) > 5 else ''}: no symbol "
                            f"has {name} bars between {spans[name][0]} and {spans[name][1]} with a full window "
                            "behind them; load more history")
    return splits


# --- the scaler on the training rows of every symbol --------------------------------------------

def fit_scaler(panel: RaggedPanel, train: RowRanges) -> Scaler:
    """Per-symbol statistics over the rows its training windows can see (its bars up to train end).

    A symbol with no training decisions has no statistics of its own; it is scaled with the pooled
    ones (Scaler._pooled), exactly like a symbol a base model never saw.
    """
    symbols, means, stds = [], [], []
    for s, symbol in enumerate(panel.symbols):
        r = train.ranges[s]
        if not len(r):
            continue
        rows = panel.features[int(panel.offsets[s]):r.stop]           # [n, 1, F]
        means.append(rows.mean(axis=0)[0].astype(np.float64))
        std = rows.std(axis=0)[0].astype(np.float64)
        stds.append(np.where(std > 1e-12, std, 1.0))
        symbols.append(symbol)
    if not symbols:
        raise UserError("no symbol has training decisions: nothing to fit the scaler on")
    return Scaler(list(panel.feature_names), symbols, np.stack(means), np.stack(stds))


def transform(scaler: Scaler, panel: RaggedPanel) -> np.ndarray:
    """[N, 1, F] float32: each symbol's rows standardised with its statistics (pooled for unseen ones)."""
    out = np.empty(panel.features.shape, dtype=np.float32)
    pooled = None
    for s, symbol in enumerate(panel.symbols):
        if symbol in scaler.symbols:
            i = scaler.symbols.index(symbol)
            mean, std = scaler.mean[i], scaler.std[i]
        else:
            if pooled is None:
                pooled = scaler._pooled()
            mean, std = pooled
        rows = panel.rows_of(s)
        out[rows] = np.clip((panel.features[rows] - mean[None, None]) / std[None, None], -10, 10)
    return out


def training_windows(panel: RaggedPanel, decisions: RowRanges, context: int) -> np.ndarray:
    """(row, 0) window ends of a split whose window and next bar lie in one gap-free run of one symbol.

    Ordered by date, then symbol: on symbols that share every date, the same windows in the same order
    as an aligned panel's window_ends (so the same seeded batches).
    """
    t = decisions.rows()
    t = t[panel.runs[t - context + 1] == panel.runs[t + 1]]
    symbol = np.repeat(np.arange(len(panel.symbols)), np.diff(panel.offsets))[t]
    t = t[np.lexsort((symbol, panel.dates[t]))]
    return np.stack([t, np.zeros_like(t)], axis=1).astype(np.int64)

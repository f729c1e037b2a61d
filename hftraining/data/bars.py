"""Turn a raw table of daily bars (a CSV or a Yahoo download) into checked bars, or say why not.

Every source goes through `check_bars`, so the rest of the toolkit can rely on one shape: a
tz-naive DatetimeIndex named `date`, strictly ascending, and float64 columns `open, high, low,
close, adj_close, volume` with no gaps filled in. Bad values stop the run with one line naming
the file, the symbol and the first offending date; nothing is ever forward-filled, because a
filled price is a price the market never traded at.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

from hftraining.errors import UserError

log = logging.getLogger(__name__)

COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close"]

# Spelling-insensitive header names (lower case, no spaces/underscores/dashes) -> our column.
_ALIASES = {
    "date": "date", "datetime": "date", "timestamp": "date",
    "open": "open", "high": "high", "low": "low", "close": "close",
    "adjclose": "adj_close", "adjustedclose": "adj_close",
    "volume": "volume",
}

# Consecutive bars further apart than this are a gap: longer than any holiday weekend.
GAP_DAYS = 4


def _column_key(name: object) -> str:
    return re.sub(r"[\s_\-]", "", str(name).lower())


def _rename_columns(df: pd.DataFrame, symbol: str, where: str) -> pd.DataFrame:
    """Map Yahoo's `Adj Close`, `Date`, ... and our own spellings onto the canonical names."""
    index_key = _column_key(df.index.name) if df.index.name is not None else ""
    if _ALIASES.get(index_key) == "date":
        df = df.reset_index()
    renamed: dict[object, str] = {}
    for column in df.columns:
        canonical = _ALIASES.get(_column_key(column))
        if canonical is None:
            continue
        if canonical in renamed.values():
            raise UserError(f"{where}: {symbol}: two columns both mean '{canonical}'; keep one")
        renamed[column] = canonical
    return df.rename(columns=renamed)[list(renamed.values())]


def _parse_dates(raw: pd.Series, symbol: str, where: str) -> pd.DatetimeIndex:
    """Parse the date column; the first value that is not a date stops the run."""
    try:
        parsed = pd.to_datetime(raw, errors="coerce")
    except (ValueError, TypeError):
        parsed = pd.Series(pd.NaT, index=raw.index)
    if parsed.isna().any():  # a second, per-value pass for files that mix date formats
        retry = pd.to_datetime(raw[parsed.isna()], errors="coerce", format="mixed")
        parsed = parsed.where(parsed.notna(), retry)
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)  # keep the exchange's local wall time
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise UserError(
            f"{where}: {symbol}: unparseable date {raw.iloc[row]!r} in data row {row + 1}; "
            "dates must look like YYYY-MM-DD")
    index = pd.DatetimeIndex(parsed.to_numpy(), name="date")
    midnight = index.normalize()
    # Daily bars are keyed by the day; intraday bars keep their times.
    if midnight.nunique() == index.nunique():
        index = midnight
    return pd.DatetimeIndex(index.to_numpy(), name="date")  # no inferred freq: sources agree


def _to_numbers(df: pd.DataFrame, symbol: str, where: str) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for column in COLUMNS:
        values = pd.to_numeric(df[column], errors="coerce")
        not_number = values.isna() & df[column].notna()
        if not_number.any():
            row = int(np.flatnonzero(not_number.to_numpy())[0])
            raise UserError(
                f"{where}: {symbol}: {column} on {df.index[row]:%Y-%m-%d} is {df[column].iloc[row]!r}, "
                "not a number")
        out[column] = values.astype("float64")
    return out


def _first_date(mask: pd.Series) -> str:
    return f"{mask.idxmax():%Y-%m-%d}"


def _validate_values(bars: pd.DataFrame, symbol: str, where: str) -> None:
    missing = bars.isna().any(axis=1)
    if missing.any():
        date = missing.idxmax()
        columns = ", ".join(c for c in COLUMNS if pd.isna(bars.at[date, c]))
        raise UserError(
            f"{where}: {symbol}: missing {columns} on {date:%Y-%m-%d} ({int(missing.sum())} rows with "
            "missing values); fix or remove those rows (bars are never forward-filled)")
    infinite = np.isinf(bars[COLUMNS].to_numpy()).any(axis=1)
    if infinite.any():
        date = bars.index[int(np.flatnonzero(infinite)[0])]
        columns = ", ".join(c for c in COLUMNS if np.isinf(bars.at[date, c]))
        raise UserError(f"{where}: {symbol}: infinite {columns} on {date:%Y-%m-%d} ({int(infinite.sum())} rows); "
                        "every value must be a finite number")
    not_positive = (bars[PRICE_COLUMNS] <= 0).any(axis=1)
    if not_positive.any():
        raise UserError(
            f"{where}: {symbol}: zero or negative price on {_first_date(not_positive)} "
            f"({int(not_positive.sum())} rows); prices must be > 0")
    inverted = bars["high"] < bars["low"]
    if inverted.any():
        raise UserError(
            f"{where}: {symbol}: high < low on {_first_date(inverted)} ({int(inverted.sum())} rows)")
    negative_volume = bars["volume"] < 0
    if negative_volume.any():
        raise UserError(f"{where}: {symbol}: negative volume on {_first_date(negative_volume)}")


def check_bars(df: pd.DataFrame, symbol: str, where: str) -> pd.DataFrame:
    """Normalise a raw bar table and validate it; raise UserError on the first problem.

    `where` names the origin (a file path, "Yahoo Finance download") for the messages. Problems
    that lose no information are repaired with a logged warning: a missing adj_close (auto-adjusted
    data: close is used), unsorted rows (sorted) and duplicated dates (the last row is kept).
    """
    if df is None or len(df.columns) == 0:
        raise UserError(f"{where}: {symbol}: the file is empty; it needs a header row and bars")
    df = _rename_columns(df, symbol, where)
    if "adj_close" not in df.columns and "close" in df.columns:
        log.warning("%s: %s has no adj_close column (auto-adjusted data?): using close as the adjusted close",
                    where, symbol)
        df = df.assign(adj_close=df["close"])
    missing = [c for c in ["date", *COLUMNS] if c not in df.columns]
    if missing:
        raise UserError(
            f"{where}: {symbol}: missing column {', '.join(missing)}; expected date,open,high,low,close,"
            "adj_close,volume (or Yahoo's Date,Open,High,Low,Close,Adj Close,Volume)")
    if len(df) == 0:
        raise UserError(f"{where}: {symbol}: no bars (a header but no rows)")

    df = df.set_index(_parse_dates(df["date"].reset_index(drop=True), symbol, where).rename("date"))
    bars = _to_numbers(df, symbol, where)

    if not bars.index.is_monotonic_increasing:
        log.warning("%s: %s: dates are not in order; sorted them", where, symbol)
        bars = bars.sort_index(kind="mergesort")  # stable: duplicates keep their file order
    duplicated = bars.index.duplicated(keep="last")
    if duplicated.any():
        log.warning("%s: %s: %d duplicated dates; kept the last row of each", where, symbol,
                    int(duplicated.sum()))
        bars = bars[~duplicated]

    _validate_values(bars, symbol, where)
    return bars


def summarize(bars: pd.DataFrame) -> dict:
    """A few numbers that tell whether a series looks usable (`hftrain data validate/show`)."""
    if len(bars) == 0:
        return {"rows": 0, "first": None, "last": None, "gaps": 0, "largest_gap_days": 0,
                "min_price": None, "zero_volume_days": 0}
    spacing = bars.index.to_series().diff().dt.days.dropna()
    return {
        "rows": int(len(bars)),
        "first": f"{bars.index[0]:%Y-%m-%d}",
        "last": f"{bars.index[-1]:%Y-%m-%d}",
        "gaps": int((spacing > GAP_DAYS).sum()),  # missing trading days beyond a holiday weekend
        "largest_gap_days": int(spacing.max()) if len(spacing) else 0,
        "min_price": float(bars["low"].min()),
        "zero_volume_days": int((bars["volume"] == 0).sum()),
        "source": bars.attrs.get("source"),
        "origin": bars.attrs.get("origin"),
    }

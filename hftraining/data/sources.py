"""Pick the bar source a DataConfig asks for, load one symbol, and cut it to the date range.

`auto` means: the CSV folder when `data_dir` is set, otherwise Yahoo through its cache. It never
falls back to synthetic bars: a run on invented prices must be asked for by name.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from hftraining.config import DataConfig
from hftraining.data.bars import check_bars
from hftraining.data.synthetic import generate_bars
from hftraining.data.yahoo import fetch_yahoo, load_yahoo
from hftraining.errors import UserError
from hftraining.layout import normalize_symbol

SHOWN_SYMBOLS = 8  # how many available symbols an error message lists


def resolve_source(data: DataConfig) -> str:
    """The concrete source (csv | yahoo | synthetic) for data.source, `auto` resolved."""
    if data.source == "auto":
        return "csv" if data.data_dir else "yahoo"
    return data.source


def _available(folder: Path) -> str:
    symbols = sorted(p.stem.upper() for p in folder.glob("*.csv"))
    if not symbols:
        return f"{folder} has no .csv files"
    shown = ", ".join(symbols[:SHOWN_SYMBOLS]) + (", ..." if len(symbols) > SHOWN_SYMBOLS else "")
    return f"{folder} has {len(symbols)}: {shown}"


def csv_path(symbol: str, data_dir: str | None) -> Path:
    """`<data_dir>/<SYMBOL>.csv` (any case of the file name), or a UserError saying what exists."""
    if not data_dir:
        raise UserError("data.source is csv but no folder is set: use --data-dir DIR with <SYMBOL>.csv files")
    folder = Path(data_dir).expanduser()
    if folder.is_file():
        raise UserError(f"--data-dir {folder}: is a file; pass the folder that holds it: --data-dir {folder.parent}")
    if not folder.is_dir():
        raise UserError(
            f"--data-dir {folder}: folder not found; point --data-dir at a folder of <SYMBOL>.csv files")
    path = folder / f"{symbol}.csv"
    if path.is_file():
        return path
    by_name = {p.stem.upper(): p for p in folder.glob("*.csv")}
    if symbol in by_name:
        return by_name[symbol]
    raise UserError(
        f"{path}: no CSV for {symbol} ({_available(folder)}); use --data-dir to choose another folder")


def read_csv_bars(symbol: str, path: Path) -> pd.DataFrame:
    """Read one symbol's CSV (values as text, so error messages can quote them) and check it."""
    try:
        raw = pd.read_csv(path, dtype=str)
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: {symbol}: the file is empty; it needs a header row and bars") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise UserError(f"{path}: {symbol}: not a readable CSV ({reason})") from None
    bars = check_bars(raw, symbol, str(path))
    bars.attrs.update(source="csv", origin=str(path.resolve()))
    return bars


def _day(value: str | None, key: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        return pd.Timestamp(date.fromisoformat(value))
    except (TypeError, ValueError):
        raise UserError(f"data.{key} must be a date YYYY-MM-DD, got {value!r}") from None


def cut_dates(bars: pd.DataFrame, symbol: str, start: str | None, end: str | None) -> pd.DataFrame:
    """Keep bars with start <= date <= end (both inclusive); none left is an error, not an empty run."""
    first, last = _day(start, "start"), _day(end, "end")
    cut = bars.loc[first:last]
    if len(cut) == 0:
        span = f"{bars.index[0]:%Y-%m-%d}..{bars.index[-1]:%Y-%m-%d}" if len(bars) else "nothing"
        raise UserError(
            f"{symbol}: no bars between data.start={start} and data.end={end} "
            f"({bars.attrs.get('origin', 'the source')} covers {span})")
    return cut


def prefetch(symbols: list[str], data: DataConfig, raw_cache: Path
             ) -> tuple[dict[str, pd.DataFrame], dict[str, UserError]]:
    """Before loading many symbols: Yahoo downloads what its cache lacks in batched calls.

    Returns the bars it already holds (downloaded or read while deciding) and the symbols that
    failed, each with its one-line error; other sources have nothing to fetch.
    """
    _day(data.start, "start")  # a bad date fails before any download
    _day(data.end, "end")
    if resolve_source(data) != "yahoo":
        return {}, {}
    return fetch_yahoo([normalize_symbol(s) for s in symbols], data, Path(raw_cache))


def finish_bars(symbol: str, bars: pd.DataFrame, data: DataConfig, warmup: bool = False) -> pd.DataFrame:
    """Checked bars cut to data.start..data.end, keeping what `attrs` says about where they came from.

    With `warmup`, the bars before data.start are kept as well and `attrs["first_date"]` marks the first
    bar of the range: features are computed on the whole earlier history and then cut there
    (hftraining.data.features.symbol_frame), so a late --start does not cost the first ~60 bars of the
    range, and the features equal those of a run over the full history.
    """
    attrs = dict(bars.attrs)
    cut = cut_dates(bars, symbol, data.start, data.end)
    if warmup and data.start is not None:
        kept = bars.loc[:_day(data.end, "end")].copy()
        attrs.update(first_date=cut.index[0], warmup_bars=len(kept) - len(cut))
    else:
        kept = cut.copy()
    kept.attrs = attrs
    return kept


def load_bars(symbol: str, data: DataConfig, raw_cache: Path, warmup: bool = False) -> pd.DataFrame:
    """Checked daily bars for one symbol from the configured source, cut to data.start..data.end (with
    `warmup`, the earlier bars kept for the features: finish_bars).

    `bars.attrs` says what was used: `source` (yahoo | csv | synthetic) and `origin` (a path, the
    Yahoo cache file, or the synthetic seed) for the run's metadata.
    """
    symbol = normalize_symbol(symbol)
    _day(data.start, "start")  # a bad date fails before any download
    _day(data.end, "end")
    source = resolve_source(data)
    if source == "csv":
        bars = read_csv_bars(symbol, csv_path(symbol, data.data_dir))
    elif source == "yahoo":
        bars = load_yahoo(symbol, data, Path(raw_cache))
    else:
        bars = generate_bars(symbol, data.synthetic_bars, data.synthetic_seed, edge=data.synthetic_edge)
    return finish_bars(symbol, bars, data, warmup=warmup)

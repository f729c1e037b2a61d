"""Daily bars from Yahoo Finance (yfinance), kept in a CSV cache that is topped up incrementally.

The cache `<raw_cache>/yahoo/<SYMBOL>_<interval>.csv` holds the full history as checked bars; a
sidecar `.json` records through which date Yahoo was asked, so a request ending on a holiday does
not download again. A top-up asks only for the bars from the last cached date on: that one
overlapping bar shows whether Yahoo has re-adjusted the history since (a dividend or split), in
which case appending would splice two adjustment bases into a fake return, so the history is
downloaded again instead. Today's bar is never cached, because it may still be forming.

Many symbols are fetched together (`fetch_yahoo`): the missing ones in batched `yf.download` calls of
up to BATCH_SIZE tickers, the stale ones topped up the same way; one symbol's failure (an unknown
ticker, bars that fail the checks) is that symbol's one-line error, while being offline or
rate-limited stops the whole fetch.

Offline, a needed download stops the run with one line: this module never substitutes other data.
"""

from __future__ import annotations

import json
import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from hftraining import atomic
from hftraining.config import DataConfig
from hftraining.data.bars import check_bars
from hftraining.errors import UserError

log = logging.getLogger(__name__)

YAHOO_HOST = "query1.finance.yahoo.com"
INTERVAL_PATTERN = re.compile(r"^[0-9]{1,3}(m|h|d|wk|mo)$")


def yahoo_reachable(timeout: float = 3.0) -> bool:
    """A short TCP connect to Yahoo's API host: tells 'offline' apart from 'unknown ticker'."""
    try:
        with socket.create_connection((YAHOO_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


class YahooUnavailable(UserError):
    """Yahoo cannot serve anything right now (offline, rate-limited, yfinance failing): no one symbol's fault."""


def offline_error(symbol: str) -> UserError:
    return YahooUnavailable(
        f"cannot reach Yahoo Finance to download {symbol} (offline?): "
        "use --data-dir DIR with <SYMBOL>.csv files, or --source synthetic")


def cache_path(raw_cache: Path, symbol: str, interval: str) -> Path:
    if not INTERVAL_PATTERN.fullmatch(interval):
        raise UserError(f"data.interval {interval!r} is not a Yahoo interval (e.g. 1d, 1wk, 1h)")
    return Path(raw_cache) / "yahoo" / f"{symbol}_{interval}.csv"


def _today() -> date:
    return date.today()


@contextmanager
def _quiet_yfinance(errors: list[str]) -> Iterator[None]:
    """Collect yfinance's error log lines instead of letting them spill onto stderr."""
    logger = logging.getLogger("yfinance")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record.getMessage().strip())

    handler = Collect()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def frame_for_symbol(raw: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """One ticker's columns from a yf.download frame, flat or (Price, Ticker) MultiIndex."""
    if isinstance(raw.columns, pd.MultiIndex):
        names = list(raw.columns.names)
        if "Ticker" in names:
            level = names.index("Ticker")
        else:
            level = next((i for i in range(raw.columns.nlevels)
                          if symbol in raw.columns.get_level_values(i)), None)
        if level is None or symbol not in raw.columns.get_level_values(level):
            return raw.iloc[:0, :0]
        raw = raw.xs(symbol, axis=1, level=level)
    # Several tickers are aligned on the union of their dates: drop the rows this one lacks.
    return raw.dropna(how="all")


BATCH_SIZE = 100  # tickers per yf.download call when many symbols are fetched together


def _names(symbols: list[str]) -> str:
    return ", ".join(symbols[:3]) + (f" (+{len(symbols) - 3} more)" if len(symbols) > 3 else "")


def _call_yfinance(symbols: list[str], interval: str, start: date | None,
                   end_exclusive: date) -> tuple[pd.DataFrame, list[str]]:
    """One yf.download of `symbols` (a plain ticker string for one) and yfinance's error lines."""
    if not yahoo_reachable():
        raise offline_error(_names(symbols))
    import yfinance as yf  # imported here: it is slow to import and only this path needs it

    span = {"period": "max"} if start is None else {"start": start.isoformat()}
    errors: list[str] = []
    tickers = symbols[0] if len(symbols) == 1 else list(symbols)
    try:
        with _quiet_yfinance(errors):
            raw = yf.download(tickers, end=end_exclusive.isoformat(), interval=interval, auto_adjust=False,
                              actions=False, progress=False, threads=len(symbols) > 1, **span)
    except Exception as exc:  # yfinance raises many types; the user needs the one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise YahooUnavailable(f"Yahoo Finance download of {_names(symbols)} failed: {reason}") from None
    return (raw if raw is not None else pd.DataFrame()), errors


def download(symbol: str, interval: str, start: date | None, end_exclusive: date) -> pd.DataFrame:
    """Checked bars of one ticker from Yahoo for [start, end_exclusive); start=None means the full history.

    Returns an empty frame when Yahoo answered but has no bars; raises UserError when offline.
    """
    raw, errors = _call_yfinance([symbol], interval, start, end_exclusive)
    frame = frame_for_symbol(raw, symbol)
    if len(frame) == 0:
        _explain_no_bars([symbol], errors)
        if start is None:
            raise _unknown_ticker(symbol, errors, alone=True)
        return pd.DataFrame()
    return check_bars(frame, symbol, f"Yahoo Finance download of {symbol}")


def download_many(symbols: list[str], interval: str, start: date | None,
                  end_exclusive: date) -> dict[str, pd.DataFrame | UserError]:
    """Checked bars per symbol for [start, end_exclusive), in batched yf.download calls (`download` for one).

    Per symbol: the bars, an empty frame (Yahoo answered with no bars: only for a top-up, start set),
    or the UserError saying what is wrong with that symbol. Being offline or rate-limited is not one
    symbol's problem: it raises (YahooUnavailable).
    """
    if len(symbols) == 1:
        try:
            return {symbols[0]: download(symbols[0], interval, start, end_exclusive)}
        except YahooUnavailable:
            raise
        except UserError as exc:
            return {symbols[0]: exc}
    out: dict[str, pd.DataFrame | UserError] = {}
    for i in range(0, len(symbols), BATCH_SIZE):
        batch = symbols[i:i + BATCH_SIZE]
        raw, errors = _call_yfinance(batch, interval, start, end_exclusive)
        empty = []
        for symbol in batch:
            frame = frame_for_symbol(raw, symbol)
            if len(frame) == 0:
                empty.append(symbol)
                continue
            try:
                out[symbol] = check_bars(frame, symbol, f"Yahoo Finance download of {symbol}")
            except UserError as exc:
                out[symbol] = exc
        if empty:
            _explain_no_bars(empty, errors)
        for symbol in empty:
            out[symbol] = pd.DataFrame() if start is not None else _unknown_ticker(symbol, errors, alone=False)
    return out


def _error_lines(errors: list[str]) -> list[str]:
    return [e for e in errors if not e.endswith(("Failed download:", "Failed downloads:"))]


def _explain_no_bars(symbols: list[str], errors: list[str]) -> None:
    """yfinance returns an empty frame for every failure; raise for the ones that are no symbol's fault."""
    if not yahoo_reachable():
        raise offline_error(_names(symbols))
    if any("rate limit" in e.lower() or "too many requests" in e.lower() for e in _error_lines(errors)):
        raise YahooUnavailable(f"Yahoo Finance is rate-limiting downloads (fetching {_names(symbols)}): try again "
                        "later, or use --data-dir DIR with <SYMBOL>.csv files")


def _unknown_ticker(symbol: str, errors: list[str], alone: bool) -> UserError:
    """No bars for a full-history request: the ticker does not exist (yfinance's reason when it gave one)."""
    lines = _error_lines(errors)
    reason = next((e for e in lines if f"'{symbol}'" in e.split("]:", 1)[0]), lines[0] if alone and lines else "")
    said = f" (yfinance: {reason[:200]})" if reason else ""
    return UserError(
        f"unknown ticker {symbol!r} on Yahoo Finance: no bars returned{said}; "
        "check the symbol (e.g. BRK-B, ^GSPC) or use --data-dir DIR with <SYMBOL>.csv files")


# --- the cache ---------------------------------------------------------------------------------

def _read_cache(path: Path, symbol: str) -> tuple[pd.DataFrame, date]:
    """Cached bars and the last date Yahoo was asked about (the last bar when no sidecar)."""
    try:
        bars = check_bars(pd.read_csv(path, dtype=str), symbol, str(path))
    except pd.errors.EmptyDataError:
        raise UserError(
            f"{path}: the Yahoo cache for {symbol} is empty; delete it to download again") from None
    checked_through = bars.index[-1].date()
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            recorded = date.fromisoformat(json.loads(sidecar.read_text())["checked_through"])
            checked_through = max(checked_through, recorded)
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable cache record; it will be rewritten", sidecar)
    return bars, checked_through


def _write_cache(path: Path, bars: pd.DataFrame, symbol: str, interval: str, checked_through: date) -> None:
    # 17 significant digits: what is written is the float64 itself, not a rounded copy
    atomic.atomic_write(path, lambda tmp: bars.to_csv(tmp, index_label="date", float_format="%.17g"))
    atomic.write_json(path.with_suffix(".json"), {
        "symbol": symbol, "interval": interval, "checked_through": checked_through.isoformat(),
        "updated": datetime.now().isoformat(timespec="seconds")})


def _same_bar(a: pd.Series, b: pd.Series) -> bool:
    return bool(np.allclose(a[["close", "adj_close"]].to_numpy(), b[["close", "adj_close"]].to_numpy(),
                            rtol=1e-6, atol=0))


def _recorded_through(path: Path) -> date | None:
    """The sidecar's `checked_through` without reading the bars; None when it is missing or unreadable."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        return date.fromisoformat(json.loads(sidecar.read_text())["checked_through"])
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _label(bars: pd.DataFrame, path: Path) -> pd.DataFrame:
    bars.attrs.update(source="yahoo", origin=f"Yahoo Finance (cached {path})")
    return bars


def fetch_yahoo(symbols: list[str], data: DataConfig, raw_cache: Path
                ) -> tuple[dict[str, pd.DataFrame], dict[str, UserError]]:
    """Bring every symbol's cache up to what the request needs, in batched downloads.

    Symbols without a cache are downloaded whole, together; cached ones that need newer bars are
    topped up together from their last cached bar (one bar of overlap shows whether Yahoo has
    re-adjusted the history, in which case that symbol is downloaded whole again). Returns the bars of
    the symbols it downloaded or had to read, and the symbols that failed with their one-line errors;
    a symbol in neither has an up-to-date cache to read.
    """
    wanted_through = _today() - timedelta(days=1)   # Yahoo's `end` is exclusive; today's bar may be forming
    if data.end is not None:
        wanted_through = min(wanted_through, date.fromisoformat(data.end))
    end_exclusive = wanted_through + timedelta(days=1)
    wants_newer = data.refresh or data.end is not None
    loaded: dict[str, pd.DataFrame] = {}
    failed: dict[str, UserError] = {}
    whole: list[str] = []
    cached: dict[str, pd.DataFrame] = {}
    top_ups: dict[date, list[str]] = {}
    paths = {symbol: cache_path(raw_cache, symbol, data.interval) for symbol in symbols}
    for symbol, path in paths.items():
        if not path.is_file():
            whole.append(symbol)
            continue
        through = _recorded_through(path)
        if through is not None and not (wanted_through > through and wants_newer):
            if wanted_through > through:
                log.info("data %s: using cached bars through %s (data.refresh downloads newer ones)", symbol, through)
            continue                                # up to date: read later, where it is used
        try:
            bars, through = _read_cache(path, symbol)
        except UserError as exc:
            failed[symbol] = exc
            continue
        if wanted_through > through and wants_newer:
            cached[symbol] = bars
            top_ups.setdefault(bars.index[-1].date(), []).append(symbol)
        else:
            if wanted_through > through:
                log.info("data %s: using cached bars through %s (data.refresh downloads newer ones)", symbol, through)
            loaded[symbol] = _label(bars, path)

    def store(symbol: str, result: pd.DataFrame | UserError) -> None:
        if isinstance(result, UserError):
            failed[symbol] = result
            return
        _write_cache(paths[symbol], result, symbol, data.interval, wanted_through)
        # the bars as the cache gives them back (CSV parsing rounds in the last bit): the process that
        # downloaded trains on exactly what every other rank and every later run reads
        loaded[symbol] = _label(_read_cache(paths[symbol], symbol)[0], paths[symbol])

    for symbol, result in download_many(whole, data.interval, None, end_exclusive).items():
        store(symbol, result)
    readjusted = []
    for start, group in top_ups.items():
        for symbol, newer in download_many(group, data.interval, start, end_exclusive).items():
            old = cached[symbol]
            last = old.index[-1]
            if isinstance(newer, UserError):
                failed[symbol] = newer
            elif len(newer) == 0:                  # a hiccup, not an answer: keep the cache as it is
                log.warning("Yahoo Finance sent no bars for %s from %s on; using the cached bars as they are",
                            symbol, f"{last:%Y-%m-%d}")
                loaded[symbol] = _label(old, paths[symbol])
            elif last in newer.index and _same_bar(old.loc[last], newer.loc[last]):
                store(symbol, pd.concat([old, newer[newer.index > last]]))
            else:
                log.warning("Yahoo Finance: %s's adjusted prices changed since it was cached (a dividend or "
                            "split); downloading its full history again", symbol)
                readjusted.append(symbol)
    for symbol, result in download_many(readjusted, data.interval, None, end_exclusive).items():
        store(symbol, result)
    return loaded, failed


def load_yahoo(symbol: str, data: DataConfig, raw_cache: Path) -> pd.DataFrame:
    """Bars for `symbol` from the cache, downloading what the request needs that it lacks."""
    loaded, failed = fetch_yahoo([symbol], data, raw_cache)
    if symbol in failed:
        raise failed[symbol]
    if symbol in loaded:
        return loaded[symbol]
    path = cache_path(raw_cache, symbol, data.interval)
    return _label(_read_cache(path, symbol)[0], path)

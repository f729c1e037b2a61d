"""Daily bars from Yahoo Finance (yfinance), kept in a CSV cache that is topped up incrementally.

The cache `<raw_cache>/yahoo/<SYMBOL>_<interval>.csv` holds the full history as checked bars; a
sidecar `.json` records through which date Yahoo was asked, so a request ending on a holiday does
not download again. A top-up asks only for the bars from the last cached date on: that one
overlapping bar shows whether Yahoo has re-adjusted the history since (a dividend or split), in
which case appending would splice two adjustment bases into a fake return, so the history is
downloaded again instead. Today's bar is never cached, because it may still be forming.

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


def offline_error(symbol: str) -> UserError:
    return UserError(
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


def download(symbol: str, interval: str, start: date | None, end_exclusive: date) -> pd.DataFrame:
    """Checked bars from Yahoo for [start, end_exclusive); start=None means the full history.

    Returns an empty frame when Yahoo answered but has no bars; raises UserError when offline.
    """
    if not yahoo_reachable():
        raise offline_error(symbol)
    import yfinance as yf  # imported here: it is slow to import and only this path needs it

    span = {"period": "max"} if start is None else {"start": start.isoformat()}
    errors: list[str] = []
    try:
        with _quiet_yfinance(errors):
            raw = yf.download(symbol, end=end_exclusive.isoformat(), interval=interval, auto_adjust=False,
                              actions=False, progress=False, threads=False, **span)
    except Exception as exc:  # yfinance raises many types; the user needs the one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"Yahoo Finance download of {symbol} failed: {reason}") from None
    frame = frame_for_symbol(raw if raw is not None else pd.DataFrame(), symbol)
    if len(frame) == 0:
        _explain_no_bars(symbol, errors, history_wanted=start is None)
        return pd.DataFrame()
    return check_bars(frame, symbol, f"Yahoo Finance download of {symbol}")


def _explain_no_bars(symbol: str, errors: list[str], history_wanted: bool) -> None:
    """yfinance returns an empty frame for every failure; tell the user which one this was."""
    if not yahoo_reachable():
        raise offline_error(symbol)
    reason = next((e for e in errors if not e.endswith(("Failed download:", "Failed downloads:"))), "")
    if "rate limit" in reason.lower() or "too many requests" in reason.lower():
        raise UserError(f"Yahoo Finance is rate-limiting downloads (fetching {symbol}): try again later, "
                        "or use --data-dir DIR with <SYMBOL>.csv files")
    if history_wanted:
        said = f" (yfinance: {reason[:200]})" if reason else ""
        raise UserError(
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
    atomic.atomic_write(path, lambda tmp: bars.to_csv(tmp, index_label="date"))
    atomic.write_json(path.with_suffix(".json"), {
        "symbol": symbol, "interval": interval, "checked_through": checked_through.isoformat(),
        "updated": datetime.now().isoformat(timespec="seconds")})


def _same_bar(a: pd.Series, b: pd.Series) -> bool:
    return bool(np.allclose(a[["close", "adj_close"]].to_numpy(), b[["close", "adj_close"]].to_numpy(),
                            rtol=1e-6, atol=0))


def _top_up(symbol: str, interval: str, cached: pd.DataFrame, end_exclusive: date) -> pd.DataFrame | None:
    """Cached bars plus the newer ones; the whole history again if Yahoo re-adjusted it.

    None when Yahoo sent nothing back, not even the last cached bar (a hiccup, not an answer).
    """
    last = cached.index[-1]
    newer = download(symbol, interval, last.date(), end_exclusive)
    if len(newer) == 0:
        log.warning("Yahoo Finance sent no bars for %s from %s on; using the cached bars as they are",
                    symbol, f"{last:%Y-%m-%d}")
        return None
    if last in newer.index and _same_bar(cached.loc[last], newer.loc[last]):
        return pd.concat([cached, newer[newer.index > last]])
    log.warning("Yahoo Finance: %s's adjusted prices changed since it was cached (a dividend or split); "
                "downloading its full history again", symbol)
    return download(symbol, interval, None, end_exclusive)


def load_yahoo(symbol: str, data: DataConfig, raw_cache: Path) -> pd.DataFrame:
    """Bars for `symbol` from the cache, downloading what the request needs that it lacks."""
    path = cache_path(raw_cache, symbol, data.interval)
    # Yahoo's `end` is exclusive; stop before today, whose bar may still be forming.
    wanted_through = _today() - timedelta(days=1)
    if data.end is not None:
        wanted_through = min(wanted_through, date.fromisoformat(data.end))
    end_exclusive = wanted_through + timedelta(days=1)

    if not path.is_file():
        bars = download(symbol, data.interval, None, end_exclusive)
        _write_cache(path, bars, symbol, data.interval, wanted_through)
    else:
        bars, checked_through = _read_cache(path, symbol)
        if wanted_through > checked_through and (data.refresh or data.end is not None):
            topped_up = _top_up(symbol, data.interval, bars, end_exclusive)
            if topped_up is not None:
                bars = topped_up
                _write_cache(path, bars, symbol, data.interval, wanted_through)
        elif wanted_through > checked_through:
            log.info("%s: using cached bars through %s (data.refresh downloads newer ones)",
                     symbol, checked_through)
    bars.attrs.update(source="yahoo", origin=f"Yahoo Finance (cached {path})")
    return bars

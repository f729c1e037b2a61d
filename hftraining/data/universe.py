"""A universe: many symbols, named in a file or on the command line, loaded and featurised together.

`read_stocks_file` reads a universe file (one symbol per line, `#` starts a comment), so every
command that takes `--stocks` also takes `--stocks-file FILE`. `featurise_universe` turns the symbols
into per-symbol feature frames: Yahoo first fills its cache in batched downloads, then each symbol's
bars are loaded, checked and featurised on its own full history, in parallel over symbols behind one
progress bar. A symbol that fails (download, bar checks, too short) is reported in one line; the run
then stops (`data.on_bad_symbol: error`, the default) or goes on without it (`skip`, and the run's
metadata lists it).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hftraining.config import Config
from hftraining.errors import UserError
from hftraining.layout import normalize_symbol, parse_symbols

log = logging.getLogger("hftraining")

MAX_WORKERS = 8          # threads for load_workers = 0 (auto)
SHOWN_BAD = 5            # bad symbols named in the stopping error line


def read_stocks_file(path: str | Path) -> list[str]:
    """Symbols of a universe file: one per line, `#` comments and blank lines ignored, repeats dropped."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--stocks-file {path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"--stocks-file {path}: is a folder, not a file of symbols") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--stocks-file {path}: cannot read it ({type(exc).__name__}: {exc})") from None
    symbols: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            symbol = normalize_symbol(entry)
        except UserError as exc:
            raise UserError(f"{path}:{number}: {exc} (one symbol per line, # for comments)") from None
        if symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        raise UserError(f"--stocks-file {path}: no symbols in it (one symbol per line, # for comments)")
    return symbols


def universe_symbols(stocks: Optional[Iterable[str]], stocks_file: Optional[str | Path]) -> list[str]:
    """`--stocks` and `--stocks-file` together: the listed symbols first, then the file's, without repeats."""
    symbols = parse_symbols(list(stocks or []))
    if stocks_file is not None:
        symbols += [s for s in read_stocks_file(stocks_file) if s not in symbols]
    return symbols


# --- loading and featurising many symbols ---------------------------------------------------------

@dataclass
class Universe:
    """What `featurise_universe` produced, in the order the symbols were asked for."""

    items: dict[str, Any]                                   # symbol -> what `keep` returned
    origin: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    forecast: dict[str, dict] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)   # symbol -> why (data.on_bad_symbol=skip)


def load_workers(config: Config, n_symbols: int) -> int:
    wanted = config.data.load_workers or min(MAX_WORKERS, os.cpu_count() or 1)
    return max(1, min(wanted, n_symbols))


def report_bad_symbols(failed: dict[str, UserError], symbols: list[str], policy: str) -> None:
    """One line per bad symbol; under `error` (or with nothing left) the run stops with one more line."""
    if not failed:
        return
    bad = [s for s in symbols if s in failed]
    if policy == "error" and len(bad) == 1:
        raise failed[bad[0]]                 # the one line, as a one-symbol run has always said it
    for symbol in bad:
        log.warning("bad symbol %s: %s", symbol, failed[symbol])
    shown = ", ".join(bad[:SHOWN_BAD]) + (f" and {len(bad) - SHOWN_BAD} more" if len(bad) > SHOWN_BAD else "")
    if policy == "error":
        raise UserError(f"{len(bad)} symbols failed to load ({shown}; reasons above): fix or drop them, "
                        "or set data.on_bad_symbol=skip to continue without them")
    if len(bad) == len(symbols):
        raise UserError(f"every symbol failed to load ({shown}; reasons above)")
    log.warning("continuing without %d bad symbols (data.on_bad_symbol=skip): %s", len(bad), shown)


# Neural forecasters run one symbol at a time (one model, one GPU); loading and features overlap them.
_FORECAST_LOCK = threading.Lock()


def featurise_universe(symbols: list[str], config: Config, root: Path, progress: bool = True,
                       keep: Optional[Callable[[str, Any], Any]] = None,
                       on_bad_symbol: Optional[str] = None) -> Universe:
    """Load, check and featurise every symbol (in parallel), applying the bad-symbol policy.

    `keep(symbol, frame)` turns each symbol's feature frame (hftraining.data.features.symbol_frame) into
    what is kept (a compact array form, say) inside the worker, so the frames never pile up; a
    UserError it raises makes the symbol a bad one. Yahoo symbols are downloaded first in batches.
    """
    from hftraining.data.features import symbol_frame
    from hftraining.data.sources import finish_bars, load_bars, prefetch
    from hftraining.layout import Layout

    policy = on_bad_symbol or config.data.on_bad_symbol
    symbols = [normalize_symbol(s) for s in symbols]
    layout = Layout.at(root)
    fetched, failed = prefetch(symbols, config.data, layout.raw_data)
    if policy == "error" and failed:
        report_bad_symbols(failed, symbols, policy)
    serial_forecasts = False
    if config.data.resolved_forecast_backend != "none":   # load the forecaster once, here: an unusable one stops
        from hftraining.forecasting.base import load_backend

        serial_forecasts = load_backend(config.data)[0].name in ("toto", "chronos")
    todo = [s for s in symbols if s not in failed]
    inner_progress = progress and len(todo) == 1

    def work(symbol: str):                  # bars before data.start are kept: the features warm up on them
        bars = (finish_bars(symbol, fetched[symbol], config.data, warmup=True) if symbol in fetched
                else load_bars(symbol, config.data, layout.raw_data, warmup=True))
        if serial_forecasts:
            with _FORECAST_LOCK:
                frame, info = symbol_frame(symbol, bars, config, layout.forecast_cache, inner_progress)
        else:
            frame, info = symbol_frame(symbol, bars, config, layout.forecast_cache, inner_progress)
        item = keep(symbol, frame) if keep is not None else frame
        return item, bars.attrs.get("origin", ""), bars.attrs.get("source", ""), info

    results = _in_parallel(todo, work, load_workers(config, len(todo)), progress, policy, failed)
    report_bad_symbols(failed, symbols, policy)
    ordered = [s for s in symbols if s in results]
    return Universe(items={s: results[s][0] for s in ordered}, origin={s: results[s][1] for s in ordered},
                    source={s: results[s][2] for s in ordered}, forecast={s: results[s][3] for s in ordered},
                    skipped={s: str(failed[s]) for s in symbols if s in failed})


def load_universe_bars(symbols: list[str], config: Config, progress: bool = True,
                       on_bad_symbol: Optional[str] = None, warmup: bool = False) -> dict:
    """Checked bars of every symbol (Yahoo: batched downloads into the cache), bad ones per the policy; with
    `warmup`, the bars before data.start too, as training featurises them (finish_bars)."""
    from hftraining.data.sources import finish_bars, load_bars, prefetch
    from hftraining.layout import Layout

    policy = on_bad_symbol or config.data.on_bad_symbol
    symbols = [normalize_symbol(s) for s in symbols]
    raw = Layout.at(config.paths.root).raw_data
    fetched, failed = prefetch(symbols, config.data, raw)
    if policy == "error" and failed:
        report_bad_symbols(failed, symbols, policy)

    def work(symbol: str):
        return (finish_bars(symbol, fetched[symbol], config.data, warmup) if symbol in fetched
                else load_bars(symbol, config.data, raw, warmup))

    todo = [s for s in symbols if s not in failed]
    results = _in_parallel(todo, work, load_workers(config, len(todo)), progress, policy, failed)
    report_bad_symbols(failed, symbols, policy)
    return {s: results[s] for s in symbols if s in results}


def _in_parallel(symbols: list[str], work: Callable[[str], Any], workers: int, progress: bool, policy: str,
                 failed: dict[str, UserError]) -> dict[str, Any]:
    """work(symbol) on a thread pool behind one progress bar; a UserError marks the symbol as failed.

    Under the `error` policy the first failure cancels the symbols not started yet.
    """
    results: dict[str, Any] = {}
    with _symbols_bar(progress and len(symbols) > 1, len(symbols)) as advance, \
            ThreadPoolExecutor(workers, thread_name_prefix="hftrain-load") as pool:
        pending = {pool.submit(work, s): s for s in symbols}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                symbol = pending.pop(future)
                try:
                    results[symbol] = future.result()
                except UserError as exc:
                    failed[symbol] = exc
                advance(1)
            if failed and policy == "error":          # stop early: the rest would be thrown away
                for future in pending:
                    future.cancel()
                break
    return results


class _symbols_bar:
    """A rich progress bar over symbols on stderr (a no-op when quiet or for one symbol)."""

    def __init__(self, show: bool, total: int):
        self.show, self.total, self.bar = show, total, None

    def __enter__(self) -> Callable[[int], None]:
        if not self.show:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("loading symbols"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True))
        self.bar.start()
        task = self.bar.add_task("symbols", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

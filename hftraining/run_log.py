"""`<root>/logs/<run>.log`: every log line and warning of a run, kept on disk beside its results.

Why: the warnings that qualify a result (a forecaster that fell back, repaired dates, a fine-tune that
kept its base) scroll past on stderr and are gone; the log file keeps them. A command's library entry
point (run_single, run_base_pipeline, ...) opens a `capture()` before it loads any data; the run's
lifecycle names the file with `attach(root, run_id)` once its folder is claimed, and the lines logged
before that (data loading, forecasters) are written first. The first run attached names the file, so
the stages of one command (a base and its fine-tunes, a walk-forward and its folds) share one log; a
resumed run appends to its own. Lines below the `hftraining` logger's level (INFO from the command
line) are not recorded.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from hftraining.layout import Layout, check_run_name

LOGGERS = ("hftraining", "py.warnings")      # ours, and Python warnings once logging captures them
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_BUFFERED = 10_000                        # lines kept before the file is named; older ones are dropped


class RunLogHandler(logging.Handler):
    """Buffers formatted lines until `open(path)`, then appends them and every later line to that file."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(FORMAT))
        self.buffer: list[str] = []
        self.stream = None
        self.path: Optional[Path] = None

    def open(self, path: Path) -> None:
        """Name the file (the first call wins) and write what was buffered."""
        if self.stream is not None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = open(path, "a", encoding="utf-8")   # noqa: SIM115 - held open for the run's duration
        self.path = path
        self.stream.writelines(line + "\n" for line in self.buffer)
        self.stream.flush()
        self.buffer = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a bad log call must not stop a run
            self.handleError(record)
            return
        if self.stream is None:
            self.buffer.append(line)
            del self.buffer[:-MAX_BUFFERED]
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        super().close()


_active: list[RunLogHandler] = []


def captured(function: Callable) -> Callable:
    """Decorate a command's library entry point: its log lines are captured for the run it attaches."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with capture():
            return function(*args, **kwargs)
    return wrapper


@contextmanager
def capture() -> Iterator[RunLogHandler]:
    """Record log lines from here on, for the run that `attach` names; nested captures each get their own."""
    handler = RunLogHandler()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    _active.append(handler)
    try:
        yield handler
    finally:
        _active.remove(handler)
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


def log_path(root: str | Path, run_id: str) -> Optional[str]:
    """The log file of a run, when one was written (for summaries and printed paths)."""
    path = Layout.at(root).logs / f"{run_id}.log"
    return str(path) if path.is_file() else None


def attach(root: str | Path, run_id: str) -> Optional[Path]:
    """Write the innermost capture to `<root>/logs/<run_id>.log` (appending), unless a run already named its
    file; the path written to, or None when nothing captures."""
    if not _active:
        return None
    path = Layout.at(root).logs / f"{check_run_name(run_id)}.log"
    _active[-1].open(path)
    return _active[-1].path

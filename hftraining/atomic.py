"""Atomic file writes (temp file in the same folder, fsync, rename) so a crash never leaves half a file.

A failed write (disk full, read-only file system, permission) leaves the old file untouched, removes
the temp file and raises OSError naming the target path, which `hftrain` reports as one line.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

# mkstemp creates 0600 files; a new output gets the mode open() would give it (0666 minus the umask,
# read once at import, before any thread could be creating files).
_UMASK = os.umask(0o022)
os.umask(_UMASK)
DEFAULT_MODE = 0o666 & ~_UMASK


def _write_all(path: Path, data: bytes) -> None:
    """Write `data` to a fresh file (the one place bytes reach the disk; tests simulate a full disk here)."""
    with open(path, "wb") as handle:
        handle.write(data)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, fsync it, then rename it over `path`; the old file survives any failure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _naming(exc, path) from exc
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        try:                                   # an existing file keeps its mode; a new one gets DEFAULT_MODE
            os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else DEFAULT_MODE)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _naming(exc, path) from exc
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def _naming(exc: OSError, path: Path) -> OSError:
    """The same error (same errno and type) with the target path, which a failed write() omits."""
    if exc.errno is None or exc.filename == str(path):
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))  # OSError picks the subclass


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: _write_all(tmp, data))


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

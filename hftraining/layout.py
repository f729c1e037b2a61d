"""The output layout under one root (DESIGN.md), run ids, and the rule that names never escape it."""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hftraining.errors import UserError

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9.^=-]{1,15}$")
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def normalize_symbol(symbol: str) -> str:
    """Upper-case a ticker and refuse anything that could act as a path (`..`, `/`, empty)."""
    cleaned = str(symbol).strip().upper()
    if not SYMBOL_PATTERN.fullmatch(cleaned) or set(cleaned) <= {"."}:
        raise UserError(
            f"symbol {symbol!r} is not a ticker: use 1-15 letters, digits or . ^ = - (e.g. AAPL, BRK-B, ^GSPC)")
    return cleaned


def parse_symbols(values: list[str] | str | None) -> list[str]:
    """Accept `AAPL MSFT`, `AAPL,MSFT` or a mix; normalise, keep order, drop repeats."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        for part in re.split(r"[,\s]+", value):
            if part:
                symbol = normalize_symbol(part)
                if symbol not in out:
                    out.append(symbol)
    return out


def short_symbols(symbols: list[str], shown: int = 4) -> str:
    """`AAA,BBB` or, for a universe, `AAA,BBB,CCC,DDD +96`: symbols in a progress bar, a log line or a table."""
    more = f" +{len(symbols) - shown}" if len(symbols) > shown else ""
    return ",".join(symbols[:shown]) + more


def check_run_name(name: str) -> str:
    if not RUN_NAME_PATTERN.fullmatch(name) or ".." in name:
        raise UserError(f"run name {name!r} is not allowed: use letters, digits, '_', '.', '-' (no '..' or '/')")
    return name


def new_run_id(prefix: str = "") -> str:
    """A timestamp plus random suffix: two runs started in the same second never collide."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{prefix}{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Layout:
    """Every output path of a run; built from the root so that nothing is written outside it."""

    root: Path

    @classmethod
    def at(cls, root: str | Path) -> "Layout":
        return cls(Path(root).expanduser().resolve())

    def _inside(self, path: Path) -> Path:
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise UserError(f"path {path} would be outside the output root {self.root}")
        return resolved

    def base_model(self, run: str) -> Path:
        return self._inside(self.root / "models" / "base" / check_run_name(run))

    def finetuned_model(self, symbol: str, run: str) -> Path:
        return self._inside(self.root / "models" / "finetuned" / normalize_symbol(symbol) / check_run_name(run))

    def portfolio_model(self, symbols: list[str], run: str) -> Path:
        group = "_".join(normalize_symbol(s) for s in symbols)
        return self._inside(self.root / "models" / "finetuned" / "portfolio_pairs" / group / check_run_name(run))

    def tensorboard(self, kind: str, run: str, symbols: Optional[list[str]] = None) -> Path:
        """kind: base | finetuned (one symbol) | portfolio (a group)."""
        if kind == "base":
            return self._inside(self.root / "tensorboard" / "base" / check_run_name(run))
        group = "_".join(normalize_symbol(s) for s in symbols or [])
        return self._inside(self.root / "tensorboard" / kind / group / check_run_name(run))

    def report(self, run: str) -> Path:
        return self._inside(self.root / "reports" / check_run_name(run))

    @property
    def raw_data(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def processed_data(self) -> Path:
        return self.root / "data" / "processed"

    @property
    def forecast_cache(self) -> Path:
        return self.processed_data / "forecasts"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def ensure_writable(self) -> None:
        """Fail early, with one line, when the output root cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--out {self.root}: cannot create the output folder ({exc.strerror})") from None
        if not os.access(self.root, os.W_OK):
            raise UserError(f"--out {self.root}: the output folder is not writable; choose another with --out")


def claim_run_dir(path: Path) -> Path:
    """Create a run directory that must not exist yet: concurrent runs never share one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        raise UserError(f"run directory {path} already exists: pick another --set paths.run_name") from None
    return path

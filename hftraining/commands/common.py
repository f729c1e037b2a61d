"""What every command shares: the config built from the common options, stderr text, the --json line.

`ConfigOptions` carries the options most commands take (`--config`, `--set`, `--out`, `--source`,
`--data-dir`, `--start`, `--end`, `--steps`, `--device`, `--seed`, `--forecast-backend`); `--steps`
fits the schedule by the one rule of `Config.with_steps`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hftraining.config import Config
from hftraining.errors import UserError


def build_config(config: Optional[Path], set_: Optional[list[str]], out: Optional[Path], source: Optional[str],
                 data_dir: Optional[Path], start: Optional[str], end: Optional[str], steps: Optional[int],
                 device: Optional[str], seed: Optional[int], forecast_backend: Optional[str] = None,
                 symbols: Optional[list[str]] = None, extra: Optional[dict] = None) -> Config:
    """The config file, then `--set` overrides, then the flags; `--steps` refits the schedule (Config.with_steps)."""
    from hftraining.config import load_config

    if source is None and data_dir is not None:
        source = "csv"
    updates = {
        "paths.root": str(out) if out else None, "data.source": source,
        "data.data_dir": str(data_dir) if data_dir else None, "data.start": start, "data.end": end,
        "training.device": device, "training.seed": seed,
        "data.forecast_backend": forecast_backend, "data.symbols": symbols, **(extra or {}),
    }
    cfg = load_config(config, set_, updates)
    return cfg.with_steps(steps) if steps is not None else cfg


@dataclass(frozen=True)
class ConfigOptions:
    """The common options of the training and evaluation commands, as parsed."""

    config: Optional[Path] = None
    set_: Optional[list[str]] = None
    out: Optional[Path] = None
    source: Optional[str] = None
    data_dir: Optional[Path] = None
    start: Optional[str] = None
    end: Optional[str] = None
    steps: Optional[int] = None
    device: Optional[str] = None
    seed: Optional[int] = None
    forecast_backend: Optional[str] = None

    def build(self, symbols: Optional[list[str]] = None, extra: Optional[dict] = None,
              steps: Optional[int] = None, use_steps: bool = True) -> Config:
        """The resolved config; `use_steps=False` leaves --steps to the caller (it means something else there)."""
        return build_config(self.config, self.set_, self.out, self.source, self.data_dir, self.start, self.end,
                            steps if steps is not None else self.steps if use_steps else None, self.device,
                            self.seed, self.forecast_backend, symbols=symbols, extra=extra)


def resumed_config(resume: Path, overrides: Optional[list[str]]):
    """The config a run folder was started with (+ --set), its output root the run's own, wherever we are."""
    from hftraining.config import load_config

    if not (resume / "config.yaml").is_file():
        raise UserError(f"--resume {resume}: not a run folder (no config.yaml)")
    cfg = load_config(resume / "config.yaml", overrides)
    parts = resume.resolve().parts
    if "models" in parts:
        cfg.paths.root = str(Path(*parts[: len(parts) - 1 - parts[::-1].index("models")]))
    return cfg


def emit_json(summary: dict) -> None:
    """The `--json` summary: one line, the last of stdout."""
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    sys.stdout.flush()


def say(text: str) -> None:
    """A line (or block) for the user on stderr; stdout is kept for --json."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def console():
    from rich.console import Console

    return Console(stderr=True)


def plain(console, text: str, table: bool = False) -> None:
    """Print without rich markup or highlighting; a table (`table=True`) is never wrapped."""
    if table:
        console.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(text, markup=False, highlight=False)


def symbols_of(values: Optional[list[str]]) -> list[str]:
    from hftraining.layout import parse_symbols

    return parse_symbols(values or [])


def universe(stocks: Optional[list[str]], stocks_file: Optional[Path], command: str) -> list[str]:
    """--stocks and --stocks-file together; neither is a one-line error."""
    from hftraining.data.universe import universe_symbols

    symbols = universe_symbols(stocks, stocks_file)
    if not symbols:
        raise UserError(f"hftrain {command}: no stocks given; use --stocks AAPL MSFT ... or --stocks-file FILE")
    return symbols


def significance_line(summary: dict) -> str:
    """One terminal line: PSR, DSR, the bootstrap interval and the break-even cost."""
    def num(value, pattern):
        return "-" if value is None else format(value, pattern)

    sig, costs = summary.get("significance") or {}, summary.get("cost_sensitivity") or {}
    boot, dsr = sig.get("bootstrap") or {}, sig.get("deflated") or {}
    return (f"significance: PSR(SR>0) {num(sig.get('psr'), '.3f')}, DSR {num(dsr.get('dsr'), '.3f')} "
            f"(N={dsr.get('n_trials', '-')}), net Sharpe {num(sig.get('sharpe_ratio'), '.2f')} "
            f"95% CI [{num(boot.get('low'), '.2f')}, {num(boot.get('high'), '.2f')}], break-even cost "
            f"{num(costs.get('break_even_bps'), '.1f')} bps ({costs.get('break_even_how', '-')})")

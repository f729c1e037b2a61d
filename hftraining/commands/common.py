"""What every command shares: the config built from the common options, where results are printed, --json.

Streams: results (tables, summaries, the run, report and TensorBoard paths) go to stdout, so
`hftrain single ... > out.txt` keeps them; logs, warnings and progress bars go to stderr. With
`--json`, stdout holds exactly one line, the JSON summary, and the human-readable results move to
stderr (a terminal still shows them; `... --json > out.json` is valid JSON). Results are never
wrapped: a path stays whole on one line, on a terminal and in a file.

`ConfigOptions` carries the options most commands take (`--config`, `--set`, `--out`, `--source`,
`--data-dir`, `--start`, `--end`, `--steps`, `--device`, `--seed`, `--forecast-backend`); `--steps`
fits the schedule by the one rule of `hftraining.config.schedule_for`, as `--set training.max_steps` does.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hftraining.config import Config
from hftraining.errors import UserError

# The flag behind each config key a command line sets, so a bad value is reported as `--steps 0: ...`.
FLAGS = {"paths.root": "--out", "data.source": "--source", "data.data_dir": "--data-dir", "data.start": "--start",
         "data.end": "--end", "training.device": "--device", "training.seed": "--seed",
         "data.forecast_backend": "--forecast-backend", "training.max_steps": "--steps",
         "portfolio.max_steps": "--steps", "training.batch_size": "--batch-size", "data.toto_model_id": "--model",
         "data.chronos_model_id": "--model", "data.toto_device": "--device", "data.chronos_device": "--device"}


def check_dates(start: Optional[str], end: Optional[str]) -> None:
    """--start/--end are real dates in order; a reversed pair is probably swapped."""
    from datetime import date

    for flag, value in (("--start", start), ("--end", end)):
        if value is not None:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise UserError(f"{flag} {value}: not a date; expected YYYY-MM-DD, e.g. 2015-01-02") from None
    if start is not None and end is not None and start > end:
        raise UserError(f"--start {start} is after --end {end}; swap them: --start {end} --end {start}")


def steps_from_set(set_: Optional[list[str]], key: str = "training.max_steps") -> Optional[int]:
    """The value of a `--set training.max_steps=N` item (or another `key`), if any (the last one wins)."""
    from hftraining.config import parse_override

    found = None
    for item in set_ or []:
        name, value = parse_override(item)
        if name == key:
            found = value
    return found


def build_config(config: Optional[Path], set_: Optional[list[str]], out: Optional[Path], source: Optional[str],
                 data_dir: Optional[Path], start: Optional[str], end: Optional[str], steps: Optional[int],
                 device: Optional[str], seed: Optional[int], forecast_backend: Optional[str] = None,
                 symbols: Optional[list[str]] = None, extra: Optional[dict] = None) -> Config:
    """The config file, then `--set` overrides, then the flags. `--steps N` is `--set training.max_steps=N`:
    both fit the schedule by the one rule (hftraining.config.schedule_for)."""
    from hftraining.config import load_config

    check_dates(start, end)
    if data_dir is not None and Path(data_dir).is_file():
        raise UserError(f"--data-dir {data_dir}: is a file; pass the folder that holds it: --data-dir "
                        f"{Path(data_dir).parent}")
    set_steps = steps_from_set(set_)
    if steps is not None and set_steps is not None and steps != set_steps:
        raise UserError(f"--steps {steps} and --set training.max_steps={set_steps} disagree; give one of them")
    if source is None and data_dir is not None:
        source = "csv"
    updates = {
        "paths.root": str(out) if out else None, "data.source": source,
        "data.data_dir": str(data_dir) if data_dir else None, "data.start": start, "data.end": end,
        "training.device": device, "training.seed": seed, "training.max_steps": steps,
        "data.forecast_backend": forecast_backend, "data.symbols": symbols, **(extra or {}),
    }
    return load_config(config, set_, updates, FLAGS)


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


def resumed_config(resume: Path, overrides: Optional[list[str]], device: Optional[str] = None):
    """The config a run folder was started with (+ --set, --device), its output root the run's own, wherever
    we are."""
    from hftraining.config import load_config

    if not (resume / "config.yaml").is_file():
        raise UserError(f"--resume {resume}: not a run folder (no config.yaml)")
    cfg = load_config(resume / "config.yaml", overrides, {"training.device": device}, FLAGS)
    parts = resume.resolve().parts
    if "models" in parts:
        cfg.paths.root = str(Path(*parts[: len(parts) - 1 - parts[::-1].index("models")]))
    return cfg


# Flags a resumed run cannot honour: it continues with its own config, data and output root.
RESUME_IGNORES = {"config": "--config", "out": "--out", "source": "--source", "data_dir": "--data-dir",
                  "start": "--start", "end": "--end", "seed": "--seed", "forecast_backend": "--forecast-backend"}


def resume_config(resume: Path, options: "ConfigOptions", stock: Optional[str] = None,
                  steps_key: str = "training.max_steps"):
    """The config to continue `resume` with, or None when that run already finished (`finished` says so).

    A resume never quietly trains something else: a flag it would ignore, a --stock other than the run's or a
    step count (`steps_key`, which --steps sets) other than the run's is refused in one line.
    """
    from hftraining import checkpoint as ckpt
    from hftraining.config import parse_override
    from hftraining.layout import normalize_symbol

    given = [flag for name, flag in RESUME_IGNORES.items() if getattr(options, name) is not None]
    if given:
        raise UserError(f"--resume {resume} continues the run with its own config, data and output folder; drop "
                        f"{', '.join(given)} (change a setting with --set KEY=VALUE, or start a new run)")
    cfg = resumed_config(resume, None)
    symbols = list(cfg.data.symbols)
    if stock is not None and [normalize_symbol(stock)] != symbols[:1]:
        raise UserError(f"--stock {stock} conflicts with --resume {resume}: that run trains {', '.join(symbols)}; "
                        "drop --stock or start a new run")
    section, key = steps_key.split(".")
    planned = getattr(getattr(cfg, section), key)
    asked = options.steps if options.steps is not None else steps_from_set(options.set_, steps_key)
    if asked is not None and asked != planned:
        given = f"--steps {asked}" if options.steps is not None else f"--set {steps_key}={asked}"
        raise UserError(f"{given} conflicts with --resume {resume}: that run was started for {planned} "
                        "steps and keeps its schedule; drop it, or start a new run to train longer")
    overrides = [item for item in options.set_ or [] if parse_override(item)[0] != steps_key]   # equal: a no-op
    meta = ckpt.read_json(Path(resume) / ckpt.METADATA)
    if meta.get("status") == "completed":
        return None
    return resumed_config(resume, overrides, options.device)


def finished(out: "Output", resume: Path, runs_list: bool = False) -> None:
    """A --resume that found its run finished: say so (a result, on stdout) and, with --json, what the run
    recorded, nothing recomputed (`runs_list`: inside {"runs": [...]}, as `hftrain portfolio` prints)."""
    from hftraining import checkpoint as ckpt

    meta = ckpt.read_json(Path(resume) / ckpt.METADATA)
    out.line(f"{resume}: this run already finished ({meta.get('steps_done')} steps, best step "
             f"{meta.get('best_step')}); nothing to resume, nothing trained or registered again. Report: "
             f"{meta.get('report_dir') or 'see the run folder'}")
    keys = ("run_id", "kind", "symbols", "status", "steps_done", "best_step", "report_dir", "validation", "test")
    summary = {"already_finished": True, "run_dir": str(Path(resume).resolve()), **{k: meta.get(k) for k in keys}}
    out.json_summary({"runs": [summary]} if runs_list else summary)


def emit_json(summary: dict) -> None:
    """The `--json` summary: one line, the last of stdout."""
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    sys.stdout.flush()


class Output:
    """Where a command prints its results: stdout, or stderr when `--json` keeps stdout for the JSON line."""

    def __init__(self, json_: bool = False):
        from rich.console import Console

        self.json = json_
        # soft_wrap: rich never breaks a line (paths stay whole); highlight off: no guessed colours
        self.console = Console(file=sys.stderr if json_ else sys.stdout, soft_wrap=True, highlight=False,
                               emoji=False)

    def title(self, text: str, style: str = "bold") -> None:
        """A heading, styled on a terminal and plain in a file."""
        from rich.text import Text

        self.console.print("")
        self.console.print(Text(text, style=style))

    def line(self, text: str = "", style: Optional[str] = None) -> None:
        """Text as written: no markup, no highlighting, no wrapping."""
        self.console.print(text, markup=False, style=style)

    def paths(self, **paths) -> None:
        """`name: path` lines (run, report, tensorboard, ...), each path whole on its line."""
        for name, path in paths.items():
            if path is not None:
                self.line(f"{name}: {path}")

    def json_summary(self, summary: dict) -> None:
        """With `--json`: the summary as the last line of stdout (nothing otherwise)."""
        if self.json:
            emit_json(summary)

    def verdict(self, rows: dict[str, dict]) -> Optional[str]:
        """The one-line verdict against the best baseline (hftraining.verdict, as report.html says it)."""
        from hftraining.verdict import against_best_baseline

        text = against_best_baseline(rows)
        if text is not None:
            self.line(text)
        return text


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


def prior_line(prior: Optional[dict]) -> Optional[str]:
    """The printed result of the always-long prior check when a run holds the prior (hftraining.prior); else None."""
    if not prior or not prior.get("holds_prior"):
        return None
    return (f"prior: the trained model's validation net Sharpe {prior['validation_sharpe_model']:+.2f} did not beat "
            f"the always-long prior's {prior['validation_sharpe_prior']:+.2f}, so this run holds the prior (raw +1 "
            "in risk units: the vol_long row; training.prior_candidate)")


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

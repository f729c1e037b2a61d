"""`hftrain paper`: trade a trained run on bars that arrive one at a time, on paper, resumable.

A `LiveTrader` keeps every bar it has received and, for each new bar, recomputes the features on that
whole history with the very functions training used (`symbol_frame` + `assemble_panel`: causal, so
this is exact), scales them with the run's scaler and asks the run's weights for a position. There is
no second feature path to drift from training (defect 12), and on a replayed history the positions
equal the backtest's. Equity is the ProfitTracker's on the bars traded so far (same costs and stops).

State lives in a folder: `state.json` (written atomically after each bar: bars seen, last date,
target positions, equity), `bars.jsonl` (the history, one bar per line, exact floats) and
`decisions.csv` (one row per traded bar). Both logs are appended before the state is written, so after
a crash the state says how many lines are real and the extra ones are dropped: a restart neither
repeats nor skips a bar. Feeds: a CSV replayed at `--speed` bars per second, or Yahoo polled through
the data cache. No broker is connected: nothing here sends orders.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pandas as pd
import torch

from hftraining import atomic
from hftraining import checkpoint as ckpt
from hftraining.data.bars import COLUMNS
from hftraining.data.features import adjusted_ohlc
from hftraining.data.panel import assemble_panel, symbol_frame
from hftraining.errors import UserError
from hftraining.evaluation import predict_positions
from hftraining.layout import Layout, normalize_symbol
from hftraining.replay import output_root, pin_forecast_backend
from hftraining.sizing import traded_positions
from hftraining.tracker import ProfitTracker

log = logging.getLogger("hftraining")

STATE = "state.json"
BARS = "bars.jsonl"
DECISIONS = "decisions.csv"
DECISION_COLUMNS = ["date", "close", "position", "equity", "note"]
STATE_VERSION = 1


# --- feeds: where new bars come from -------------------------------------------------------------

class CsvReplay:
    """Replays a CSV of daily bars (checked like any CSV source) from a given date on."""

    def __init__(self, symbol: str, path: str | Path):
        from hftraining.data.sources import read_csv_bars

        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"--feed csv:{path}: file not found")
        self.label = f"csv:{path}"
        self.bars = read_csv_bars(symbol, path)

    def batches(self, since: Optional[pd.Timestamp]) -> Iterator[pd.DataFrame]:
        """Bars dated >= since (the trader drops the one it already has), in one batch."""
        yield self.bars if since is None else self.bars[self.bars.index >= since]


class YahooPoll:
    """Polls Yahoo through the data cache (hftraining.data.yahoo), forever; yields bars it has not sent.

    Each poll asks load_yahoo for the history with refresh on, so only newer bars are downloaded and
    today's forming bar is never used. Stop it with Ctrl-C: the state on disk is consistent after every bar.
    """

    def __init__(self, symbol: str, data_cfg, raw_cache: Path, poll_seconds: float = 900.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.symbol, self.raw_cache = symbol, Path(raw_cache)
        self.data = data_cfg.model_copy(update={"source": "yahoo", "refresh": True, "start": None, "end": None})
        self.poll_seconds, self.sleep = poll_seconds, sleep
        self.label = "yahoo"

    def batches(self, since: Optional[pd.Timestamp]) -> Iterator[pd.DataFrame]:
        from hftraining.data.yahoo import load_yahoo

        while True:
            bars = load_yahoo(self.symbol, self.data, self.raw_cache)
            fresh = bars if since is None else bars[bars.index >= since]
            if len(fresh) and (since is None or fresh.index[-1] > since):
                yield fresh
                since = fresh.index[-1]
            self.sleep(self.poll_seconds)


def open_feed(spec: str, symbol: str, data_cfg, raw_cache: Path, **yahoo_options):
    """`csv:PATH` or `yahoo` -> a feed object with `.batches(since)` and `.label`."""
    if spec.startswith("csv:") and len(spec) > 4:
        return CsvReplay(symbol, spec[4:])
    if spec == "yahoo":
        return YahooPoll(symbol, data_cfg, raw_cache, **yahoo_options)
    raise UserError(f"--feed {spec!r}: expected csv:PATH (a CSV of daily bars to replay) or yahoo")


# --- the trader ----------------------------------------------------------------------------------

def _append_lines(path: Path, lines: list[str]) -> None:
    """Append and fsync: the state written afterwards may count these lines."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def _read_lines(path: Path, expected: int, what: str) -> list[str]:
    """The first `expected` lines (extra ones come from a crash before the state was written)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    if len(lines) < expected:
        raise UserError(f"{path}: has {len(lines)} {what}, the state counts {expected}; the state folder is "
                        "damaged: delete it to start over")
    if len(lines) > expected:
        log.warning("%s: dropping %d %s written after the last saved state (interrupted run)",
                    path, len(lines) - expected, what)
        atomic.write_text(path, "".join(line + "\n" for line in lines[:expected]))
    return lines[:expected]


def _bar_line(date: pd.Timestamp, row: pd.Series) -> str:
    return json.dumps({"date": date.isoformat(), **{c: float(row[c]) for c in COLUMNS}})


@dataclass
class Decision:
    date: str
    close: float
    position: float
    equity: float
    note: str


class LiveTrader:
    """Receives bars one at a time and decides a position per bar exactly as the backtest would."""

    echo = True                                    # one line per decision on stderr

    def __init__(self, run_dir: str | Path, state_dir: str | Path, symbol: Optional[str] = None,
                 start: Optional[str] = None, root: Optional[str | Path] = None, device: str = "cpu"):
        self.run = ckpt.open_run(run_dir)
        self.config = pin_forecast_backend(self.run.config, self.run.metadata)   # the features it learned from
        self.symbol = normalize_symbol(symbol or (self.run.metadata.get("symbols") or [""])[0])
        self.model = self.run.model(device)
        self.layout = Layout.at(root or output_root(self.run.path, None, self.config))
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if start is not None:
            pd.Timestamp(start)   # a bad date fails here, with pandas' message
        self.state = self._load_state(start)
        self.history = self._load_history()

    # -- state on disk
    def _load_state(self, start: Optional[str]) -> dict:
        identity = {"run_dir": str(self.run.path.resolve()), "symbol": self.symbol}
        path = self.dir / STATE
        if not path.is_file():
            for name in (BARS, DECISIONS):
                (self.dir / name).unlink(missing_ok=True)     # leftovers of a run that never saved a state
            atomic.write_text(self.dir / DECISIONS, ",".join(DECISION_COLUMNS) + "\n")
            state = {"version": STATE_VERSION, **identity, "run_id": self.run.metadata.get("run_id"),
                     "start": start, "bars_seen": 0, "last_date": None, "positions": [],
                     "trading_start": None, "equity": self.config.tracker.initial_capital, "position": 0.0}
            atomic.write_json(path, state)
            return state
        state = ckpt.read_json(path)
        for key, value in identity.items():
            if state.get(key) != value:
                raise UserError(f"--state {self.dir}: belongs to {key} {state.get(key)}, not {value}; "
                                "use another --state folder")
        if start is not None and start != state.get("start"):
            raise UserError(f"--start {start}: this state folder started at {state.get('start')}; "
                            "drop --start to resume it, or use another --state folder")
        return state

    def _load_history(self) -> pd.DataFrame:
        lines = _read_lines(self.dir / BARS, self.state["bars_seen"], "bars")
        _read_lines(self.dir / DECISIONS, len(self.state["positions"]) + 1, "decision rows")
        rows = [json.loads(line) for line in lines]
        index = pd.DatetimeIndex([pd.Timestamp(r.pop("date")) for r in rows], name="date")
        return pd.DataFrame(rows, index=index, columns=COLUMNS, dtype="float64")

    def _save(self) -> None:
        self.state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic.write_json(self.dir / STATE, self.state)

    @property
    def last_date(self) -> Optional[pd.Timestamp]:
        return pd.Timestamp(self.state["last_date"]) if self.state["last_date"] else None

    # -- receiving bars
    def new_rows(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Bars of a feed batch the trader has not seen, cut to the run's data.start, on the stored basis.

        A feed may re-adjust its history (Yahoo after a dividend): the overlapping bar tells by how much,
        and new bars are rescaled onto the stored basis so that no fake return is spliced in.
        """
        batch = batch[list(COLUMNS)].astype("float64")
        if self.config.data.start is not None:
            batch = batch[batch.index >= pd.Timestamp(self.config.data.start)]
        last = self.last_date
        if last is None:
            return batch
        fresh = batch[batch.index > last].copy()
        if last in batch.index and len(fresh):
            factor = self.history["adj_close"].iloc[-1] / batch.at[last, "adj_close"]
            if abs(factor - 1.0) > 1e-9:
                log.warning("%s: the feed's adjusted prices changed since %s (a dividend or split); "
                            "rescaling new bars by %.6f onto the stored basis", self.symbol, last.date(), factor)
                fresh["adj_close"] *= factor
        return fresh

    def receive(self, batch: pd.DataFrame, limit: Optional[int] = None,
                after_bar: Optional[Callable[[], None]] = None) -> int:
        """Take the new bars of a batch; bars before --start are history only. Returns bars traded."""
        rows = self.new_rows(batch)
        start = self.state["start"]
        if start is not None and self.state["trading_start"] is None:
            warmup = rows[rows.index < pd.Timestamp(start)]
            if len(warmup):
                self._append_bars(warmup)
                self._save()
            rows = rows[rows.index >= pd.Timestamp(start)]
        traded = 0
        for i in range(len(rows)):
            if limit is not None and traded >= limit:
                break
            self.on_bar(rows.iloc[[i]])
            traded += 1
            if after_bar is not None:
                after_bar()
        return traded

    def _append_bars(self, rows: pd.DataFrame) -> None:
        _append_lines(self.dir / BARS, [_bar_line(d, r) for d, r in rows.iterrows()])
        self.history = pd.concat([self.history, rows]) if len(self.history) else rows.copy()
        self.history.index.name = "date"
        self.state["bars_seen"] = len(self.history)
        self.state["last_date"] = rows.index[-1].strftime("%Y-%m-%d")

    def on_bar(self, bar: pd.DataFrame) -> Decision:
        """One new bar (a one-row frame): store it, decide, mark equity, log, then save the state."""
        self._append_bars(bar)
        date, row = bar.index[0], bar.iloc[0]
        if self.state["trading_start"] is None:
            self.state["trading_start"] = date.strftime("%Y-%m-%d")
        position, note = self.decide()
        self.state["positions"].append(position)
        self.state["position"] = position
        self.state["equity"] = self.equity()
        decision = Decision(date.strftime("%Y-%m-%d"), float(row["close"]), position, self.state["equity"], note)
        row_text = f"{decision.date},{decision.close!r},{position!r},{decision.equity!r},{note}"
        _append_lines(self.dir / DECISIONS, [row_text])
        if self.echo:                              # `hftrain paper --quiet`: decisions.csv only
            sys.stderr.write(f"{decision.date} {self.symbol} close={decision.close:.4f} position={position:+.4f} "
                             f"equity={decision.equity:,.2f} ({note})\n")
        self._save()
        return decision

    # -- the decision, with training's feature code
    def decide(self) -> tuple[float, str]:
        """Position for the latest bar from the features of the whole history (exactly the backtest's)."""
        frame, _ = symbol_frame(self.symbol, self.history, self.config, self.layout.forecast_cache, progress=False)
        panel = assemble_panel({self.symbol: frame}, min_bars=0)
        context = self.model.context_length
        if panel.n_time == 0 or panel.dates[-1] != np.datetime64(self.history.index[-1], "ns"):
            return 0.0, "features warming up"
        if panel.n_time < context:
            return 0.0, f"warming up ({panel.n_time}/{context} bars)"
        window = replace(panel, features=panel.features[-context:])    # scaling is per row: same values
        x = torch.from_numpy(self.run.scaler.transform(window)).to(next(self.model.parameters()).device)
        raw = predict_positions(self.model, x, 0, range(context - 1, context))
        return float(traded_positions(raw, panel, 0, range(panel.n_time - 1, panel.n_time), self.config)[0]), "model"

    def equity(self) -> float:
        """Equity at the latest close: the ProfitTracker over the traded bars (the last target earns nothing yet)."""
        traded = self.history[self.history.index >= pd.Timestamp(self.state["trading_start"])]
        if len(traded) < 2:
            return float(self.config.tracker.initial_capital)
        px = adjusted_ohlc(traded)
        tracker = ProfitTracker.from_config(self.config.tracker, self.config.data.periods_per_year)
        result = tracker.run(np.asarray(self.state["positions"]), close=px["close"].to_numpy(),
                             high=px["high"].to_numpy(), low=px["low"].to_numpy(), open=px["open"].to_numpy())
        return float(result.equity[-1])

    def summary(self) -> dict:
        initial = self.config.tracker.initial_capital
        return {"run_id": self.state.get("run_id"), "symbol": self.symbol, "state_dir": str(self.dir),
                "bars_seen": self.state["bars_seen"], "bars_traded": len(self.state["positions"]),
                "trading_start": self.state["trading_start"], "last_date": self.state["last_date"],
                "position": self.state["position"], "equity": self.state["equity"],
                "total_return": self.state["equity"] / initial - 1.0,
                "decisions_csv": str(self.dir / DECISIONS)}


def run_paper(trader: LiveTrader, feed, speed: float = 0.0, max_bars: Optional[int] = None,
              sleep: Callable[[float], None] = time.sleep) -> dict:
    """Feed bars to the trader until the feed ends (a replay) or `max_bars` bars were traded."""
    if speed < 0 or not math.isfinite(speed):
        raise UserError(f"--speed {speed}: bars per second must be >= 0 (0 = as fast as possible)")
    pace = (lambda: sleep(1.0 / speed)) if speed > 0 else None
    done = 0
    for batch in feed.batches(trader.last_date):
        done += trader.receive(batch, None if max_bars is None else max_bars - done, pace)
        if max_bars is not None and done >= max_bars:
            break
    return {**trader.summary(), "traded_now": done, "feed": feed.label}


def write_paper_report(trader: LiveTrader) -> Optional[str]:
    """metrics.json, series.csv and report.html beside the state: the bars traded so far against buy-and-hold on
    the same bars and costs, as every other kind of run reports. None before two bars were traded."""
    from hftraining.evaluation import Simulation
    from hftraining.html_report import write_report_html
    from hftraining.report import _clean, add_row_metrics
    from hftraining.report_data import save_series

    state, config = trader.state, trader.config
    positions = np.asarray(state["positions"], dtype=np.float64)
    if state["trading_start"] is None or len(positions) < 3:
        return None
    traded = trader.history[trader.history.index >= pd.Timestamp(state["trading_start"])].iloc[:len(positions)]
    px, ppy = adjusted_ohlc(traded), config.data.periods_per_year
    tracker = ProfitTracker.from_config(config.tracker, ppy)
    sims = {}
    for name, held in (("model", positions), ("buy_and_hold", np.full(len(positions),
                                                                        min(1.0, config.tracker.max_position_size)))):
        result = tracker.run(held, close=px["close"].to_numpy(), high=px["high"].to_numpy(),
                             low=px["low"].to_numpy(), open=px["open"].to_numpy(), dates=traded.index.to_numpy())
        sims[name] = Simulation(trader.symbol, range(len(held)), held, result.to_frame(), result.metrics,
                                result.trades)
        add_row_metrics(sims[name], config.profit.sigma_target, ppy)
    frame = sims["model"].frame
    summary = {"kind": "paper", "run_id": state.get("run_id"), "symbol": trader.symbol,
               "model_dir": str(trader.run.path), "state_dir": str(trader.dir),
               "test_start": f"{pd.Timestamp(frame['date'].iloc[0]):%Y-%m-%d}",
               "test_end": f"{pd.Timestamp(frame['date'].iloc[-1]):%Y-%m-%d}", "test_bars": int(len(frame)),
               "model": _clean(sims["model"].metrics),
               "baselines": {"buy_and_hold": _clean(sims["buy_and_hold"].metrics)},
               "cost_per_turnover": config.cost_per_turnover}
    atomic.write_json(trader.dir / "metrics.json", summary)
    save_series(trader.dir, sims)
    return write_report_html(trader.dir, trader.run.path)


def default_state_dir(root: str | Path, run_id: str, symbol: str) -> Path:
    return Layout.at(root).root / "paper" / run_id / symbol


def open_paper(model: str | Path, stock: Optional[str], feed: str, state: Optional[Path] = None,
               start: Optional[str] = None, out: Optional[Path] = None) -> tuple[LiveTrader, object]:
    """The trader of a run (state folder default <out>/paper/<run>/<SYMBOL>) and its feed; a bad --feed fails first.

    On Yahoo without --start and without a saved state, trading starts today: the history is warm-up.
    """
    run = ckpt.open_run(model)
    symbol = normalize_symbol(stock or (run.metadata.get("symbols") or [""])[0])
    root = output_root(run.path, out, run.config)
    state_dir = Path(state or default_state_dir(root, str(run.metadata.get("run_id") or Path(model).name), symbol))
    source = open_feed(feed, symbol, run.config.data, Layout.at(root).raw_data)
    if feed == "yahoo" and start is None and not (state_dir / STATE).is_file():
        start = datetime.date.today().isoformat()      # live: the history is warm-up, trading starts with the next bar
        log.info("paper %s on yahoo: trading bars from %s on (earlier bars are history; --start to change)",
                 symbol, start)
    return LiveTrader(model, state_dir, symbol, start=start, root=root), source

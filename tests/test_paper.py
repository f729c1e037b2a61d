"""Paper trading: same positions as the backtest on a replay, exact resume after a stop or a crash."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_runs import make_run, statistical_positions, tiny_config, write_csv

from hftraining import checkpoint as ckpt
from hftraining.cli import main
from hftraining.data.panel import build_panel
from hftraining.errors import UserError
from hftraining.evaluation import model_positions, simulate
from hftraining.paper import BARS, DECISIONS, STATE, CsvReplay, LiveTrader, YahooPoll, open_feed, run_paper

REPLAY_BARS = 110    # features need 61 bars, the tiny model 16 more: ~34 model decisions
TRADE_FROM = 70      # bars before this one are loaded as history in one go (fast)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A run trained (well, saved) on a CSV history, and a replay CSV holding its first bars."""
    root = tmp_path_factory.mktemp("paper")
    full = write_csv(root / "train", bars=300)
    replay = root / "replay" / "DEMO.csv"
    replay.parent.mkdir()
    pd.read_csv(full).iloc[:REPLAY_BARS].to_csv(replay, index=False)
    run = make_run(tiny_config(root, data_dir=root / "train"), seed=1)
    start = pd.read_csv(replay)["date"].iloc[TRADE_FROM]
    reference = root / "reference"
    trader = LiveTrader(run, reference, start=start)
    summary = run_paper(trader, CsvReplay("DEMO", replay))
    return {"root": root, "run": run, "replay": replay, "start": start, "reference": reference,
            "summary": summary}


def backtest_positions(setup) -> tuple[pd.DatetimeIndex, np.ndarray, object]:
    """model_positions over the panel of the same replay CSV: what a backtest would trade."""
    cfg = tiny_config(setup["root"], data_dir=setup["replay"].parent)
    panel = build_panel(["DEMO"], cfg, setup["root"], progress=False, min_bars=20)
    run = ckpt.open_run(setup["run"])
    model = run.model()
    x = torch.from_numpy(run.scaler.transform(panel))
    decisions = range(model.context_length - 1, panel.n_time)
    positions = model_positions(model, x, panel, 0, decisions, run.config)
    return pd.DatetimeIndex(panel.dates[decisions.start:]), positions, (panel, cfg)


def decisions(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / DECISIONS, parse_dates=["date"], float_precision="round_trip").set_index("date")


def comparable_state(folder: Path) -> dict:
    state = json.loads((folder / STATE).read_text())
    state.pop("updated")
    return state


def test_replay_positions_equal_the_backtest(setup):
    dates, expected, (panel, cfg) = backtest_positions(setup)
    state = json.loads((setup["reference"] / STATE).read_text())
    log = decisions(setup["reference"])
    assert state["bars_seen"] == REPLAY_BARS and len(log) == REPLAY_BARS - TRADE_FROM
    assert log.index[0] == pd.Timestamp(setup["start"])
    paper = log["position"].reindex(dates)
    assert not paper.isna().any() and len(dates) > 20
    np.testing.assert_array_equal(paper.to_numpy(), expected)             # bit for bit
    assert (log.loc[log.index < dates[0], "position"] == 0).all()          # flat while warming up
    # equity: the tracker over the same decisions, marked at the last close
    first = int(np.searchsorted(panel.dates, np.datetime64(setup["start"], "ns")))
    traded = range(first, panel.n_time - 1)
    sim = simulate(panel, 0, traded, log["position"].to_numpy()[:-1], cfg.tracker)
    assert state["equity"] == pytest.approx(sim.frame["equity"].iloc[-1], rel=1e-12)


def test_restart_after_k_bars_and_after_a_crash_gives_the_same_state(setup, tmp_path):
    folder = tmp_path / "state"
    first = run_paper(LiveTrader(setup["run"], folder, start=setup["start"]), CsvReplay("DEMO", setup["replay"]),
                      max_bars=7)
    assert first["traded_now"] == 7 and first["bars_traded"] == 7
    # a crash after the logs were appended but before the state was saved: the extra lines must go
    with open(folder / BARS, "a") as handle:
        handle.write('{"date": "2099-01-01T00:00:00", "open": 1.0}\n')
    with open(folder / DECISIONS, "a") as handle:
        handle.write("2099-01-01,1,1,1,model\n")
    pauses = []
    second = run_paper(LiveTrader(setup["run"], folder), CsvReplay("DEMO", setup["replay"]), max_bars=11,
                       speed=50, sleep=pauses.append)
    assert second["traded_now"] == 11 and second["bars_traded"] == 18
    assert pauses == [1 / 50] * 11                                          # --speed: bars per second
    run_paper(LiveTrader(setup["run"], folder), CsvReplay("DEMO", setup["replay"]))
    assert comparable_state(folder) == comparable_state(setup["reference"])
    assert (folder / DECISIONS).read_text() == (setup["reference"] / DECISIONS).read_text()
    assert (folder / BARS).read_text() == (setup["reference"] / BARS).read_text()
    again = run_paper(LiveTrader(setup["run"], folder), CsvReplay("DEMO", setup["replay"]))
    assert again["traded_now"] == 0                                         # nothing repeated


def test_state_refuses_another_run_or_start(setup, tmp_path):
    other = make_run(tiny_config(tmp_path, data_dir=setup["root"] / "train"), seed=2)
    with pytest.raises(UserError, match="belongs to run_dir"):
        LiveTrader(other, setup["reference"])
    with pytest.raises(UserError, match="this state folder started at"):
        LiveTrader(setup["run"], setup["reference"], start="2020-01-01")
    with pytest.raises(UserError, match="expected csv:PATH"):
        open_feed("ftp://x", "DEMO", None, tmp_path)


def test_yahoo_polling_with_a_monkeypatched_download(setup, tmp_path, monkeypatch):
    """The polling loop goes through hftraining.data.yahoo (cache + top-up); only the download is faked."""
    from hftraining.data import yahoo

    full = CsvReplay("DEMO", setup["replay"]).bars
    clock = {"today": full.index[TRADE_FROM + 2].date() + timedelta(days=1)}   # first poll sees 3 tradable bars
    monkeypatch.setattr(yahoo, "_today", lambda: clock["today"])

    def fake_download(symbol, interval, start, end_exclusive):
        keep = full.index < pd.Timestamp(end_exclusive)
        if start is not None:
            keep &= full.index >= pd.Timestamp(start)
        return full[keep].copy()

    def fake_sleep(seconds):   # one more daily bar becomes available after each poll
        clock["today"] = full.index[full.index.searchsorted(pd.Timestamp(clock["today"]))].date() + timedelta(days=1)

    monkeypatch.setattr(yahoo, "download", fake_download)
    trader = LiveTrader(setup["run"], tmp_path / "state", start=setup["start"], root=tmp_path)
    run = ckpt.open_run(setup["run"])
    feed = YahooPoll("DEMO", run.config.data, tmp_path / "raw", poll_seconds=60, sleep=fake_sleep)
    summary = run_paper(trader, feed, max_bars=6)
    assert summary["bars_traded"] == 6 and summary["feed"] == "yahoo"
    got = decisions(tmp_path / "state")
    reference = decisions(setup["reference"]).iloc[:6]
    assert list(got.index) == list(reference.index)                          # no bar repeated or skipped
    np.testing.assert_allclose(got["position"], reference["position"], rtol=0, atol=1e-12)


def test_cli_paper_replay_prints_json(setup, tmp_path, capsys):
    late = pd.read_csv(setup["replay"])["date"].iloc[REPLAY_BARS - 8]      # trade only the last 8 bars
    code = main(["paper", "--model", str(setup["run"]), "--feed", f"csv:{setup['replay']}", "--state",
                 str(tmp_path / "s"), "--start", late, "--json"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["bars_traded"] == 8 and summary["bars_seen"] == REPLAY_BARS
    assert captured.err.count(" DEMO close=") == 8                          # one line per bar on stderr
    # like every run, a paper state folder holds metrics.json and report.html (the traded bars vs buy-and-hold)
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["kind"] == "paper" and metrics["test_bars"] == 7          # the last position earns nothing yet
    assert metrics["model"]["total_return"] == pytest.approx(summary["total_return"], abs=1e-12)
    assert summary["report_html"] == str(tmp_path / "s" / "report.html")
    assert "Paper trading" in (tmp_path / "s" / "report.html").read_text()
    # a later start changes what is traded, not what the model decides on those bars
    np.testing.assert_array_equal(decisions(tmp_path / "s")["position"], decisions(setup["reference"])["position"][-8:])
    assert main(["paper", "--model", str(setup["run"]), "--feed", "nope"]) == 2
    assert "--feed 'nope'" in capsys.readouterr().err


def test_paper_trades_on_the_forecaster_the_run_actually_used(toto_fell_back_then_appears):
    """A run trained on the statistical fallback keeps those features when a real Toto appears later."""
    root, run, _ = toto_fell_back_then_appears
    replay = root / "replay" / "DEMO.csv"
    replay.parent.mkdir()
    pd.read_csv(root / "train" / "DEMO.csv").iloc[:140].to_csv(replay, index=False)
    start = pd.read_csv(replay)["date"].iloc[100]
    run_paper(LiveTrader(run, root / "state", start=start), CsvReplay("DEMO", replay))
    log = pd.read_csv(root / "state" / DECISIONS, parse_dates=["date"]).set_index("date")
    dates, expected = statistical_positions(root, run, replay.parent)
    paper = log["position"].reindex(dates[dates >= pd.Timestamp(start)])
    assert len(paper) > 10 and not paper.isna().any()
    np.testing.assert_allclose(paper.to_numpy(), expected[dates >= pd.Timestamp(start)], rtol=0, atol=1e-6)

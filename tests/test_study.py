"""`hftrain study`: aggregation against a hand computation, the book and its trial count, end to end."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hftraining.cli import main
from hftraining.study import Outcome, overall, study_book, ticker_rows

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def outcome(symbol, seed, sharpe, bh, mom, oracle=None, val=0.5, returns=None):
    baselines = {"buy_and_hold": {"sharpe_ratio": bh, "total_return_at_target": 0.1},
                 "momentum": {"sharpe_ratio": mom, "total_return_at_target": 0.05}}
    if oracle is not None:
        baselines["oracle"] = {"sharpe_ratio": oracle, "total_return_at_target": 0.3}
    series = returns if returns is not None else pd.Series([0.0], index=pd.to_datetime(["2024-01-02"]))
    return Outcome(symbol, seed, f"{symbol}-{seed}", val, {"sharpe_ratio": sharpe, "volatility": 0.15,
                                                           "total_return_at_target": sharpe / 10},
                   baselines, series)


def test_rows_and_overall_match_a_hand_computation():
    outcomes = [outcome("A", 0, 1.0, 0.5, 0.2, oracle=2.0, val=0.4), outcome("A", 1, 2.0, 0.5, 0.2, oracle=2.0,
                                                                                 val=0.6),
                outcome("B", 0, -0.5, 0.1, -1.0, oracle=1.0), outcome("B", 1, 0.5, 0.1, -1.0, oracle=1.0),
                outcome("C", 0, 0.3, 0.9, 0.4, oracle=0.0), outcome("C", 1, 0.3, 0.9, 0.4, oracle=0.0)]
    rows = ticker_rows(outcomes)
    assert [r["symbol"] for r in rows] == ["A", "B", "C"]
    a, b, c = rows
    assert a["model_sharpe"] == pytest.approx(1.5) and a["model_sharpe_std"] == pytest.approx(np.std([1, 2], ddof=1))
    assert a["model_val_sharpe"] == pytest.approx(0.5)
    assert b["model_sharpe"] == pytest.approx(0.0) and c["model_sharpe_std"] == pytest.approx(0.0)
    assert a["edge_captured"] == pytest.approx(0.75) and b["edge_captured"] == pytest.approx(0.0)
    assert c["edge_captured"] is None                          # an oracle without edge shares nothing
    o = overall(rows)
    assert o["model_sharpe_median"] == pytest.approx(0.3)      # of 1.5, 0.0, 0.3
    assert o["model_sharpe_mean"] == pytest.approx(0.6)
    assert o["buy_and_hold_sharpe_median"] == pytest.approx(0.5)
    assert o["momentum_sharpe_mean"] == pytest.approx((0.2 - 1.0 + 0.4) / 3)
    assert (o["wins_vs_buy_and_hold"], o["n_vs_buy_and_hold"]) == (1, 3)     # only A: 1.5 > 0.5
    assert (o["wins_vs_momentum"], o["n_vs_momentum"]) == (2, 3)             # A and B
    assert (o["wins_vs_oracle"], o["n_vs_oracle"]) == (1, 3)                 # C: 0.3 > 0.0
    assert o["edge_captured_median"] == pytest.approx(0.375)


def test_book_averages_seeds_then_tickers_on_each_date():
    d = pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"])
    outcomes = [outcome("A", 0, 1, 0, 0, returns=pd.Series([0.01, 0.02, 0.03], index=d)),
                outcome("A", 1, 1, 0, 0, returns=pd.Series([0.03, 0.00, 0.01], index=d)),
                outcome("B", 0, 1, 0, 0, returns=pd.Series([-0.02, 0.04], index=d[1:]))]
    book = study_book(outcomes)
    expected = [0.02, (0.01 - 0.02) / 2, (0.02 + 0.04) / 2]    # A's seed mean, then the mean over tickers
    np.testing.assert_allclose(book.to_numpy(), expected)


def run_study(root: Path, *extra: str) -> dict:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["study", "--stocks", "SYNA", "SYNB", "--source", "synthetic", "--config", str(TINY),
                     "--set", "data.forecast_backend=none", "--set", "data.synthetic_bars=500", "--steps", "6",
                     "--out", str(root), "--json", "--quiet", *extra])
    assert code == 0, err.getvalue()
    return {"stdout": out.getvalue(), "summary": json.loads(out.getvalue().strip().splitlines()[-1])}


@pytest.mark.slow
def test_study_end_to_end_writes_json_html_and_counts_every_study(tmp_path, one_torch_thread):
    first = run_study(tmp_path, "--seeds", "0", "1")
    s = first["summary"]
    report = Path(s["report_dir"])
    assert (report / "study.json").is_file() and (report / "study.html").is_file()
    assert json.loads((report / "study.json").read_text())["overall"] == s["overall"]
    assert [r["symbol"] for r in s["rows"]] == ["SYNA", "SYNB"]
    assert all(r["seeds"] == [0, 1] and r["oracle_sharpe"] is not None for r in s["rows"])
    assert s["book"]["n_trials"] == 1
    assert "model wins:" in first["stdout"] and "edge captured" in first["stdout"]
    second = run_study(tmp_path, "--mode", "base", "--seeds", "0")
    assert second["summary"]["book"]["n_trials"] == 2          # the first study counts against the second
    trials = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert [t["kind"] for t in trials].count("study") == 2

"""`hftrain study`: aggregation against a hand computation, the book and its trial count, end to end."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from hftraining.cli import main
from hftraining.study import Outcome, overall, study_book, ticker_rows


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


def test_validation_columns_read_the_model_against_each_baseline_on_the_same_bars():
    outcomes = [outcome("A", 0, 1.0, 0.5, 0.2, val=0.4), outcome("A", 1, 1.0, 0.5, 0.2, val=0.8),
                outcome("B", 0, 0.2, 0.1, 0.1, val=0.1), outcome("C", 0, 0.3, 0.9, 0.4, val=None)]
    for o, vol_long_val in zip(outcomes, (0.5, 0.5, 0.3, 0.7), strict=True):
        o.val_baselines = {"vol_long": vol_long_val, "buy_and_hold": 0.2}
    rows = ticker_rows(outcomes)
    assert [r["vol_long_val_sharpe"] for r in rows] == pytest.approx([0.5, 0.3, 0.7])
    assert rows[0]["model_val_sharpe"] == pytest.approx(0.6)     # mean over seeds
    o = overall(rows)
    assert o["vol_long_val_sharpe_median"] == pytest.approx(0.5)
    assert o["buy_and_hold_val_sharpe_median"] == pytest.approx(0.2)
    assert o["model_val_sharpe_median"] == pytest.approx((0.6 + 0.1) / 2)    # C has no validation Sharpe
    assert (o["val_wins_vs_vol_long"], o["val_n_vs_vol_long"]) == (1, 2)     # A: 0.6 > 0.5; B: 0.1 < 0.3
    assert (o["val_wins_vs_buy_and_hold"], o["val_n_vs_buy_and_hold"]) == (1, 2)
    assert "val_wins_vs_momentum" not in o                                   # no validation Sharpe given


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
    assert len(out.getvalue().strip().splitlines()) == 1           # --json: stdout is the JSON line alone
    return {"table": err.getvalue(), "summary": json.loads(out.getvalue().strip().splitlines()[-1])}


@pytest.mark.slow
def test_study_end_to_end_writes_json_html_and_counts_every_study(tmp_path, one_torch_thread):
    first = run_study(tmp_path, "--seeds", "0", "1")
    s = first["summary"]
    report = Path(s["report_dir"])
    assert (report / "metrics.json").is_file() and (report / "report.html").is_file()
    assert json.loads((report / "metrics.json").read_text())["overall"] == s["overall"]
    (report / "report.html").unlink()                   # `hftrain report` redraws a study's own page
    assert main(["report", str(report)]) == 0 and "Equal-weight book" in (report / "report.html").read_text()
    assert [r["symbol"] for r in s["rows"]] == ["SYNA", "SYNB"]
    assert all(r["seeds"] == [0, 1] and r["oracle_sharpe"] is not None for r in s["rows"])
    assert s["book"]["n_trials"] == 1
    assert "model wins:" in first["table"] and "edge captured" in first["table"]
    assert "on validation" in first["table"] and "vol long val" in first["table"]
    from hftraining.backtest import backtest_model  # the baselines' validation Sharpe, rebuilt
    run_dir = next((tmp_path / "models" / "finetuned" / "SYNA").glob(f"{s['rows'][0]['runs'][0]}*"))
    val = json.loads((run_dir / "metadata.json").read_text())["splits"]["val"]
    rebuilt = backtest_model(run_dir, val["start"], val["end"], source="synthetic", html=False,
                             out=tmp_path / "rebuilt")
    assert s["rows"][0]["vol_long_val_sharpe"] == pytest.approx(rebuilt.baselines["vol_long"].metrics["sharpe_ratio"])
    second = run_study(tmp_path, "--mode", "base", "--seeds", "0")
    assert all(r["vol_long_val_sharpe"] is not None for r in second["summary"]["rows"])
    assert second["summary"]["book"]["n_trials"] == 2          # the first study counts against the second
    trials = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert [t["kind"] for t in trials].count("study") == 2


# --- portfolio mode: groups against 1/N, buy-and-hold 1/N and minimum variance ---------------------------

def group_outcome(group, seed, sharpe, equal, hold, minvar, val=0.5, momentum=0.35):
    baselines = {"equal_weight": {"sharpe_ratio": equal}, "buy_and_hold_equal": {"sharpe_ratio": hold},
                 "min_variance": {"sharpe_ratio": minvar}, "momentum": {"sharpe_ratio": momentum},
                 "hold_AAA": {"sharpe_ratio": 9.0}}
    return Outcome(group, seed, f"{group}-{seed}", val, {"sharpe_ratio": sharpe, "volatility": 0.1},
                   baselines, pd.Series([0.0], index=pd.to_datetime(["2024-01-02"])))


def test_group_rows_and_overall_match_a_hand_computation():
    from hftraining.study import PORTFOLIO_BASELINES

    outcomes = [group_outcome("A_B", 0, 1.0, 0.9, 0.8, 0.5, val=0.2), group_outcome("A_B", 1, 0.6, 0.9, 0.8, 0.5,
                                                                                     val=0.4),
                group_outcome("C_D_E", 0, 0.3, 0.4, 0.5, 0.1), group_outcome("C_D_E", 1, 0.5, 0.4, 0.5, 0.1),
                group_outcome("F_G", 0, -0.2, -0.1, 0.0, -0.3), group_outcome("F_G", 1, -0.2, -0.1, 0.0, -0.3)]
    rows = ticker_rows(outcomes, PORTFOLIO_BASELINES)
    assert [r["symbol"] for r in rows] == ["A_B", "C_D_E", "F_G"]
    ab, cde, fg = rows
    assert ab["model_sharpe"] == pytest.approx(0.8) and ab["model_sharpe_std"] == pytest.approx(np.std([1.0, 0.6],
                                                                                                         ddof=1))
    assert ab["model_val_sharpe"] == pytest.approx(0.3) and cde["model_sharpe"] == pytest.approx(0.4)
    assert ab["equal_weight_sharpe"] == 0.9 and cde["min_variance_sharpe"] == 0.1
    assert "hold_AAA_sharpe" not in ab and ab["edge_captured"] is None and "buy_and_hold_sharpe" not in ab
    o = overall(rows, PORTFOLIO_BASELINES)
    assert o["n_tickers"] == 3
    assert o["model_sharpe_median"] == pytest.approx(0.4)                 # of 0.8, 0.4, -0.2
    assert o["model_sharpe_mean"] == pytest.approx(1.0 / 3)
    assert o["equal_weight_sharpe_median"] == pytest.approx(0.4)          # of 0.9, 0.4, -0.1
    assert o["min_variance_sharpe_mean"] == pytest.approx(0.1)            # (0.5 + 0.1 - 0.3) / 3
    assert (o["wins_vs_equal_weight"], o["n_vs_equal_weight"]) == (0, 3)  # 0.8 < 0.9, 0.4 = 0.4, -0.2 < -0.1
    assert (o["wins_vs_buy_and_hold_equal"], o["n_vs_buy_and_hold_equal"]) == (0, 3)
    assert (o["wins_vs_min_variance"], o["n_vs_min_variance"]) == (3, 3)
    assert (o["wins_vs_momentum"], o["n_vs_momentum"]) == (2, 3)            # 0.8 and 0.4 beat 0.35
    assert o["momentum_sharpe_median"] == pytest.approx(0.35) and "wins_vs_oracle" not in o


def test_portfolio_groups_are_checked_in_one_line(tmp_path, capsys):
    common = ["study", "--source", "synthetic", "--out", str(tmp_path), "-q"]
    assert main(common + ["--mode", "portfolio"]) == 2
    assert "no groups given" in capsys.readouterr().err
    assert main(common + ["--mode", "portfolio", "--pairs", "AAA"]) == 2
    assert "at least two different symbols" in capsys.readouterr().err
    assert main(common + ["--pairs", "AAA,BBB"]) == 2
    assert "--pairs needs --mode portfolio" in capsys.readouterr().err
    assert main(common + ["--mode", "portfolio", "--pairs", "AAA,BBB", "--stocks", "CCC"]) == 2
    assert "not --stocks" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow
def test_portfolio_study_end_to_end_on_tiny_synthetic(tmp_path, one_torch_thread):
    """Two groups x two seeds: the rows repeat each run's own metrics.json, and the book's DSR counts every study."""
    from hftraining.trials import register_trial

    register_trial(tmp_path, "study-earlier", "study", ["SPY"], 0.3, 0.4, mode="single")   # an earlier study
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["study", "--mode", "portfolio", "--pairs", "syna,synb", "--pairs", "SYNC,SYND,SYNE",
                     "--source", "synthetic", "--config", str(TINY), "--set", "data.forecast_backend=none",
                     "--set", "data.synthetic_bars=500", "--set", "portfolio.batch_size=4",
                     "--set", "portfolio.episode_rebalances=3", "--steps", "4", "--seeds", "0", "1",
                     "--out", str(tmp_path), "--json", "--quiet"])
    assert code == 0, err.getvalue()
    s = json.loads(out.getvalue().strip().splitlines()[-1])
    assert s["mode"] == "portfolio" and s["groups"] == [["SYNA", "SYNB"], ["SYNC", "SYND", "SYNE"]]
    assert [r["symbol"] for r in s["rows"]] == ["SYNA_SYNB", "SYNC_SYND_SYNE"]
    for row in s["rows"]:
        runs = [json.loads((tmp_path / "reports" / run / "metrics.json").read_text()) for run in row["runs"]]
        assert row["seeds"] == [0, 1] and [r["symbols"] for r in runs] == [row["symbol"].split("_")] * 2
        assert row["model_sharpe"] == pytest.approx(np.mean([r["model"]["sharpe_ratio"] for r in runs]))
        for name in ("equal_weight", "buy_and_hold_equal", "min_variance", "momentum"):
            assert row[f"{name}_sharpe"] == pytest.approx(runs[0]["baselines"][name]["sharpe_ratio"])
    assert s["overall"]["n_vs_equal_weight"] == 2 and "equal_weight_sharpe_median" in s["overall"]
    assert s["book"]["n_trials"] == 2                                      # the earlier study counts
    table = err.getvalue()                                                 # --json: the table is on stderr
    assert "group" in table and "1/N" in table and "vs equal_weight" in table and "DSR" in table
    page = (Path(s["report_dir"]) / "report.html").read_text()
    assert "SYNC_SYND_SYNE" in page and "1/N" in page


def test_the_validation_column_is_that_of_what_a_run_trades():
    from hftraining.study import traded_validation_sharpe

    model = {"validation": {"sharpe_ratio": 0.3}}
    assert traded_validation_sharpe(model) == 0.3                                   # no prior check ran
    assert traded_validation_sharpe({**model, "prior": {"holds_prior": False, "validation_sharpe_model": 0.3,
                                                        "validation_sharpe_prior": 0.2}}) == 0.3
    assert traded_validation_sharpe({**model, "prior": {"holds_prior": True, "validation_sharpe_model": 0.3,
                                                        "validation_sharpe_prior": 0.5}}) == 0.5

"""`hftrain backtest` end to end through the CLI: causality, train/backtest parity, IN SAMPLE, costs, errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from hftraining import backtest_model
from hftraining.cli import main
from hftraining.data.synthetic import generate_bars

CUT = 850                                     # the truncated file ends at bar CUT (date D)


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


def write_csv(bars: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = bars.reset_index()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    frame.to_csv(folder / "DEMO.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Synthetic bars written as CSV (full, and truncated at D), and a tiny model trained on the full file."""
    tmp = tmp_path_factory.mktemp("bt")
    bars = generate_bars("DEMO", 900, 11, edge=1.0)
    full, cut = write_csv(bars, tmp / "full"), write_csv(bars.iloc[: CUT + 1], tmp / "cut")
    out = tmp / "runs"
    assert main(["single", "--stock", "DEMO", "--data-dir", str(full), "--config", TINY, "--out", str(out),
                 "--steps", "6", "--set", "data.forecast_backend=statistical", "-q"]) == 0
    run_dir = next((out / "models" / "finetuned" / "DEMO").iterdir())
    meta = json.loads((run_dir / "metadata.json").read_text())
    return {"bars": bars, "full": full, "cut": cut, "out": out, "run_dir": run_dir, "meta": meta,
            "report_dir": Path(meta["report_dir"]), "D": bars.index[CUT].strftime("%Y-%m-%d")}


def model_series(report_dir: Path) -> pd.DataFrame:
    series = pd.read_csv(report_dir / "series.csv")
    return series[series["strategy"] == "model"].set_index("date")


def test_positions_are_causal_through_the_cli(trained, capsys):
    start = trained["bars"].index[700].strftime("%Y-%m-%d")
    common = ["backtest", "--model", str(trained["run_dir"]), "--start", start, "--json"]
    long, _ = run_cli(common + ["--data-dir", str(trained["full"])], capsys)
    short, _ = run_cli(common + ["--data-dir", str(trained["cut"])], capsys)
    a, b = model_series(Path(long["report_dir"])), model_series(Path(short["report_dir"]))
    assert short["end"] < trained["D"] < long["end"]                 # the short file's last bar earns nothing
    assert b.index[0] == a.index[0] == start and len(b) == CUT - 700
    np.testing.assert_allclose(a.loc[b.index, "position"], b["position"], rtol=0, atol=1e-6)
    assert a["position"].std() > 0                                   # positions really vary with the data
    np.testing.assert_allclose(a.loc[b.index, "net_return"], b["net_return"], rtol=0, atol=1e-9)
    momentum = [pd.read_csv(Path(r["report_dir"]) / "series.csv").query("strategy == 'momentum'").set_index("date")
                for r in (long, short)]
    np.testing.assert_array_equal(momentum[0].loc[momentum[1].index, "position"], momentum[1]["position"])


def test_backtest_of_the_test_range_reproduces_training_report(trained, capsys):
    """Same feature code and saved scaler: no training/inference skew (prior defect 12)."""
    result, err = run_cli(["backtest", "--model", str(trained["run_dir"]), "--data-dir", str(trained["full"]),
                           "--json"], capsys)
    training_report = trained["report_dir"]
    test = pd.read_csv(training_report / "test_returns.csv").set_index("date")
    mine = model_series(Path(result["report_dir"]))
    assert list(mine.index) == list(test.index)                     # default range: the run's test start .. end
    np.testing.assert_allclose(mine["position"], test["position"], atol=1e-6)
    assert result["model"]["sharpe_ratio"] == pytest.approx(trained["meta"]["test"]["sharpe_ratio"], abs=1e-6)
    assert result["in_sample"] is False and "IN SAMPLE" not in err
    report = Path(result["report_html"]).read_text()
    assert "IN SAMPLE" not in report and "Backtest" in report


def test_in_sample_range_is_flagged(trained, capsys):
    meta = trained["meta"]
    result, err = run_cli(["backtest", "--model", str(trained["run_dir"]), "--data-dir", str(trained["full"]),
                           "--start", meta["splits"]["train"]["start"], "--end", meta["splits"]["val"]["end"],
                           "--cost-bps", "25", "--json"], capsys)
    assert result["in_sample"] is True and "IN SAMPLE" in err
    assert any(o.startswith("training") for o in result["overlap"]) and any(o.startswith("validation")
                                                                           for o in result["overlap"])
    report_dir = Path(result["report_dir"])
    saved = json.loads((report_dir / "backtest.json").read_text())
    assert saved["in_sample"] is True and saved["cost_per_turnover"] == pytest.approx(0.0025)
    assert json.loads((report_dir / "metrics.json").read_text())["cost_per_turnover"] == pytest.approx(0.0025)
    assert "IN SAMPLE" in (report_dir / "report.html").read_text()


def test_python_api_and_trial_registry(trained):
    trials = [json.loads(line) for line in (trained["out"] / "trials.jsonl").read_text().splitlines()]
    assert [t["run_id"] for t in trials] == [trained["meta"]["run_id"]] and trials[0]["symbols"] == ["DEMO"]
    result = backtest_model(trained["run_dir"], start_date="2000-01-01", data_dir=trained["full"], html=False)
    assert result.in_sample and result.html is None
    assert result.start == trained["meta"]["splits"]["train"]["start"]
    assert set(result.baselines) == {"buy_and_hold", "momentum", "vol_long"}
    assert result.summary["significance"]["deflated"]["n_trials"] == 1
    assert result.report_dir.parent == trained["out"] / "reports"


def test_refusals_are_one_line(trained, capsys, tmp_path):
    run = str(trained["run_dir"])
    cases = [(["--set", "data.forecast_backend=none"], "features differ"),
             (["--start", "2031-01-01"], "no decision bars"),
             (["--start", "2024-13-01"], "expected a date"),
             (["--stock", "NOPE"], "no CSV for NOPE")]
    for extra, message in cases:
        assert main(["backtest", "--model", run, "--data-dir", str(trained["full"]), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main(["backtest", "--model", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_portfolio_runs_dispatch(trained, tmp_path, monkeypatch):
    from hftraining import portfolio

    fake = tmp_path / "portfolio_run"
    shutil.copytree(trained["run_dir"], fake)
    meta = json.loads((fake / "metadata.json").read_text())
    (fake / "metadata.json").write_text(json.dumps({**meta, "kind": "portfolio"}))
    calls = []
    monkeypatch.setattr(portfolio, "backtest_portfolio", lambda *a, **k: calls.append((a, k)) or "done",
                        raising=False)
    assert backtest_model(fake, "2024-01-01", cost_bps=5) == "done"
    assert calls[0][0] == (fake,) and calls[0][1]["cost_bps"] == 5
    monkeypatch.delattr(portfolio, "backtest_portfolio")
    with pytest.raises(ImportError, match="backtest_portfolio"):     # a broken import is itself, not "not supported"
        backtest_model(fake)


def test_a_members_model_trains_calibrates_and_backtests_the_same(trained, capsys, tmp_path):
    """model.members > 1 goes through the same save/load path: the backtest reproduces the training report."""
    out = tmp_path / "runs"
    assert main(["single", "--stock", "DEMO", "--data-dir", str(trained["full"]), "--config", TINY, "--out",
                 str(out), "--steps", "6", "--set", "data.forecast_backend=statistical", "--set", "model.members=2",
                 "-q"]) == 0
    capsys.readouterr()
    run_dir = next((out / "models" / "finetuned" / "DEMO").iterdir())
    meta = json.loads((run_dir / "metadata.json").read_text())
    result, _ = run_cli(["backtest", "--model", str(run_dir), "--data-dir", str(trained["full"]), "--json"], capsys)
    assert result["model"]["sharpe_ratio"] == pytest.approx(meta["test"]["sharpe_ratio"], abs=1e-6)
    assert model_series(Path(result["report_dir"]))["position"].std() > 0

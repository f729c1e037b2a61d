"""`hftrain backtest --model <portfolio run>` through the CLI: parity with the run's test report, causality,
IN SAMPLE, costs, refusals, and the baselines' curves in series.csv."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY

from hftraining.cli import main
from hftraining.data.synthetic import generate_bars

CUT = 850                                     # the truncated files end at bar CUT (date D)
SYMBOLS = ("AAA", "BBB")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two synthetic assets as CSV (full, and truncated at D) and a tiny portfolio run trained on the full files."""
    tmp = tmp_path_factory.mktemp("pbt")
    for name, n in (("full", 900), ("cut", CUT + 1)):
        (tmp / name).mkdir()
        for i, symbol in enumerate(SYMBOLS):
            generate_bars(symbol, 900, 21 + i).iloc[:n].to_csv(tmp / name / f"{symbol}.csv", index_label="date")
    out = tmp / "runs"
    torch.set_num_threads(1)
    assert main(["portfolio", "--pairs", ",".join(SYMBOLS), "--data-dir", str(tmp / "full"), "--config", TINY,
                 "--forecast-backend", "none", "--out", str(out), "--steps", "8", "--set", "paths.run_name=p1",
                 "--set", "portfolio.batch_size=4", "--set", "portfolio.episode_rebalances=3",
                 "--set", "portfolio.learning_rate=0.02", "--set", "training.eval_every=4",
                 "--set", "portfolio.prior_candidate=false", "-q"]) == 0        # a trained policy, never the 1/N prior
    run_dir = out / "models" / "finetuned" / "portfolio_pairs" / "AAA_BBB" / "p1"
    meta = json.loads((run_dir / "metadata.json").read_text())
    dates = generate_bars("AAA", 900, 21).index
    return {"tmp": tmp, "out": out, "run_dir": run_dir, "meta": meta, "report_dir": Path(meta["report_dir"]),
            "dates": dates, "D": dates[CUT].strftime("%Y-%m-%d")}


def backtest(trained, capsys, *extra, data="full"):
    return run_cli(["backtest", "--model", str(trained["run_dir"]), "--data-dir", str(trained["tmp"] / data),
                    "--json", *extra], capsys)


def test_backtest_of_the_test_range_reproduces_the_run(trained, capsys):
    """Same feature code, the saved pooled scaler, the same simulator: the run's own test weights and metrics."""
    result, err = backtest(trained, capsys)
    mine, run = Path(result["report_dir"]), trained["report_dir"]
    assert mine.parent == trained["out"] / "reports" and mine.name.startswith("backtest-")
    for name in ("weights.csv", "test_returns.csv"):
        a, b = pd.read_csv(mine / name), pd.read_csv(run / name)
        assert list(a.columns) == list(b.columns) and list(a["date"]) == list(b["date"])
        np.testing.assert_allclose(a.drop(columns="date"), b.drop(columns="date"), rtol=0, atol=1e-9)
    assert pd.read_csv(mine / "weights.csv")["weight_AAA"].std() > 1e-4            # the policy really tilts
    expected = json.loads((run / "metrics.json").read_text())
    for name, metrics in {"model": expected["model"], **expected["baselines"]}.items():
        got = result["model"] if name == "model" else result["baselines"][name]
        for key, value in metrics.items():
            assert got[key] == pytest.approx(value, abs=1e-9), (name, key)
    assert result["in_sample"] is False and "IN SAMPLE" not in err
    assert result["significance"]["n_bars"] == expected["test_bars"] and result["cost_sensitivity"]["rows"]
    assert "policy" in err and "equal_weight" in err                  # the table goes to stderr
    series = pd.read_csv(mine / "series.csv")
    assert {"model", "equal_weight", "buy_and_hold_equal", "min_variance", "hold_AAA"} <= set(series["strategy"])
    page = Path(result["report_html"]).read_text()
    assert "Backtest" in page and "1/N rebalanced" in page and "IN SAMPLE" not in page
    assert (run / "series.csv").is_file()                             # training reports carry the curves too


def test_weights_are_causal_through_the_cli(trained, capsys):
    """The data file ending at D or later gives the same weights and returns at every date before D."""
    start = trained["meta"]["splits"]["test"]["start"]
    long, _ = backtest(trained, capsys, "--start", start)
    short, _ = backtest(trained, capsys, "--start", start, data="cut")
    assert short["test_end"] < trained["D"] < long["test_end"] and short["test_start"] == long["test_start"] == start
    for name in ("weights.csv", "test_returns.csv"):
        a = pd.read_csv(Path(long["report_dir"]) / name).set_index("date")
        b = pd.read_csv(Path(short["report_dir"]) / name).set_index("date")
        assert b.index.isin(a.index).all() and len(b) > 10
        np.testing.assert_allclose(a.loc[b.index], b, rtol=0, atol=1e-12)
    assert long["in_sample"] is short["in_sample"] is False


def test_in_sample_range_and_cost_are_flagged(trained, capsys):
    splits = trained["meta"]["splits"]
    result, err = backtest(trained, capsys, "--start", splits["train"]["start"], "--end", splits["val"]["end"],
                           "--cost-bps", "25")
    assert result["in_sample"] is True and "IN SAMPLE" in err
    assert [o.split()[0] for o in result["overlap"]] == ["training", "validation"]
    report_dir = Path(result["report_dir"])
    assert json.loads((report_dir / "backtest.json").read_text())["in_sample"] is True
    assert json.loads((report_dir / "metrics.json").read_text())["cost_per_turnover"] == pytest.approx(0.0025)
    assert "IN SAMPLE" in (report_dir / "report.html").read_text()


def test_refusals_are_one_line(trained, capsys):
    run = str(trained["run_dir"])
    for extra, message in [(["--set", "data.forecast_backend=statistical"], "features differ"),
                           (["--start", "2031-01-01"], "no decision bars"),
                           (["--cost-bps", "-1"], "cannot be negative")]:
        assert main(["backtest", "--model", run, "--data-dir", str(trained["tmp"] / "full"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err

"""Multi-seed runs: one run per seed with distinct ids, mean ± std of validation and test metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_runs import TINY

from hftraining.cli import main
from hftraining.config import load_config
from hftraining.errors import UserError
from hftraining.seeds import mean_std, run_seeds


def test_mean_std_uses_sample_std_over_the_rows_where_a_metric_is_defined():
    rows = [{"sharpe_ratio": 1.0, "x": None, "n": 3, "w": None}, {"sharpe_ratio": 2.0, "x": 1.0, "n": 5, "w": None}]
    stats = mean_std(rows)
    assert set(stats) == {"sharpe_ratio", "n", "x"}                     # w is defined nowhere
    assert stats["x"] == {"mean": 1.0, "std": 0.0, "n": 1}              # an undefined win rate is skipped, not 0
    assert stats["sharpe_ratio"] == {"mean": 1.5, "std": pytest.approx(np.std([1.0, 2.0], ddof=1)), "n": 2}
    assert mean_std([{"a": 2.0}])["a"]["std"] == 0.0


def test_repeated_seed_is_refused_before_training(tmp_path):
    with pytest.raises(UserError, match="seed 1 is given twice"):
        run_seeds("DEMO", load_config(TINY), [0, 1, 1])


def test_cli_seeds_trains_one_run_per_seed(tmp_path, capsys):
    code = main(["single", "--stock", "DEMO", "--config", str(TINY), "--set", "data.forecast_backend=none",
                 "--out", str(tmp_path), "--steps", "3", "-q", "--seeds", "0", "1", "--json"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["seeds"] == [0, 1] and "mean±std" in captured.err     # --json: the table is on stderr
    report = tmp_path / "reports" / summary["group_id"]
    doc = json.loads((report / "metrics.json").read_text())
    ids = [r["run_id"] for r in doc["runs"]]
    assert ids == [f"{summary['group_id']}-seed0", f"{summary['group_id']}-seed1"]
    for r in doc["runs"]:
        assert load_config(tmp_path / "models" / "finetuned" / "DEMO" / r["run_id"] / "config.yaml").training.seed \
            == r["seed"]
    sharpe = [r["test"]["sharpe_ratio"] for r in doc["runs"]]
    assert doc["test"]["sharpe_ratio"]["mean"] == pytest.approx(np.mean(sharpe))
    assert doc["test"]["sharpe_ratio"]["std"] == pytest.approx(np.std(sharpe, ddof=1))
    assert "sharpe_ratio" in doc["validation"] and doc["buy_and_hold"]["trade_count"] == 1
    assert doc["kind"] == "seeds" and set(doc["baselines"]) >= {"buy_and_hold", "momentum"}
    page = (report / "report.html").read_text()                     # the group's page links each seed's report
    assert summary["report_html"] == str(report / "report.html") and "mean over seeds" in page
    assert all(f'href="../{r["run_id"]}/report.html"' in page for r in doc["runs"])
    assert summary["verdict"].startswith("Against the best baseline: ")
    (report / "report.html").unlink()
    assert main(["report", str(report)]) == 0 and "mean over seeds" in (report / "report.html").read_text()
    assert main(["single", "--stock", "DEMO", "--config", str(TINY), "--seed", "3", "--seeds", "0", "1"]) == 2
    assert "--seed and --seeds" in capsys.readouterr().err

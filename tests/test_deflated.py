"""Deflated Sharpe with an honest N: every kind of run registers, and N is recounted whenever a report is written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fake_runs import tiny_config

from hftraining.cli import main
from hftraining.deflated import deflated, refresh_report
from hftraining.metrics import sharpe_ratio
from hftraining.significance import deflated_sharpe_ratio
from hftraining.trials import TrialScope, read_trials, register_trial

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_report(root, run_id="r1", symbol="AAA", seed=0):
    """A report folder with test returns and a DSR that records its trials, as a finished run writes it."""
    net = np.random.default_rng(seed).normal(4e-4, 0.01, 300)
    report_dir = root / "reports" / run_id
    report_dir.mkdir(parents=True)
    pd.DataFrame({"date": pd.bdate_range("2024-01-01", periods=300).strftime("%Y-%m-%d"), "position": 1.0,
                  "asset_return": net, "net_return": net}).to_csv(report_dir / "test_returns.csv", index=False,
                                                                  float_format="%.17g")
    scope = TrialScope(root, [symbol], run_id=run_id)
    sig = {"sharpe_ratio": sharpe_ratio(net), "deflated": deflated(scope, net, sharpe_ratio(net), 252)}
    (report_dir / "metrics.json").write_text(json.dumps({"symbol": symbol, "test_start": "2024-01-01",
                                                         "test_end": "2025-02-24", "test_bars": 300,
                                                         "model": {"sharpe_ratio": sig["sharpe_ratio"]},
                                                         "baselines": {}, "significance": sig}))
    register_trial(root, run_id, "single", [symbol], 1.0, sig["sharpe_ratio"])
    return report_dir, net


def test_rewriting_a_report_recounts_every_trial_registered_since(tmp_path):
    report_dir, net = fake_report(tmp_path)
    first = json.loads((report_dir / "metrics.json").read_text())["significance"]["deflated"]
    assert first["n_trials"] == 1 and "N = 1" in first["n_trials_source"]
    for i, value in enumerate([0.2, -0.4, 1.1]):                 # later configurations on the same stock
        register_trial(tmp_path, f"later{i}", "single", ["AAA"], None, value)
    register_trial(tmp_path, "other", "single", ["BBB"], None, 3.0)   # another stock does not compete
    assert refresh_report(report_dir) == 1
    dsr = json.loads((report_dir / "metrics.json").read_text())["significance"]["deflated"]
    expected = deflated_sharpe_ratio(net, 4, [0.2, -0.4, 1.1, sharpe_ratio(net)], 252)
    assert dsr["n_trials"] == 4 and dsr["dsr"] == pytest.approx(expected["dsr"], rel=1e-9)
    assert dsr["sr0"] == pytest.approx(expected["sr0"], rel=1e-9) and dsr["dsr"] < first["dsr"]
    assert "3 other trial(s) of AAA" in dsr["n_trials_source"] and "single 3" in dsr["n_trials_source"]


def test_hftrain_report_recomputes_the_dsr_and_says_where_n_came_from(tmp_path, capsys):
    report_dir, _ = fake_report(tmp_path)
    register_trial(tmp_path, "later", "portfolio", ["AAA"], None, 0.3)
    assert main(["report", str(report_dir)]) == 0, capsys.readouterr().err
    dsr = json.loads((report_dir / "metrics.json").read_text())["significance"]["deflated"]
    page = (report_dir / "report.html").read_text()
    assert dsr["n_trials"] == 2 and "Deflated Sharpe (N = 2)" in page
    assert "1 other trial(s) of AAA in" in page and "trials.jsonl (portfolio 1) plus this run" in page


def test_the_api_paths_register_base_and_finetune_trials(tmp_path):
    from hftraining.base_model_trainer import BaseModelTrainer

    cfg = tiny_config(tmp_path, overrides=["data.source=synthetic", "data.synthetic_bars=400"])
    trainer = BaseModelTrainer(["AAA", "BBB"], cfg, progress=False)
    _, checkpoint = trainer.train_base_model(max_steps=2)
    trainer.finetune_for_stock("AAA", checkpoint, num_epochs=1)
    kinds = sorted((r["kind"], r["symbols"][0]) for r in read_trials(tmp_path))
    assert kinds == [("base", "AAA"), ("base", "BBB"), ("finetuned", "AAA")]


def test_a_portfolio_counts_its_own_sharpe_in_the_trials_variance(tmp_path):
    from hftraining.portfolio import run_portfolio

    register_trial(tmp_path, "earlier", "portfolio", ["BBB", "AAA"], None, 0.5)
    cfg = tiny_config(tmp_path, overrides=["data.source=synthetic", "portfolio.max_steps=2", "portfolio.batch_size=2",
                                           "training.eval_every=2"])
    run = run_portfolio(["AAA", "BBB"], cfg, progress=False)
    dsr = json.loads((run.report_dir / "metrics.json").read_text())["significance"]["deflated"]
    own = run.summary["test"]["sharpe_ratio"]
    assert dsr["n_trials"] == 2 and dsr["variance_source"] == "variance of 2 registered trial Sharpes"
    assert dsr["trial_sharpe_std"] == pytest.approx(np.std([0.5, own], ddof=1), rel=1e-9)
    assert [r["kind"] for r in read_trials(tmp_path, ["AAA", "BBB"])] == ["portfolio", "portfolio"]

"""Walk-forward: folds tile the test bars once, embargoes hold, and later data never reaches earlier folds."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from fake_runs import TINY, tiny_config, write_csv

from hftraining.cli import main
from hftraining.data.panel import Scaler, make_splits
from hftraining.errors import UserError
from hftraining.walk_forward import fit_fold_scaler, make_folds, run_walk_forward

FAST = ["training.max_steps=4", "training.eval_every=2", "training.warmup_steps=1", "training.log_every=2",
        "training.checkpoint_every=4"]


@pytest.mark.parametrize("window", ["expanding", "rolling"])
@pytest.mark.parametrize("n_time,every", [(839, 40), (839, 1000), (1500, 37), (600, 7)])
def test_folds_tile_the_test_range_with_embargoes(tmp_path, window, n_time, every):
    cfg = tiny_config(tmp_path)
    base = make_splits(n_time, cfg)
    folds = make_folds(n_time, cfg, every, window)
    assert folds[0].train == base.train and folds[0].val == base.val and folds[0].test.start == base.test.start
    covered = [t for f in folds for t in f.test]
    assert covered == list(base.test)                          # every test bar exactly once, in order
    for f in folds:
        assert f.train.stop + f.embargo == f.val.start         # embargo train -> val
        assert f.val.stop + f.embargo == f.test.start          # embargo val -> test
        assert len(f.val) == len(base.val) and len(f.train) >= 1
        if window == "rolling":
            assert len(f.train) == len(base.train)
        else:
            assert f.train.start == base.train.start
        assert len(f.test) >= min(every, len(base.test)) or f is folds[-1]
    assert len(folds[-1].test) >= min(every, len(base.test)) / 2     # a short tail joins the fold before it
    with pytest.raises(UserError, match="at least 1"):
        make_folds(n_time, cfg, 0)


def test_fold_scaler_uses_only_the_rows_its_training_windows_see(tmp_path):
    from hftraining.train_with_profit import prepare

    cfg = tiny_config(tmp_path)
    panel = prepare(["DEMO"], cfg, progress=False).panel
    fold = make_folds(panel.n_time, cfg, 40, "rolling")[2]
    lo = fold.train.start - cfg.data.context_length + 1
    scaler = fit_fold_scaler(panel, fold.train, cfg.data.context_length)
    noisy = panel.features.copy()
    noisy[:lo] += 100.0
    noisy[fold.train.stop:] -= 100.0
    again = fit_fold_scaler(replace(panel, features=noisy), fold.train, cfg.data.context_length)
    np.testing.assert_array_equal(scaler.mean, again.mean)
    np.testing.assert_array_equal(scaler.std, again.std)
    expanding = make_folds(panel.n_time, cfg, 40)[1]            # expanding: Scaler.fit's rows
    np.testing.assert_allclose(fit_fold_scaler(panel, expanding.train, 16).mean,
                               Scaler.fit(panel, expanding.train).mean, rtol=1e-5, atol=1e-6)


def _positions(report_dir) -> pd.Series:
    frame = pd.read_csv(report_dir / "test_returns.csv", parse_dates=["date"], float_precision="round_trip")
    return frame.set_index("date")["position"]


@pytest.mark.slow
def test_walk_forward_report_and_later_data_cannot_change_earlier_folds(tmp_path):
    write_csv(tmp_path / "a", bars=900, seed=5)
    cfg = tiny_config(tmp_path / "out", data_dir=tmp_path / "a", overrides=FAST)
    cfg.paths.run_name = "wf-a"
    a = run_walk_forward("DEMO", cfg, retrain_every=60)
    doc = json.loads((a.report_dir / "walk_forward.json").read_text())
    assert len(doc["folds"]) == 2 == a.summary["folds"]
    stitched = _positions(a.report_dir)
    assert len(stitched) == doc["stitched"]["bars"] == sum(f["test"]["bars"] for f in doc["folds"])
    assert stitched.index.is_unique and stitched.index.is_monotonic_increasing
    for fold in doc["folds"]:
        assert fold["val"]["end"] < fold["test"]["start"] and fold["train"]["end"] < fold["val"]["start"]
        assert (tmp_path / "out" / "models" / "finetuned" / "DEMO" / fold["run_id"] / "model.safetensors").is_file()
    metrics = json.loads((a.report_dir / "metrics.json").read_text())
    assert metrics["test_bars"] == len(stitched) and "buy_and_hold" in metrics["baselines"]

    # perturb every bar from fold 1's sixth test bar on: both folds trained (and fitted their scalers)
    # before it, so fold 0's positions and fold 1's first five are unchanged; later ones move
    cut = pd.Timestamp(doc["folds"][1]["test"]["start"])
    cut = stitched.index[stitched.index.get_loc(cut) + 5]
    bars = pd.read_csv(tmp_path / "a" / "DEMO.csv", parse_dates=["date"])
    later = bars["date"] >= cut
    bars.loc[later, ["open", "high", "low", "close", "adj_close"]] *= 1.3
    (tmp_path / "b").mkdir()
    bars.to_csv(tmp_path / "b" / "DEMO.csv", index=False)
    cfg_b = tiny_config(tmp_path / "out", data_dir=tmp_path / "b", overrides=FAST)
    cfg_b.paths.run_name = "wf-b"
    b = run_walk_forward("DEMO", cfg_b, retrain_every=60)
    other = _positions(b.report_dir)
    assert list(other.index) == list(stitched.index)
    before = stitched.index < cut
    np.testing.assert_array_equal(other[before].to_numpy(), stitched[before].to_numpy())
    assert not np.allclose(other[~before].to_numpy(), stitched[~before].to_numpy())
    scalers = [[json.loads((r.run_dir / "scaler.json").read_text()) for r in run.folds] for run in (a, b)]
    assert scalers[0] == scalers[1]


def test_cli_walk_forward_and_bad_combinations(tmp_path, capsys):
    common = ["single", "--stock", "DEMO", "--config", str(TINY), "--set", "data.forecast_backend=none",
              "--out", str(tmp_path), "-q"]
    fast = [x for item in FAST for x in ("--set", item)]
    assert main([*common, *fast, "--walk-forward", "--retrain-every", "60", "--walk-forward-window", "rolling",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["folds"] == 2 and summary["window"] == "rolling" and len(summary["fold_runs"]) == 2
    report = tmp_path / "reports" / summary["group_id"]
    assert (report / "walk_forward.json").is_file() and (report / "metrics.json").is_file()
    assert summary["report_html"] == str(report / "report.html")
    assert "Walk-forward" in (report / "report.html").read_text()
    assert main([*common, "--retrain-every", "60"]) == 2
    assert "need --walk-forward" in capsys.readouterr().err
    assert main([*common, "--walk-forward", "--seeds", "0", "1"]) == 2
    assert "cannot be combined" in capsys.readouterr().err
    assert main([*common, "--walk-forward", "--walk-forward-window", "sliding"]) == 2
    assert "expected expanding or rolling" in capsys.readouterr().err


def test_cli_portfolio_walk_forward_stitches_one_book(tmp_path, capsys):
    code = main(["portfolio", "--pairs", "AAA,BBB", "--config", str(TINY), "--source", "synthetic",
                 "--forecast-backend", "none", "--out", str(tmp_path), "--steps", "4", "--set",
                 "portfolio.batch_size=4", "--set", "portfolio.episode_rebalances=3", "--set", "training.eval_every=2",
                 "--walk-forward", "--retrain-every", "50", "--json", "-q"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"][0]
    assert summary["retrain_every"] == 51 and summary["folds"] == 2         # rounded to the rebalance interval 3
    report = tmp_path / "reports" / summary["group_id"]
    doc = json.loads((report / "walk_forward.json").read_text())
    assert doc["stitched"]["bars"] == sum(f["test"]["bars"] for f in doc["folds"])
    for fold in doc["folds"]:
        assert fold["train"]["end"] < fold["val"]["start"] <= fold["val"]["end"] < fold["test"]["start"]
    metrics = json.loads((report / "metrics.json").read_text())
    assert {"equal_weight", "min_variance"} <= set(metrics["baselines"])
    assert (report / "report.html").is_file() and summary["significance"]["psr"] is not None
    # the stitched book is one registered trial, with significance like any portfolio run
    from hftraining.trials import read_trials

    trials = [r for r in read_trials(tmp_path, ["AAA", "BBB"]) if r["kind"] == "walk_forward_portfolio"]
    assert [r["run_id"] for r in trials] == [summary["group_id"]]
    assert trials[0]["test_sharpe"] == pytest.approx(metrics["model"]["sharpe_ratio"])
    assert metrics["significance"]["deflated"]["n_trials"] == 1
    # the first fold's bars trade exactly as that fold's own test run did (both start from cash)
    stitched = pd.read_csv(report / "test_returns.csv")
    first = pd.read_csv(tmp_path / "reports" / doc["folds"][0]["run_id"] / "test_returns.csv")
    np.testing.assert_allclose(stitched["net_return"][:len(first)], first["net_return"], rtol=0, atol=1e-12)


def test_portfolio_folds_scale_with_the_group_pooled_scaler_of_their_training_rows(tmp_path, monkeypatch):
    """Each portfolio fold gets portfolio.pooled_scaler (one row for the whole group), fitted on that fold's rows."""
    from hftraining import portfolio
    from hftraining.walk_forward import run_walk_forward_portfolio

    seen, real = [], portfolio.run_prepared
    monkeypatch.setattr(portfolio, "run_prepared",
                        lambda prepared, *a, **k: seen.append(prepared) or real(prepared, *a, **k))
    cfg = tiny_config(tmp_path, overrides=["data.source=synthetic", "portfolio.max_steps=2", "portfolio.batch_size=2",
                                           "portfolio.episode_rebalances=3", "training.eval_every=2"])
    run_walk_forward_portfolio(["AAA", "BBB"], cfg, retrain_every=51, window="rolling", progress=False)
    context = cfg.data.context_length
    assert len(seen) == 2 and seen[1].splits.train.start > seen[0].splits.train.start > 0
    for prepared in seen:
        train, scaler = prepared.splits.train, prepared.scaler
        assert scaler.symbols == ["AAA", "BBB"]
        np.testing.assert_array_equal(scaler.mean[0], scaler.mean[1])       # pooled: the group shares one row
        np.testing.assert_array_equal(scaler.std[0], scaler.std[1])
        noisy = prepared.panel.features.copy()
        noisy[: train.start - context + 1] += 100.0                          # before the first training window
        noisy[train.stop:] -= 100.0                                          # validation, test and later
        again = portfolio.pooled_scaler(replace(prepared.panel, features=noisy), train, context)
        np.testing.assert_array_equal(again.mean, scaler.mean)
        np.testing.assert_array_equal(again.std, scaler.std)
        assert not np.allclose(scaler.mean, Scaler.fit(prepared.panel, train).mean)   # not per-symbol

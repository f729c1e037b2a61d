"""Ensembles: average_predictions, members with their own scalers, the common test range, clear refusals."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from fake_runs import make_run, statistical_positions, tiny_config

from hftraining import atomic
from hftraining.cli import main
from hftraining.data.panel import build_panel
from hftraining.ensemble import average_predictions, load_members, member_positions, run_ensemble
from hftraining.errors import UserError


def test_average_predictions_weights_and_shapes():
    a, b = np.array([1.0, -1.0, 0.5]), np.array([0.0, 1.0, 0.5])
    np.testing.assert_allclose(average_predictions([a, b]), [0.5, 0.0, 0.5])
    np.testing.assert_allclose(average_predictions([a, b], weights=[3, 1]), 0.75 * a + 0.25 * b)
    np.testing.assert_array_equal(average_predictions([a]), a)
    with pytest.raises(ValueError, match="differ in length"):
        average_predictions([a, b[:2]])
    with pytest.raises(ValueError, match="non-negative"):
        average_predictions([a, b], weights=[1, -1])
    with pytest.raises(ValueError, match="2 weights"):
        average_predictions([a, b, a], weights=[1, 1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three members on the synthetic tiny market; one has another context length, hence other splits."""
    root = tmp_path_factory.mktemp("ensemble")
    cfg = tiny_config(root)
    return root, [make_run(cfg, seed=1), make_run(cfg, seed=2), make_run(cfg, seed=3, context=12)]


def test_ensemble_is_the_average_of_members_on_their_common_test_range(runs, caplog):
    root, paths = runs
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        result = run_ensemble(paths, "DEMO", out=root)
    assert "IN SAMPLE" not in caplog.text
    s = result.summary
    tests = [json.loads((p / "metadata.json").read_text())["splits"]["test"] for p in paths]
    assert s["start"] == max(t["start"] for t in tests) and s["range_from"] == "the members' common test range"
    assert set(s["members"]) == {p.name for p in paths} and not s["in_sample"]

    frame = pd.read_csv(result.report_dir / "test_returns.csv", float_precision="round_trip")
    metrics = json.loads((result.report_dir / "metrics.json").read_text())
    assert metrics["test_bars"] == len(frame) == s["bars"]
    assert {"buy_and_hold", "momentum", *s["members"]} <= set(metrics["baselines"]) and "significance" in metrics
    members = load_members(paths)
    panel = build_panel(["DEMO"], members[0].run.config, root, progress=False)
    first = int(np.searchsorted(panel.dates, np.datetime64(s["start"], "ns")))
    decisions = range(first, first + s["bars"])
    each = [member_positions(m, panel, 0, decisions) for m in members]
    assert not np.allclose(each[0], each[1])
    np.testing.assert_allclose(frame["position"], np.mean(each, axis=0), rtol=0, atol=1e-9)


def test_range_before_the_test_split_is_flagged_in_sample(runs, caplog):
    root, paths = runs
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        result = run_ensemble(paths[:2], "DEMO", start="2022-06-01", end="2022-12-31", out=root)
    assert result.summary["in_sample"] and "IN SAMPLE" in caplog.text
    assert result.summary["start"] >= "2022-06-01" and result.summary["end"] <= "2022-12-31"


def test_members_with_different_features_are_refused(runs, tmp_path):
    _, paths = runs
    odd = make_run(tiny_config(tmp_path), seed=4)
    scaler = json.loads((odd / "scaler.json").read_text())
    scaler["feature_names"][0] = "ret_1_renamed"
    atomic.write_json(odd / "scaler.json", scaler)
    with pytest.raises(UserError, match=f"{odd}.*different feature set.*ret_1_renamed"):
        load_members([paths[0], odd])
    with pytest.raises(UserError, match="at least two runs"):
        load_members([paths[0]])


def test_cli_ensemble(runs, capsys):
    root, paths = runs
    code = main(["ensemble", "--models", str(paths[0]), str(paths[1]), "--stock", "DEMO", "--out", str(root),
                 "--json"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["ensemble_run"].startswith("ensemble-") and "ensemble" in captured.err
    report = root / "reports" / summary["ensemble_run"]
    assert (report / "metrics.json").is_file() and summary["report_html"] == str(report / "report.html")
    assert "Ensemble" in (report / "report.html").read_text()
    assert main(["ensemble", "--models", str(paths[0]), str(root / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_members_with_other_forecast_settings_are_fed_their_own_features(tmp_path):
    """A member trained on 96-bar forecast windows must not be scored on the 32-bar features of another."""
    from hftraining.backtest import backtest_model

    paths = [make_run(tiny_config(tmp_path, overrides=["data.forecast_backend=statistical",
                                                       f"data.forecast_context_length={length}"]),
                      seed=seed, run_name=f"fc{length}") for seed, length in ((1, 32), (2, 96))]
    result = run_ensemble(paths, "DEMO", out=tmp_path)
    frame = pd.read_csv(result.report_dir / "test_returns.csv", index_col="date", float_precision="round_trip")
    own = []                                         # each member's own backtest over the same dates
    for path in paths:
        bt = backtest_model(path, frame.index[0], frame.index[-1], "DEMO", out=tmp_path, html=False)
        own.append(pd.read_csv(bt.report_dir / "test_returns.csv", index_col="date",
                               float_precision="round_trip")["position"].reindex(frame.index).to_numpy())
    assert not np.isnan(own).any() and not np.allclose(own[0], own[1])
    np.testing.assert_allclose(frame["position"], np.mean(own, axis=0), rtol=0, atol=1e-9)


def test_ensemble_scores_members_on_the_forecaster_they_actually_used(toto_fell_back_then_appears):
    root, run, _ = toto_fell_back_then_appears
    result = run_ensemble([run, run], stock="DEMO")
    frame = pd.read_csv(result.report_dir / "test_returns.csv", parse_dates=["date"]).set_index("date")
    dates, expected = statistical_positions(root, run, root / "train")
    np.testing.assert_allclose(frame["position"].to_numpy(),
                               pd.Series(expected, index=dates).reindex(frame.index).to_numpy(), rtol=0, atol=1e-6)

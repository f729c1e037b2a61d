"""The always-long prior: a one-stock model from scratch trades only if it beats it on validation."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import NO_FORECAST, TINY

from hftraining import checkpoint as ckpt
from hftraining.baselines import vol_long
from hftraining.config import load_config
from hftraining.evaluation import model_positions, simulate
from hftraining.model import MemberAverage, build_model
from hftraining.prepare import prepare
from hftraining.prior import hold_prior_unless_beaten
from hftraining.sizing import traded_positions
from hftraining.trainer import TrainingJob


def trending_csv(folder: Path, drift: float, bars: int = 900, seed: int = 0) -> Path:
    """Daily bars of one symbol, TREND, whose closes drift by `drift` a day (+ noise): long wins if drift > 0."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(drift + 0.01 * rng.standard_normal(bars)))
    open_ = np.append(100.0, close[:-1])
    frame = pd.DataFrame({"date": pd.bdate_range("2015-01-02", periods=bars).strftime("%Y-%m-%d"),
                          "open": open_, "high": np.maximum(open_, close) * 1.002,
                          "low": np.minimum(open_, close) * 0.998, "close": close, "adj_close": close,
                          "volume": 1e6})
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "TREND.csv", index=False)
    return folder


def always_short_job(tmp_path: Path, drift: float):
    """A job on TREND and a model rigged to hold raw -1 on every bar (its head ignores the inputs)."""
    data = trending_csv(tmp_path / "data", drift)
    config = load_config(TINY, ["data.source=csv", f"data.data_dir={data}", "data.forecast_backend=none",
                                f"paths.root={tmp_path / 'runs'}"])
    prepared = prepare(["TREND"], config, progress=False)
    job = TrainingJob(config, prepared.panel, prepared.splits, prepared.scaler, tmp_path / "run", tmp_path / "tb",
                      "single TREND", 1e-3, 10)
    model = build_model(len(prepared.panel.feature_names), config.data.context_length, config.data.horizon,
                        config.model)
    with torch.no_grad():
        model.position_head.bias.fill_(-30.0)                  # tanh(-30) = -1 in float32: always short
    model.eval()
    (tmp_path / "run").mkdir()
    return job, SimpleNamespace(model=model, best_path=tmp_path / "run" / "best.safetensors")


def sharpe_of(job, raw: np.ndarray) -> float:
    """Net Sharpe on the validation bars of raw positions, sized and simulated by the baseline code path."""
    val = job.splits.val
    positions = traded_positions(raw, job.panel, 0, val, job.config)
    return simulate(job.panel, 0, val, positions, job.config.tracker).metrics["sharpe_ratio"]


@pytest.mark.parametrize("drift, holds", [(0.002, True), (-0.002, False)])
def test_the_prior_is_held_unless_the_model_beats_it(tmp_path, drift, holds):
    job, result = always_short_job(tmp_path, drift)
    record = hold_prior_unless_beaten(result, job)["prior"]
    val = job.splits.val
    expected_prior = vol_long(job.panel, 0, val, job.config).metrics["sharpe_ratio"]
    assert record["validation_sharpe_prior"] == pytest.approx(expected_prior, rel=1e-6)
    assert record["validation_sharpe_model"] == pytest.approx(sharpe_of(job, -np.ones(len(val))), rel=1e-6)
    assert record["holds_prior"] is holds                       # rising prices: long beats short; falling: not
    assert (record["validation_sharpe_model"] > record["validation_sharpe_prior"]) is not holds
    x = torch.from_numpy(job.scaler.transform(job.panel))
    raw = model_positions(result.model, x, job.panel, 0, val, job.config)
    expected = traded_positions(np.ones(len(val)) if holds else -np.ones(len(val)), job.panel, 0, val, job.config)
    np.testing.assert_allclose(raw, expected, rtol=1e-6)
    assert result.best_path.exists() is holds                   # a held prior is saved with the weights
    if holds:
        reloaded = build_model(len(job.panel.feature_names), job.config.data.context_length, job.config.data.horizon,
                               job.config.model)
        ckpt.load_weights(reloaded, ckpt.load_tensors(result.best_path), result.best_path)
        assert bool(reloaded.holds_prior)


def test_a_tie_holds_the_prior(tmp_path):
    """A model that is always long (raw +1) earns exactly the prior's Sharpe: it must beat it, so the prior is held."""
    job, result = always_short_job(tmp_path, 0.002)
    with torch.no_grad():
        result.model.position_head.bias.fill_(30.0)
    record = hold_prior_unless_beaten(result, job)["prior"]
    assert record["validation_sharpe_model"] == pytest.approx(record["validation_sharpe_prior"], rel=1e-6)
    assert record["holds_prior"] is True


def test_holding_the_prior_means_raw_plus_one_for_every_model_shape():
    config = load_config(TINY).model
    for members in (1, 3):
        model = build_model(5, 16, 3, config.model_copy(update={"members": members}))
        model.output_scale.fill_(0.3)
        x = torch.randn(4, 16, 5)
        assert not torch.equal(model(x).positions, torch.ones(4, 16))
        model.holds_prior.fill_(True)
        assert torch.equal(model(x).positions, torch.ones(4, 16))
        assert isinstance(model, MemberAverage) is (members == 3)


def test_weights_saved_before_the_prior_existed_load_as_not_holding_it(tmp_path):
    model = build_model(5, 16, 3, load_config(TINY).model)
    weights = {k: v for k, v in model.state_dict().items() if k != "holds_prior"}
    model.holds_prior.fill_(True)
    ckpt.load_weights(model, weights, tmp_path)
    assert not bool(model.holds_prior)


@pytest.mark.slow
def test_single_runs_record_the_check_and_trade_what_it_chose(tmp_path, capsys, one_torch_thread):
    """End to end on a falling stock: the prior (long) loses on validation or not; either way the record says which,
    the prior's Sharpe equals the vol_long baseline's, and a held prior trades exactly the vol_long row."""
    from hftraining.cli import main

    data = trending_csv(tmp_path / "data", 0.001)
    code = main(["single", "--stock", "TREND", "--data-dir", str(data), "--config", TINY, *NO_FORECAST,
                 "--out", str(tmp_path / "runs"), "--json", "-q", "--steps", "10"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    prior = summary["prior"]
    assert prior["validation_sharpe_prior"] == pytest.approx(summary["validation_baselines"]["vol_long"], rel=1e-6)
    assert prior["holds_prior"] is not (prior["validation_sharpe_model"] > prior["validation_sharpe_prior"])
    meta = json.loads((Path(summary["run_dir"]) / "metadata.json").read_text())
    assert meta["prior"] == prior
    if prior["holds_prior"]:
        assert summary["test"]["sharpe_ratio"] == pytest.approx(summary["baselines"]["vol_long"]["sharpe_ratio"])
    off = main(["single", "--stock", "TREND", "--data-dir", str(data), "--config", TINY, *NO_FORECAST,
                "--out", str(tmp_path / "off"), "--json", "-q", "--steps", "10",
                "--set", "training.prior_candidate=false"])
    assert off == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["prior"] is None


def test_the_report_page_says_when_a_run_holds_the_prior_or_kept_its_base():
    from hftraining.html_report import _banners

    held = _banners({}, {"prior": {"holds_prior": True, "validation_sharpe_model": -0.23,
                                   "validation_sharpe_prior": 0.76}})
    assert "holds the always-long prior" in held and "-0.23" in held and "+0.76" in held
    assert _banners({}, {"prior": {"holds_prior": False, "validation_sharpe_model": 0.9,
                                   "validation_sharpe_prior": 0.5}}) == ""
    kept = _banners({}, {"kept_base": True, "validation_sharpe_finetuned": 0.1, "validation_sharpe_base": 0.4})
    assert "kept its base" in kept and "+0.10" in kept and "+0.40" in kept


def test_auto_checks_real_data_only():
    """auto: the prior stands for a real asset's premium; a synthetic market's drift has mean zero."""
    from hftraining.data.synthetic import SOURCE
    from hftraining.prior import wanted

    real, synthetic = SimpleNamespace(data_source={"AAPL": "csv"}), SimpleNamespace(data_source={"DEMO": SOURCE})
    mixed = SimpleNamespace(data_source={"AAPL": "yahoo", "DEMO": SOURCE})
    assert wanted("auto", "single", real) and not wanted("auto", "single", synthetic)
    assert not wanted("auto", "single", mixed)
    assert wanted(True, "walk_forward_fold", synthetic) and not wanted(False, "single", real)
    for kind in ("base", "finetune", "portfolio"):          # not one-stock models from scratch
        assert not wanted(True, kind, real)
    for value, parsed in (("auto", "auto"), ("true", True), ("false", False)):
        assert load_config(TINY, [f"training.prior_candidate={value}"]).training.prior_candidate == parsed
    with pytest.raises(Exception, match="prior_candidate"):
        load_config(TINY, ["training.prior_candidate=maybe"])


@pytest.mark.slow
def test_a_synthetic_run_is_checked_only_when_asked(tmp_path, capsys, one_torch_thread):
    from hftraining.cli import main

    common = ["single", "--stock", "DEMO", "--config", TINY, *NO_FORECAST, "--json", "-q", "--steps", "6"]
    assert main([*common, "--out", str(tmp_path / "auto")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["prior"] is None
    assert main([*common, "--out", str(tmp_path / "on"), "--set", "training.prior_candidate=true"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["prior"]) == {
        "holds_prior", "validation_sharpe_model", "validation_sharpe_prior"}


def test_a_bad_setting_is_one_line_naming_where_it_came_from(capsys, tmp_path):
    from conftest import refuse

    refuse(["single", "--stock", "DEMO", "--out", str(tmp_path), "--set", "training.prior_candidate=maybe"], capsys,
           None, "--set training.prior_candidate=maybe", "must be auto, true or false")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  prior_candidate: 2\n")
    refuse(["single", "--stock", "DEMO", "--out", str(tmp_path), "--config", str(bad)], capsys, None,
           str(bad), "training.prior_candidate = 2", "must be auto, true or false")


@pytest.mark.slow
def test_a_backtest_of_a_run_holding_the_prior_says_so_and_trades_vol_long(tmp_path, capsys, one_torch_thread):
    from hftraining.cli import main

    data = trending_csv(tmp_path / "data", 0.001)
    common = ["--data-dir", str(data), "--config", TINY, *NO_FORECAST, "-q"]
    assert main(["single", "--stock", "TREND", "--out", str(tmp_path / "runs"), "--steps", "4", "--json",
                 *common]) == 0
    run_dir = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    meta_path, weights_path = run_dir / "metadata.json", run_dir / "model.safetensors"
    meta = json.loads(meta_path.read_text())
    if not meta["prior"]["holds_prior"]:                  # make it hold the prior, as the check would have
        weights = ckpt.load_tensors(weights_path)
        ckpt.save_tensors(weights_path, {**weights, "holds_prior": torch.ones((), dtype=torch.bool)})
        meta["prior"] = {"holds_prior": True, "validation_sharpe_model": -1.0, "validation_sharpe_prior": 0.5}
        meta_path.write_text(json.dumps(meta))
    backtest = ["backtest", "--model", str(run_dir), "--data-dir", str(data), "-q"]
    assert main([*backtest, "--out", str(tmp_path / "bt")]) == 0
    assert "this run holds the prior" in capsys.readouterr().out
    assert main([*backtest, "--out", str(tmp_path / "bt2"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["prior"]["holds_prior"] is True
    assert summary["model"]["sharpe_ratio"] == pytest.approx(summary["baselines"]["vol_long"]["sharpe_ratio"])

"""`hftrain single` end to end on the tiny config: run folder, TensorBoard tags, reload, report."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hftraining import checkpoint as ckpt
from hftraining.cli import main
from hftraining.config import load_config
from hftraining.data.panel import Scaler, build_panel
from hftraining.evaluation import model_positions
from hftraining.metrics import sharpe_ratio, total_return
from hftraining.model import build_model
from hftraining.trainer import learning_rate_at

DESIGN_TAGS = {"train/loss", "train/learning_rate", "eval/loss", "profit/total_return", "profit/sharpe_ratio",
               "profit/win_rate", "profit/max_drawdown", "profit/trade_count"}


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1]), captured


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    code = main(["single", "--stock", "DEMO", "--config", TINY, "--out", str(out), "--json", "-q"])
    assert code == 0
    run_dir = next((out / "models" / "finetuned" / "DEMO").iterdir())
    return out, run_dir


def test_run_folder_layout(tiny_run):
    out, run_dir = tiny_run
    for name in ("config.yaml", "model.safetensors", "scaler.json", "features.json", "metadata.json",
                 "last/state.safetensors", "last/state.json"):
        assert (run_dir / name).is_file(), name
    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["status"] == "completed"
    assert meta["synthetic"] is True
    assert meta["forecast"]["DEMO"]["backend"] == "statistical"
    assert meta["splits"]["train"]["end"] < meta["splits"]["val"]["start"] < meta["splits"]["test"]["start"]
    report = out / "reports" / run_dir.name
    assert (report / "metrics.json").is_file() and (report / "test_returns.csv").is_file()
    assert (out / "tensorboard" / "finetuned" / "DEMO" / run_dir.name).is_dir()


def test_tensorboard_has_exactly_the_design_tags(tiny_run):
    out, run_dir = tiny_run
    events = EventAccumulator(str(out / "tensorboard" / "finetuned" / "DEMO" / run_dir.name),
                              size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert DESIGN_TAGS <= tags
    assert not any(t.startswith("train/profit") for t in tags)
    assert "profit/equity_curve" in events.Tags()["images"]
    steps = [e.step for e in events.Scalars("profit/sharpe_ratio")]
    assert steps == [10, 20]


def test_checkpoint_reload_gives_identical_positions(tiny_run):
    out, run_dir = tiny_run
    run = ckpt.open_run(run_dir)
    model = build_model(len(run.scaler.feature_names), run.config.data.context_length, run.config.data.horizon,
                        run.config.model)
    ckpt.load_weights(model, run.weights, run_dir)
    panel = build_panel(["DEMO"], run.config, out, progress=False)
    x = torch.from_numpy(Scaler.from_dict(run.scaler.to_dict()).transform(panel))
    frame = pd.read_csv(out / "reports" / run_dir.name / "test_returns.csv")
    dates = pd.to_datetime(frame["date"]).to_numpy()
    start = int(np.searchsorted(panel.dates, dates[0]))
    positions = model_positions(model, x, panel, 0, range(start, start + len(frame)), run.config)
    np.testing.assert_allclose(positions, frame["position"].to_numpy(), rtol=0, atol=1e-9)


def test_metrics_json_agrees_with_test_returns(tiny_run):
    out, run_dir = tiny_run
    report = out / "reports" / run_dir.name
    metrics = json.loads((report / "metrics.json").read_text())
    frame = pd.read_csv(report / "test_returns.csv")
    net = frame["net_return"].to_numpy()
    assert metrics["test_bars"] == len(frame)
    assert metrics["model"]["total_return"] == pytest.approx(np.prod(1 + net) - 1, abs=1e-9)
    assert metrics["model"]["sharpe_ratio"] == pytest.approx(net.mean() / net.std(ddof=1) * np.sqrt(252), abs=1e-6)
    assert metrics["model"]["sharpe_ratio"] == pytest.approx(sharpe_ratio(net), abs=1e-9)
    assert total_return(net) == pytest.approx(metrics["model"]["total_return"], abs=1e-9)
    # net = position * next return - cost * turnover, recomputed independently
    cost = metrics["cost_per_turnover"]
    p = frame["position"].to_numpy()
    expected = p * frame["asset_return"].to_numpy() - cost * np.abs(np.diff(np.r_[0.0, p]))
    np.testing.assert_allclose(net, expected, atol=1e-12)


def test_schedule_counts_optimizer_steps():
    assert learning_rate_at(0, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert learning_rate_at(9, 1.0, 10, 100, 0.1) == pytest.approx(1.0)
    assert learning_rate_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert learning_rate_at(55, 1.0, 10, 100, 0.1) == pytest.approx(0.55)


def test_accumulation_does_not_stretch_the_schedule(tmp_path, capsys):
    summary, _ = run_cli(["single", "--stock", "DEMO", "--config", TINY, "--out", str(tmp_path), "--json", "-q",
                          "--set", "training.grad_accum_steps=4", "--set", "training.max_steps=10",
                          "--set", "training.eval_every=10"], capsys)
    events = EventAccumulator(summary["tensorboard_dir"])
    events.Reload()
    lrs = events.Scalars("train/learning_rate")
    assert lrs[-1].step == 10
    config = load_config(TINY).with_steps(10)          # --set training.max_steps=10 fits the warmup (one rule)
    warmup = config.training.warmup_steps
    assert warmup == 1
    peak = config.training.learning_rate
    # the 10th optimizer step uses the schedule's last value: with 4 micro-batches per step a
    # micro-batch-counting schedule would still be near its peak here
    assert lrs[-1].value == pytest.approx(learning_rate_at(9, peak, warmup, 10, config.training.min_lr_ratio))
    assert lrs[-1].value < 0.2 * peak


def edge_run(tmp_path, capsys, edge):
    return run_cli(["single", "--stock", "DEMO", "--config", TINY, "--out", str(tmp_path), "--json", "-q",
                    "--set", "data.synthetic_bars=2500", f"--set=data.synthetic_edge={edge}",
                    "--set", "training.max_steps=150", "--set", "training.eval_every=50",
                    "--set", "model.hidden_size=32", "--set", "data.context_length=32"], capsys)[0]


@pytest.mark.slow
def test_planted_edge_is_learned_and_random_walk_is_not_oversold(tmp_path, capsys):
    planted = edge_run(tmp_path / "edge", capsys, 3.0)
    assert planted["validation"]["sharpe_ratio"] > 2.0
    assert planted["test"]["sharpe_ratio"] > 1.0
    walk = edge_run(tmp_path / "walk", capsys, 0.0)
    assert walk["test"]["sharpe_ratio"] < 1.5     # ~600 test bars: a Sharpe of 1.5 would be a ~2.5 sigma claim


def test_positions_are_calibrated_to_the_volatility_target_on_validation_only(tiny_run):
    """After training, one constant puts the validation volatility at profit.sigma_target (risk sizing)."""
    from hftraining.evaluation import simulate

    out, run_dir = tiny_run
    run = ckpt.open_run(run_dir)
    assert float(run.weights["output_scale"]) != 1.0
    model = build_model(len(run.scaler.feature_names), run.config.data.context_length, run.config.data.horizon,
                        run.config.model)
    ckpt.load_weights(model, run.weights, run_dir)
    model.holds_prior.fill_(False)              # the calibrated network itself, whether or not the run holds the prior
    panel = build_panel(["DEMO"], run.config, out, progress=False)
    x = torch.from_numpy(run.scaler.transform(panel))
    val = run.metadata["splits"]["val"]
    start = int(np.searchsorted(panel.dates, np.datetime64(val["start"])))
    decisions = range(start, start + val["bars"])
    sim = simulate(panel, 0, decisions, model_positions(model, x, panel, 0, decisions, run.config),
                   run.config.tracker)
    assert sim.metrics["volatility"] == pytest.approx(run.config.profit.sigma_target, rel=0.02)

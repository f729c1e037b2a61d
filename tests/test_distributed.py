"""Data parallelism (hftraining.distributed) and the trainer's sync-free NaN guard.

The end-to-end tests launch `hftrain single|base|portfolio --nproc 2` (torchrun, two gloo ranks on CPU)
and check that each trains the same model as one process with the doubled batch, and that rank 0 alone
writes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from nan_injection import poison_training_loss
from safetensors.torch import load_file

from hftraining import checkpoint as ckpt
from hftraining import distributed, trainer
from hftraining.cli import main
from hftraining.errors import UserError
from hftraining.trainer import Batches, StepGuard

ROOT = Path(__file__).resolve().parents[1]


def _single_args(out: Path, batch: int) -> list[str]:
    return ["single", "--stock", "DEMO", "--config", TINY, "--set", "data.forecast_backend=none",
            "--set", f"training.batch_size={batch}", "--steps", "10", "--device", "cpu", "--seed", "3",
            "--set", "paths.run_name=r", "--out", str(out), "--json", "-q"]


def _two_ranks_and_one_process(args, tmp_path, capsys) -> tuple[dict, dict]:
    """The --json summaries of `args(out, 8) --nproc 2` (two gloo ranks) and of `args(out, 16)` in-process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run([sys.executable, "-m", "hftraining", *args(tmp_path / "ddp", 8), "--nproc", "2"],
                              capture_output=True, text=True, env=env, timeout=240)
    assert launched.returncode == 0, launched.stderr[-3000:]
    json_lines = [line for line in launched.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1                                      # rank 0 alone prints
    assert main(args(tmp_path / "one", 16)) == 0
    return json.loads(json_lines[0]), json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _same_training(ddp: dict, one: dict, ddp_dir: Path, one_dir: Path) -> None:
    """One run folder written once, recording 2 ranks and the global batch 16; the same final weights (float32
    sums in another order: close, not equal), the same best step and validation metrics."""
    assert [p.name for p in ddp_dir.parent.iterdir()] == ["r"]
    meta = json.loads((ddp_dir / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["global_batch_size"] == 16 and meta["status"] == "completed"
    a = load_file(ddp_dir / "last" / "state.safetensors")
    b = load_file(one_dir / "last" / "state.safetensors")
    for key in (k for k in b if k.startswith("model.")):
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    assert ddp["best_step"] == one["best_step"]
    for key in ("sharpe_ratio", "total_return"):
        assert ddp["validation"][key] == pytest.approx(one["validation"][key], rel=1e-3, abs=1e-6)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_with_the_global_batch(tmp_path, capsys):
    ddp, one = _two_ranks_and_one_process(_single_args, tmp_path, capsys)

    _same_training(ddp, one, Path(ddp["run_dir"]), Path(one["run_dir"]))
    pos_ddp = pd.read_csv(Path(ddp["report_dir"]) / "test_returns.csv")["position"].to_numpy()
    pos_one = pd.read_csv(Path(one["report_dir"]) / "test_returns.csv")["position"].to_numpy()
    np.testing.assert_allclose(pos_ddp, pos_one, atol=1e-4)


def _base_args(out: Path, batch: int) -> list[str]:
    return ["base", "--stocks", "AAA,BBB", "--source", "synthetic", "--config", TINY, "--no-finetune",
            "--set", "data.forecast_backend=none", "--set", "data.synthetic_bars=400", "--batch-size", str(batch),
            "--steps", "10", "--device", "cpu", "--seed", "3", "--set", "paths.run_name=r", "--out", str(out),
            "--json", "-q"]


@pytest.mark.slow
def test_base_on_two_gloo_ranks_equals_one_process_with_the_global_batch(tmp_path, capsys):
    ddp, one = _two_ranks_and_one_process(_base_args, tmp_path, capsys)

    ddp_dir, one_dir = Path(ddp["base_run"]), Path(one["base_run"])
    assert [p.name for p in ddp_dir.parent.iterdir()] == ["r"]       # one run folder, one report
    assert sorted(p.name for p in Path(ddp["report_dir"]).parent.iterdir()) == ["index.html", "r"]
    assert (Path(ddp["report_dir"]) / "metrics.json").is_file()
    meta = json.loads((ddp_dir / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["global_batch_size"] == 16 and meta["status"] == "completed"
    a = load_file(ddp_dir / "last" / "state.safetensors")
    b = load_file(one_dir / "last" / "state.safetensors")
    for key in (k for k in b if k.startswith("model.")):
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    a, b = load_file(ddp_dir / ckpt.WEIGHTS), load_file(one_dir / ckpt.WEIGHTS)     # the selected base weights
    assert a.keys() == b.keys()
    for key in b:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    for symbol in ("AAA", "BBB"):
        for key in ("sharpe_ratio", "total_return"):
            assert ddp["stocks"][symbol]["base"][key] == pytest.approx(one["stocks"][symbol]["base"][key],
                                                                       rel=1e-3, abs=1e-6)


def _portfolio_args(out: Path, batch: int) -> list[str]:
    return ["portfolio", "--pairs", "AAA,BBB", "--source", "synthetic", "--config", TINY,
            "--set", "data.forecast_backend=none", "--set", f"portfolio.batch_size={batch}", "--steps", "10",
            "--set", "training.eval_every=5", "--device", "cpu", "--seed", "3", "--set", "paths.run_name=r",
            "--out", str(out), "--json", "-q"]


@pytest.mark.slow
def test_portfolio_on_two_gloo_ranks_equals_one_process_with_the_global_batch(tmp_path, capsys):
    """The portfolio trains through trainer.fit, so torchrun splits each batch of episodes over the ranks."""
    ddp, one = _two_ranks_and_one_process(_portfolio_args, tmp_path, capsys)
    ddp, one = ddp["runs"][0], one["runs"][0]

    _same_training(ddp, one, Path(ddp["run_dir"]), Path(one["run_dir"]))
    assert sorted(p.name for p in Path(ddp["report_dir"]).parent.iterdir()) == ["index.html", "r"]     # one report
    for key in ("sharpe_ratio", "total_return"):
        assert ddp["test"][key] == pytest.approx(one["test"][key], rel=1e-3, abs=1e-6)
    w_ddp = pd.read_csv(Path(ddp["report_dir"]) / "weights.csv").drop(columns="date").to_numpy()
    w_one = pd.read_csv(Path(one["report_dir"]) / "weights.csv").drop(columns="date").to_numpy()
    np.testing.assert_allclose(w_ddp, w_one, atol=1e-4)


def test_ranks_slice_one_global_batch():
    x = torch.zeros(50, 3, 2)
    ends = np.array([[t, s] for t in range(10, 50) for s in range(3)])

    def draw(batch, rank, world):
        return Batches(x, x[..., 0], ends, 4, 2, torch.Generator().manual_seed(5)).sample(batch, rank, world)

    whole = draw(16, 0, 1)
    assert torch.equal(torch.cat([draw(8, 0, 2), draw(8, 1, 2)]), whole)
    assert torch.equal(draw(16, 0, 1), Batches(x, x[..., 0], ends, 4, 2, torch.Generator().manual_seed(5)).sample(16))


def _adamw(policy: str):
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(6))
    optimizer = torch.optim.AdamW([param], lr=0.1, weight_decay=0.1, fused=True)   # fused: found_inf support
    return param, optimizer, StepGuard(optimizer, torch.device("cpu"), policy, on_device=True)


def _state(param, optimizer):
    return [param.detach().clone()] + [v.clone() for v in optimizer.state[param].values()]


def _step(param, optimizer, guard, loss_value, step):
    param.grad = torch.full_like(param, loss_value) if not np.isfinite(loss_value) else torch.randn(6)
    assert guard.allows_step(torch.tensor(loss_value), step)        # the device path never asks the host
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def test_device_nan_guard_skips_the_whole_update():
    param, optimizer, guard = _adamw("skip")
    _step(param, optimizer, guard, 1.0, 0)
    before = _state(param, optimizer)
    _step(param, optimizer, guard, float("nan"), 1)                 # weights, moments and step count untouched
    assert all(torch.equal(a, b) for a, b in zip(before, _state(param, optimizer), strict=True))
    _step(param, optimizer, guard, 2.0, 2)                          # the next finite batch trains again
    assert not torch.equal(before[0], param.detach())
    assert int(optimizer.state[param]["step"]) == 2
    assert guard.collect() == (1, 2) and guard.collect() == (0, -1)


def test_device_nan_guard_stop_policy_freezes_until_checked():
    param, optimizer, guard = _adamw("stop")
    _step(param, optimizer, guard, 1.0, 0)
    before = _state(param, optimizer)
    _step(param, optimizer, guard, float("inf"), 1)
    _step(param, optimizer, guard, 1.0, 2)                          # latched: nothing moves after the first NaN
    assert all(torch.equal(a, b) for a, b in zip(before, _state(param, optimizer), strict=True))
    assert guard.collect() == (1, 2)


def _device_guard_and_poisoned_loss(monkeypatch, at_step: int) -> None:
    """fit() on CPU with the CUDA code path of the guard (fused AdamW + found_inf) and a NaN loss at one step."""

    class DeviceGuard(trainer.StepGuard):
        def __init__(self, optimizer, device, policy):
            for group in optimizer.param_groups:
                group["fused"], group["foreach"] = True, False
            super().__init__(optimizer, device, policy, on_device=True)

    monkeypatch.setattr(trainer, "StepGuard", DeviceGuard)
    poison_training_loss(monkeypatch, at_step)


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_fit_with_the_device_guard_keeps_the_nan_policy(monkeypatch, tmp_path, capsys, policy):
    _device_guard_and_poisoned_loss(monkeypatch, at_step=3)
    code = main(["single", "--config", TINY, "--set", "data.forecast_backend=none", "--stock", "DEMO", "-q",
                 "--out", str(tmp_path), "--steps", "6", "--set", "training.checkpoint_every=2",
                 "--set", "training.eval_every=2", "--set", f"training.nan_policy={policy}",
                 "--set", "paths.run_name=g"])
    err = capsys.readouterr().err
    run_dir = tmp_path / "models/finetuned/DEMO/g"
    if policy == "stop":        # noticed at the next check (step 4), reported at the step it happened
        assert code == 2 and "training loss became NaN/inf at step 3" in err
        assert ckpt.read_json(run_dir / "last" / "state.json")["step"] == 2
    else:
        assert code == 0, err
        assert "1 NaN/inf batches skipped" in err
        assert ckpt.read_json(run_dir / "metadata.json")["nan_skipped"] == 1
    for path in (run_dir / ckpt.WEIGHTS, run_dir / "last" / "state.safetensors"):
        assert all(torch.isfinite(t).all() for t in ckpt.load_tensors(path).values() if t.is_floating_point())


def test_torchrun_command_drops_nproc():
    command = distributed.torchrun_command(["single", "--nproc", "2", "--stock", "X", "--nproc=3", "--json"], 2)
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "hftraining", "single", "--stock", "X", "--json"]


def test_without_torchrun_everything_is_single_process():
    ctx = distributed.require_session()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled) == (0, 1, True, False)
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.on_main(lambda: 7) == 7
    module = torch.nn.Linear(2, 2)
    assert distributed.wrap(module, torch.device("cpu"), ctx) is module


def test_a_command_that_did_not_join_the_group_refuses_to_train(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="does not run under torchrun"):
        distributed.require_session("hftrain base")


def test_nproc_cannot_combine_with_walk_forward(capsys):
    assert main(["single", "--stock", "DEMO", "--walk-forward", "--nproc", "2"]) == 2
    assert "--nproc cannot be combined" in capsys.readouterr().err


def test_forecast_shards_split_the_symbols_over_one_shared_cache(tmp_path, capsys):
    args = ["forecast", "--stocks", "AAA", "BBB", "CCC", "--forecast-backend", "statistical", "--source", "synthetic",
            "--out", str(tmp_path), "--json"]
    shards = []
    for shard in ("0/2", "1/2"):
        assert main(args + ["--shard", shard]) == 0
        shards.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert [[row["symbol"] for row in s["symbols"]] for s in shards] == [["AAA", "CCC"], ["BBB"]]
    assert main(args) == 0                                          # the whole set now reads the shared cache
    whole = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(row["computed"] == 0 and row["cache_hits"] == row["windows"] for row in whole["symbols"])
    assert main(args + ["--shard", "2/2"]) == 2
    assert "--shard 2/2" in capsys.readouterr().err


def test_other_commands_refuse_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["ensemble", "--models", "a", "b"]) == 2
    assert "under torchrun only `hftrain single`" in capsys.readouterr().err


# --- two nodes (simulated on this machine) --------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _yahoo_base_args(out: Path, batch: int) -> list[str]:
    return ["base", "--stocks", "AAA", "BBB", "--source", "yahoo", "--config", TINY, "--no-finetune",
            "--set", "data.forecast_backend=statistical", "--set", "data.end=2021-12-31",
            "--batch-size", str(batch), "--steps", "10", "--device", "cpu", "--seed", "3",
            "--set", "paths.run_name=r", "--out", str(out), "--json", "-q"]


@pytest.mark.slow
def test_two_nodes_equal_one_process_and_download_once(tmp_path, monkeypatch, capsys):
    """Two torchrun launchers (--nnodes 2, one process each, c10d rendezvous on localhost) train a base
    model on a ragged Yahoo universe (AAA from 2019, BBB from 2020) like one process with the doubled
    batch; they share one --out, so rank 0 downloads (one batched call) and rank 1 reads its cache."""
    import fake_yahoo_main

    entry = Path(fake_yahoo_main.__file__)
    port, log = _free_port(), tmp_path / "downloads.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HFTRAIN_FAKE_YAHOO_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(entry.parent), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
         "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}",
         "--rdzv-id", "two-nodes", str(entry), *_yahoo_base_args(tmp_path / "shared", 8)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    json_lines = [line for out, _ in outputs for line in out.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1                                      # global rank 0 alone prints
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [{"rank": "0", "tickers": ["AAA", "BBB"]}]       # one batched download, by rank 0 only

    fake_yahoo_main.install(monkeypatch)
    assert main(_yahoo_base_args(tmp_path / "one", 16)) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    two = json.loads(json_lines[0])
    meta = json.loads((Path(two["base_run"]) / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["global_batch_size"] == 16
    assert meta["panel"]["decisions_per_symbol"]["AAA"]["train"] > meta["panel"]["decisions_per_symbol"]["BBB"]["train"]
    for name in ("last/state.safetensors", ckpt.WEIGHTS):           # same weights (CPU gloo, float32 sums)
        a, b = load_file(Path(two["base_run"]) / name), load_file(Path(one["base_run"]) / name)
        for key in (k for k in b if not k.startswith("optimizer.")):
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_ranks_that_built_different_data_stop_with_one_line(monkeypatch):
    monkeypatch.setattr(distributed, "context", lambda: distributed.Context(rank=1, world_size=2))

    def gather(values, value):                  # rank 0 built "abc"; this rank built `value`
        values[:] = ["abc", value]

    monkeypatch.setattr(distributed.dist, "all_gather_object", gather)
    distributed.agree("abc", "training data")
    with pytest.raises(UserError, match=r"^rank 1 built different training data than rank 0: .*shared --out"):
        distributed.agree("xyz", "training data")

"""Crashes and resume: kill -9 then --resume is bit-identical, NaN losses, concurrent runs.

The kill test runs real processes: a reference run, a run that receives SIGKILL at a random point
after a checkpoint, and `hftrain single --resume` on the killed run's folder. On CPU the resumed run
must end with the same bytes (best weights), the same final weights and optimizer state, the same
validation history, test metrics and TensorBoard scalars as the reference.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import NO_FORECAST, TINY
from nan_injection import poison_training_loss

from hftraining import atomic, trainer
from hftraining import checkpoint as ckpt
from hftraining.cli import main
from hftraining.errors import UserError
from hftraining.layout import claim_run_dir, new_run_id

REPO = Path(__file__).resolve().parents[1]


def hftrain(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """`python -m hftraining ARGS` as a real process (stdout/stderr to pipes unless given)."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "hftraining", *args], cwd=REPO, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kwargs)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- the training state is one atomic file -------------------------------------------------------

def tiny_training_objects(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    return model, optimizer, generator


def train_steps(model, optimizer, generator, n: int) -> None:
    for _ in range(n):
        x = torch.randn(8, 3, generator=generator)
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_counters_and_tensors_are_committed_together(tmp_path, monkeypatch):
    """A kill after the tensor file but before state.json must not pair step-6 tensors with step-3 counters."""
    model, optimizer, generator = tiny_training_objects(0)
    train_steps(model, optimizer, generator, 3)
    ckpt.save_training_state(tmp_path, model, optimizer, generator, {"step": 3, "best_value": 0.5})
    train_steps(model, optimizer, generator, 3)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between the two files")

    monkeypatch.setattr(atomic, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_training_state(tmp_path, model, optimizer, generator, {"step": 6, "best_value": 0.7})
    monkeypatch.undo()
    assert ckpt.read_json(tmp_path / "last" / "state.json")["step"] == 3          # stale sidecar

    fresh, fresh_opt, fresh_gen = tiny_training_objects(1)
    state = ckpt.load_training_state(tmp_path, fresh, fresh_opt, fresh_gen)
    assert state["step"] == 6 and state["best_value"] == 0.7
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(generator.get_state(), fresh_gen.get_state())
    # and both continue identically (dropout draws from the global RNG, which the load restored)
    restored = torch.get_rng_state()
    train_steps(model, optimizer, generator, 2)
    torch.set_rng_state(restored)
    train_steps(fresh, fresh_opt, fresh_gen, 2)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_weights_file_is_not_a_training_state(tmp_path):
    model, optimizer, generator = tiny_training_objects(0)
    (tmp_path / "last").mkdir()
    ckpt.save_tensors(tmp_path / "last" / "state.safetensors", model.state_dict())
    atomic.write_json(tmp_path / "last" / "state.json", {"step": 1})
    with pytest.raises(UserError, match="is not a training state"):
        ckpt.load_training_state(tmp_path, model, optimizer, generator)


# --- kill -9, then --resume ------------------------------------------------------------------------

KILL_SETTINGS = ["single", "--config", TINY, *NO_FORECAST, "--stock", "DEMO", "--json",
                 "--set", "training.max_steps=200",
                 "--set", "training.eval_every=15", "--set", "training.checkpoint_every=10",
                 "--set", "training.log_every=5", "--set", "model.dropout=0.1",
                 "--set", "training.early_stopping_patience=4"]


def scalars(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def kill_after_a_checkpoint(settings: list[str], root: Path, run_dir: Path, target: int, delay: float,
                            steps: int) -> None:
    """Start `hftrain SETTINGS --out root`, SIGKILL it `delay` s after its checkpoint reached `target`."""
    proc = hftrain(*settings, "--out", str(root), "-q", "--set", "paths.run_name=kill",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((run_dir / "last" / "state.json").read_text())["step"] >= target:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.005)
    time.sleep(delay)
    assert proc.poll() is None, "the run finished before it could be killed; raise the number of steps"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    on_disk = ckpt.read_json(run_dir / "last" / "state.json")["step"]
    assert target <= on_disk < steps
    assert ckpt.read_json(run_dir / "metadata.json")["status"] == "running"
    print(f"\nkilled at checkpoint target {target} + {delay:.2f}s (state on disk: step {on_disk}, reference "
          f"{steps} steps)")


def assert_resumed_like_the_reference(ref_dir: Path, run_dir: Path, resumed: dict, reference: dict,
                                      keys: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """Same best weights (bytes), final state (weights, Adam moments, RNG), summary, history and TensorBoard."""
    assert (run_dir / ckpt.WEIGHTS).read_bytes() == (ref_dir / ckpt.WEIGHTS).read_bytes()
    final_ref = ckpt.load_tensors(ref_dir / "last" / "state.safetensors")
    final_res = ckpt.load_tensors(run_dir / "last" / "state.safetensors")
    assert final_ref.keys() == final_res.keys()
    for key in final_ref:
        assert torch.equal(final_ref[key], final_res[key]), key
    for key in keys:
        assert resumed[key] == reference[key], key
    meta_ref, meta_res = ckpt.read_json(ref_dir / "metadata.json"), ckpt.read_json(run_dir / "metadata.json")
    assert meta_res["status"] == "completed"
    for key in ("history", "stopped_early", "best_step", "nan_skipped"):
        assert meta_res[key] == meta_ref[key], key
    assert (ckpt.read_json(Path(resumed["report_dir"]) / "metrics.json")["model"]
            == ckpt.read_json(Path(reference["report_dir"]) / "metrics.json")["model"])
    for tag in tags:                                        # TensorBoard: nothing lost, nothing doubled
        assert scalars(Path(resumed["tensorboard_dir"]), tag) == scalars(Path(reference["tensorboard_dir"]), tag)


def kill_rng() -> random.Random:
    return random.Random(int(os.environ.get("HFTRAIN_KILL_SEED", time.time_ns())))


@pytest.mark.slow
def test_kill_9_then_resume_is_bit_identical(tmp_path):
    code, out, err = finish(hftrain(*KILL_SETTINGS, "--out", str(tmp_path / "ref"), "-q",
                                    "--set", "paths.run_name=ref"))
    assert code == 0, err
    reference = json.loads(out.strip().splitlines()[-1])
    steps = reference["steps_done"]
    # Half the run or more left after the target, and a short delay: even a loaded machine cannot finish
    # the remaining steps (and pass the last checkpoint) before the kill lands.
    checkpoints = list(range(10, steps // 2, 10))
    assert checkpoints, f"the reference stopped at step {steps}: too early to kill after a checkpoint"
    rng = kill_rng()
    target, delay = rng.choice(checkpoints), rng.uniform(0.0, 0.05)
    run_dir = tmp_path / "killed" / "models" / "finetuned" / "DEMO" / "kill"
    kill_after_a_checkpoint(KILL_SETTINGS, tmp_path / "killed", run_dir, target, delay, steps)

    # resume from another directory, with the progress bar on
    code, out, err = finish(hftrain("single", "--resume", str(run_dir), "--json"))
    assert code == 0, err
    resumed = json.loads(out.strip().splitlines()[-1])
    assert_resumed_like_the_reference(Path(reference["run_dir"]), run_dir, resumed, reference,
                                      ("best_step", "steps_done", "validation", "test", "buy_and_hold"),
                                      ("train/loss", "profit/sharpe_ratio"))


PORTFOLIO_KILL_SETTINGS = ["portfolio", "--pairs", "AAA,BBB", "--config", TINY, *NO_FORECAST, "--source", "synthetic",
                           "--json", "--set", "portfolio.max_steps=300", "--set", "training.eval_every=25",
                           "--set", "training.checkpoint_every=10", "--set", "training.log_every=5",
                           "--set", "model.dropout=0.1", "--set", "training.early_stopping_patience=0",
                           "--set", "portfolio.prior_candidate=true"]


@pytest.mark.slow
def test_portfolio_kill_9_then_resume_is_bit_identical(tmp_path):
    """The portfolio trains through the same loop: killed after a checkpoint, `hftrain portfolio --resume`
    ends with the same bytes, optimizer state, history, test metrics and TensorBoard scalars as a run never killed."""
    code, out, err = finish(hftrain(*PORTFOLIO_KILL_SETTINGS, "--out", str(tmp_path / "ref"), "-q",
                                    "--set", "paths.run_name=ref"))
    assert code == 0, err
    reference = json.loads(out.strip().splitlines()[-1])["runs"][0]
    steps = reference["steps_done"]
    rng = kill_rng()
    target, delay = rng.choice(range(10, steps // 2, 10)), rng.uniform(0.0, 0.2)
    run_dir = tmp_path / "killed" / "models" / "finetuned" / "portfolio_pairs" / "AAA_BBB" / "kill"
    kill_after_a_checkpoint(PORTFOLIO_KILL_SETTINGS, tmp_path / "killed", run_dir, target, delay, steps)

    code, out, err = finish(hftrain("portfolio", "--resume", str(run_dir), "--json"))
    assert code == 0, err
    resumed = json.loads(out.strip().splitlines()[-1])["runs"][0]
    assert_resumed_like_the_reference(Path(reference["run_dir"]), run_dir, resumed, reference,
                                      ("best_step", "steps_done", "validation", "test", "baselines", "mean_weights"),
                                      ("train/loss", "profit/sharpe_ratio", "portfolio/turnover"))
    assert ckpt.read_json(run_dir / "metadata.json")["history"][0]["step"] == 0     # the prior, evaluated once
    assert (pd.read_csv(Path(resumed["report_dir"]) / "weights.csv").drop(columns="date").to_numpy().tolist()
            == pd.read_csv(Path(reference["report_dir"]) / "weights.csv").drop(columns="date").to_numpy().tolist())


def test_resume_keeps_an_early_stop_and_refuses_changed_data(monkeypatch, tmp_path, capsys):
    """Resuming a run that stopped early trains no further; resuming on different bars is one line, exit 2."""
    from fake_runs import write_csv

    monkeypatch.setattr(trainer, "_improved", lambda metric, value, best: best is None)   # only eval 1 improves
    csv = write_csv(tmp_path / "csv", "DEMO", bars=600)
    code = main(["single", "--config", TINY, *NO_FORECAST, "--stock", "DEMO", "--data-dir", str(csv.parent),
                 "--out", str(tmp_path / "runs"), "-q", "--json", "--steps", "20", "--set", "training.eval_every=2",
                 "--set", "training.early_stopping_patience=1", "--set", "paths.run_name=early"])
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and first["steps_done"] == 4 and first["best_step"] == 2
    run_dir = Path(first["run_dir"])
    state = (run_dir / "last" / "state.safetensors").read_bytes()

    trials = (tmp_path / "runs" / "trials.jsonl").read_bytes()
    assert main(["single", "--resume", str(run_dir), "-q", "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["already_finished"] and again["status"] == "completed"
    assert again["steps_done"] == 4 and again["best_step"] == 2 and again["test"] == first["test"]
    assert (run_dir / "last" / "state.safetensors").read_bytes() == state
    assert (tmp_path / "runs" / "trials.jsonl").read_bytes() == trials      # not registered twice

    ckpt.update_metadata(run_dir, status="running")              # as if interrupted before it finished
    bars = pd.read_csv(csv)
    bars.iloc[:-40].to_csv(csv, index=False)                     # the CSV lost its last 40 bars since
    assert main(["single", "--resume", str(run_dir), "-q"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--resume {run_dir}: the data changed since this run started (train was" in line
    print(f"\nMESSAGE | resume on changed data | {line} | exit 2")
    assert (run_dir / "last" / "state.safetensors").read_bytes() == state


# --- NaN / inf losses -----------------------------------------------------------------------------



def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(monkeypatch, tmp_path, capsys):
    poison_training_loss(monkeypatch, at_step=5)
    code = main(["single", "--config", TINY, *NO_FORECAST, "--stock", "DEMO", "--out", str(tmp_path), "-q",
                 "--steps", "8", "--set", "training.checkpoint_every=2", "--set", "training.eval_every=2",
                 "--set", "paths.run_name=nan"])
    err = capsys.readouterr().err
    assert code == 2
    line = one_error_line(err)
    run_dir = tmp_path / "models/finetuned/DEMO/nan"
    assert "training loss became NaN/inf at step 5" in line and str(run_dir) in line
    print(f"\nMESSAGE | NaN loss (nan_policy=stop) | {line} | exit 2")
    assert ckpt.read_json(run_dir / "last" / "state.json")["step"] == 4
    for path in (run_dir / ckpt.WEIGHTS, run_dir / "last" / "state.safetensors"):
        assert all(torch.isfinite(t).all() for t in ckpt.load_tensors(path).values() if t.is_floating_point())


def test_nan_policy_skip_skips_counts_and_logs(monkeypatch, tmp_path, capsys):
    poison_training_loss(monkeypatch, at_step=4)
    code = main(["single", "--config", TINY, *NO_FORECAST, "--stock", "DEMO", "--out", str(tmp_path), "-q",
                 "--steps", "4", "--set", "training.checkpoint_every=2", "--set", "training.eval_every=2",
                 "--set", "training.nan_policy=skip", "--set", "paths.run_name=skip", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert any(line.startswith("WARNING:") and "NaN/inf loss" in line and "skipped (1 so far)" in line
               for line in captured.err.splitlines()), captured.err
    run_dir = tmp_path / "models/finetuned/DEMO/skip"
    meta = ckpt.read_json(run_dir / "metadata.json")
    assert meta["nan_skipped"] == 1 and meta["steps_done"] == 4 and meta["status"] == "completed"
    assert ckpt.read_json(run_dir / "last" / "state.json")["step"] == 4   # the skipped last step still checkpoints
    assert [h["step"] for h in meta["history"]] == [2, 4]                 # ... and still evaluates
    final = ckpt.load_tensors(run_dir / "last" / "state.safetensors")
    assert all(torch.isfinite(t).all() for t in final.values() if t.is_floating_point())


# --- concurrent runs ----------------------------------------------------------------------------

def test_claiming_a_run_dir_is_exclusive_across_threads(tmp_path):
    path = tmp_path / "models" / "finetuned" / "DEMO" / "same"
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def claim() -> None:
        barrier.wait()
        try:
            claim_run_dir(path)
            outcomes.append("won")
        except UserError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1
    assert all("already exists: pick another --set paths.run_name" in o for o in outcomes if o != "won")
    # run ids made in the same second differ by a 24-bit random suffix (50 ids collide with p < 1e-4)
    assert len({new_run_id() for _ in range(50)}) == 50


def test_two_processes_started_together(tmp_path):
    """Same paths.run_name: one runs, the other gets one clear line. No run name: two distinct folders."""
    common = ["single", "--config", TINY, *NO_FORECAST, "--stock", "DEMO", "--out", str(tmp_path), "-q",
              "--steps", "2", "--json"]
    procs = [hftrain(*common, "--set", "paths.run_name=same") for _ in range(2)]
    procs += [hftrain(*common) for _ in range(2)]
    results = [finish(p) for p in procs]
    same, unnamed = results[:2], results[2:]
    assert sorted(code for code, _, _ in same) == [0, 2], [err for _, _, err in same]
    loser = next(err for code, _, err in same if code == 2)
    line = one_error_line(loser)
    assert f"{tmp_path}/models/finetuned/DEMO/same already exists: pick another --set paths.run_name" in line
    print(f"\nMESSAGE | same run name, two processes | {line} | exit 2")
    assert [code for code, _, _ in unnamed] == [0, 0], [err for _, _, err in unnamed]
    dirs = {json.loads(out.strip().splitlines()[-1])["run_dir"] for _, out, _ in unnamed}
    assert len(dirs) == 2
    runs = sorted(p.name for p in (tmp_path / "models/finetuned/DEMO").iterdir())
    assert len(runs) == 3 and "same" in runs
    trials = [json.loads(line) for line in (tmp_path / "trials.jsonl").read_text().splitlines()]
    assert sorted(t["run_id"] for t in trials) == runs                    # concurrent appends, none torn


def test_reused_run_name_for_another_symbol_does_not_overwrite_its_report(tmp_path, capsys):
    """reports/<run> is shared by every symbol: the second run with that name must refuse, not overwrite."""
    args = ["single", "--config", TINY, *NO_FORECAST, "--out", str(tmp_path), "-q", "--steps", "2",
            "--set", "paths.run_name=shared"]
    assert main([*args, "--stock", "DEMO"]) == 0
    capsys.readouterr()
    report = tmp_path / "reports" / "shared" / "metrics.json"
    before = report.read_bytes()
    assert main([*args, "--stock", "OTHER"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{tmp_path}/reports/shared already exists" in line
    assert report.read_bytes() == before
    assert not (tmp_path / "models/finetuned/OTHER/shared").exists()

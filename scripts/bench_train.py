"""Benchmark the training loop: hftraining's trainer against a bare PyTorch loop on the same model and data.

In one process and in alternating rounds (so machine noise hits both): the trainer (`trainer.fit`,
timed between two of its steps through the on_step hook, so setup is left out; evaluation and
checkpoint intervals lie beyond the timed window) and a bare loop (gather, forward, loss, backward,
AdamW step, nothing else) over the same model, batch and device-resident data. Reports samples/s
of each (medians over rounds), their ratio (goal on CPU: trainer >= 0.9x bare) and a step-time
breakdown of the trainer's step (gather, forward + loss, backward, optimizer = NaN guard + clip +
step, logging). Writes <out>/bench/bench_train.json.

    python scripts/bench_train.py [--config configs/default.yaml] [--rounds 5] [--steps 40] [--out runs]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402

from hftraining import distributed  # noqa: E402
from hftraining.atomic import write_json  # noqa: E402
from hftraining.config import Config, load_config  # noqa: E402
from hftraining.data.panel import window_ends  # noqa: E402
from hftraining.model import build_model, count_parameters  # noqa: E402
from hftraining.objective import objective_from_config  # noqa: E402
from hftraining.position_task import Batches, device_tensors  # noqa: E402
from hftraining.tensorboard_log import RunLogger  # noqa: E402
from hftraining.train_with_profit import Prepared, prepare  # noqa: E402
from hftraining.trainer import StepGuard, TrainingJob, fit, resolve_device  # noqa: E402


class _WindowTimed(Exception):
    """Raised from on_step once the timed window is over: the run's final evaluation is not benchmarked."""


def bench_config(path: str | Path, device: str, updates: dict | None = None) -> Config:
    """The config under test on a synthetic market with no forecaster (forecasts are benchmarked elsewhere)."""
    return load_config(path, None, {"data.source": "synthetic", "data.forecast_backend": "none",
                                    "training.device": device, **(updates or {})})


def prepare_data(config: Config, n_symbols: int, root: Path) -> Prepared:
    config = config.model_copy(deep=True)
    config.paths.root = str(root)
    return prepare([f"BENCH{i}" for i in range(n_symbols)], config, progress=False)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mark(marks: list[float], device: torch.device) -> None:
    synchronize(device)
    marks.append(time.perf_counter())


def time_trainer(config: Config, data: Prepared, warmup: int, steps: int, workdir: Path) -> float:
    """Seconds for `steps` optimizer steps of `fit`, after `warmup` steps (compile, allocator, caches)."""
    cfg = config.model_copy(deep=True)
    cfg.training.max_steps = warmup + steps + 1            # the window ends before the final evaluation
    cfg.training.eval_every = cfg.training.checkpoint_every = 10**9
    device = resolve_device(cfg.training.device)
    marks: dict[int, float] = {}

    def on_step(step: int) -> None:
        if step in (warmup, warmup + steps):
            synchronize(device)
            marks[step] = time.perf_counter()
        if step == warmup + steps:
            raise _WindowTimed

    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    job = TrainingJob(config=cfg, panel=data.panel, splits=data.splits, scaler=data.scaler, run_dir=run_dir,
                      tensorboard_dir=run_dir / "tb", kind="bench", learning_rate=cfg.training.learning_rate,
                      max_steps=cfg.training.max_steps, progress=False, on_step=on_step)
    try:
        fit(job)
    except _WindowTimed:
        pass
    return marks[warmup + steps] - marks[warmup]


def _setup(config: Config, data: Prepared):
    """What both hand-written loops share with the trainer: model, AdamW, device tensors, batches."""
    tcfg = config.training
    device = resolve_device(tcfg.device)
    torch.manual_seed(tcfg.seed)
    model = build_model(len(data.panel.feature_names), config.data.context_length, config.data.horizon,
                        config.model).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.learning_rate, weight_decay=tcfg.weight_decay,
                                  fused=device.type == "cuda")
    x, returns = device_tensors(data, device)
    ends = window_ends(data.splits.train, len(data.panel.symbols))
    batches = Batches(x, returns, ends, config.data.context_length, config.data.horizon,
                      torch.Generator().manual_seed(tcfg.seed))
    forward = torch.compile(model) if tcfg.compile else model
    return device, model, forward, optimizer, batches


def time_bare(config: Config, data: Prepared, warmup: int, steps: int) -> float:
    """Seconds for `steps` steps of the plainest loop: index gather, forward, loss, backward, step."""
    device, model, forward, optimizer, batches = _setup(config, data)
    amp = config.training.amp and device.type == "cuda"
    offsets, x, returns, ends = batches.offsets, batches.x, batches.returns, batches.ends
    generator, batch_size = torch.Generator().manual_seed(config.training.seed), config.training.batch_size

    def step() -> None:
        window = ends[torch.randint(len(ends), (batch_size,), generator=generator).to(device)]
        t_idx, symbol = window[:, :1] - offsets, window[:, 1:2]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = forward(x[t_idx, symbol])
        traded = out.positions.float() * batches.scale[t_idx, symbol]      # risk sizing, as the trainer does
        loss = objective_from_config(traded, returns[t_idx, symbol], config).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - start


def breakdown(config: Config, data: Prepared, warmup: int, steps: int, workdir: Path) -> dict:
    """Milliseconds per step of each phase of the trainer's step, timed with a device sync between phases."""
    device, model, forward, optimizer, batches = _setup(config, data)
    tcfg = config.training
    amp = tcfg.amp and device.type == "cuda"
    guard = StepGuard(optimizer, device, tcfg.nan_policy)
    logger = RunLogger(workdir / "breakdown_tb")
    phases = dict.fromkeys(["gather", "forward_loss", "backward", "optimizer", "logging"], 0.0)
    try:
        for step in range(warmup + steps):
            marks = [time.perf_counter()]
            ends = batches.sample(tcfg.batch_size)
            xb, rb, _ = batches.gather(ends)
            _mark(marks, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = forward(xb)
            loss = objective_from_config(out.positions.float() * batches.scales(ends), rb, config).loss
            _mark(marks, device)
            loss.backward()
            _mark(marks, device)
            if guard.allows_step(loss.detach(), step):
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _mark(marks, device)
            if (step + 1) % tcfg.log_every == 0:
                logger.scalar("train/loss", distributed.mean(loss.detach()).item(), step + 1)
                logger.scalar("train/learning_rate", tcfg.learning_rate, step + 1)
            _mark(marks, device)
            if step >= warmup:
                for name, (a, b) in zip(phases, zip(marks, marks[1:], strict=False), strict=True):
                    phases[name] += b - a
    finally:
        logger.close()
    return {name: 1e3 * seconds / steps for name, seconds in phases.items()}


def machine_info() -> dict:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    info = {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "load_average_1m": load}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--symbols", type=int, default=4, help="synthetic symbols in the panel")
    parser.add_argument("--rounds", type=int, default=5, help="alternating trainer/bare rounds")
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each window")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on CPU (default 1: on a shared machine more threads mostly measure "
                             "the scheduler; 0 = torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "runs"), help="JSON goes to <out>/bench/bench_train.json")
    args = parser.parse_args(argv)
    config = bench_config(args.config, args.device)
    if args.threads and resolve_device(config.training.device).type == "cpu":
        torch.set_num_threads(args.threads)
    samples_per_step = config.training.batch_size * config.training.grad_accum_steps
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = prepare_data(config, args.symbols, work / "root")
        for r in range(args.rounds):
            # ABBA order: a slow drift of the machine's load does not favour either loop
            order = ["trainer", "bare"] if r % 2 == 0 else ["bare", "trainer"]
            seconds = {}
            for name in order:
                if name == "trainer":
                    seconds[name] = time_trainer(config, data, args.warmup, args.steps, work / "runs")
                else:
                    seconds[name] = time_bare(config, data, args.warmup, args.steps)
            rounds.append({f"{k}_samples_per_s": samples_per_step * args.steps / v for k, v in seconds.items()}
                          | {"ratio": seconds["bare"] / seconds["trainer"]})
            print(f"round {r + 1}/{args.rounds}: trainer {rounds[-1]['trainer_samples_per_s']:9,.0f} samples/s, "
                  f"bare {rounds[-1]['bare_samples_per_s']:9,.0f} samples/s, ratio {rounds[-1]['ratio']:.3f}",
                  flush=True)
        phases = breakdown(config, data, args.warmup, args.steps, work)
        n_params = count_parameters(build_model(len(data.panel.feature_names), config.data.context_length,
                                                config.data.horizon, config.model))

    trainer = statistics.median(r["trainer_samples_per_s"] for r in rounds)
    bare = statistics.median(r["bare_samples_per_s"] for r in rounds)
    ratio = statistics.median(r["ratio"] for r in rounds)
    total = sum(phases.values())
    print(f"\nmedian of {args.rounds} rounds ({args.steps} steps of {samples_per_step} windows each):")
    print(f"  trainer {trainer:,.0f} samples/s   bare loop {bare:,.0f} samples/s   "
          f"ratio {ratio:.3f} (median of per-round ratios; goal >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")
    print("  trainer step breakdown: " + ", ".join(f"{k} {v:.2f} ms ({100 * v / total:.0f}%)"
                                                    for k, v in phases.items()) + f"; total {total:.2f} ms")
    info = machine_info()
    print(f"  {info['cpus']} CPUs, {info['torch_threads']} torch threads, load average {info['load_average_1m']}")
    report = {"config": str(args.config), "device": config.training.device, "symbols": args.symbols,
              "model": {"hidden_size": config.model.hidden_size, "num_layers": config.model.num_layers,
                        "context_length": config.data.context_length, "parameters": n_params},
              "batch_size": config.training.batch_size, "grad_accum_steps": config.training.grad_accum_steps,
              "steps_per_round": args.steps, "warmup_steps": args.warmup, "rounds": rounds,
              "trainer_samples_per_s": trainer, "bare_samples_per_s": bare, "ratio": ratio,
              "goal_ratio_ge_0_9": ratio >= 0.9, "breakdown_ms_per_step": phases, "machine": info}
    path = write_json(Path(args.out) / "bench" / "bench_train.json", report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

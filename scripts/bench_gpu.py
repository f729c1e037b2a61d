"""Measure training throughput and model-FLOPs utilisation (MFU) of configs/large.yaml on one GPU.

For the trainer itself (`trainer.fit`: bf16 autocast, fused AdamW, TF32, device-side NaN guard),
eager and with torch.compile: samples/s, tokens/s and MFU = 6 * parameters * tokens / second /
peak bf16 FLOP/s (tokens = windows * context length; the 6N rule counts the matmuls of forward and
backward and leaves the attention scores out, a few per cent at context 128). Takes about 2-3
minutes on an H100/H200 (most of it compiling). `--smoke` runs tiny sizes on CPU in seconds (compile
with dynamo's eager backend), so the script stays tested. Writes <out>/bench/bench_gpu.json.

    python scripts/bench_gpu.py [--peak-flops 989e12] [--steps 200] [--batch-size 256] [--out runs]
    python scripts/bench_gpu.py --smoke --out /tmp/bench
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path[:0] = [str(SCRIPTS.parent), str(SCRIPTS)]  # run from a checkout without installing

import torch  # noqa: E402
from bench_train import bench_config, machine_info, prepare_data, time_trainer  # noqa: E402

from hftraining.atomic import write_json  # noqa: E402
from hftraining.model import build_model, count_parameters  # noqa: E402

H100_BF16_DENSE = 989e12


def measure(args, device: str, updates: dict):
    """Samples/s and MFU of each variant (eager, compile) of the trainer on one synthetic panel."""
    base = bench_config(args.config, device, updates)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(base, args.symbols, Path(tmp) / "root")
        n_params = count_parameters(build_model(len(data.panel.feature_names), base.data.context_length,
                                                base.data.horizon, base.model))
        tokens_per_step = base.training.batch_size * base.training.grad_accum_steps * base.data.context_length
        for variant in args.variants.split(","):
            config = base.model_copy(deep=True)
            config.training.compile = variant == "compile"
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            seconds = time_trainer(config, data, args.warmup, args.steps, Path(tmp) / variant)
            flops = 6 * n_params * tokens_per_step * args.steps / seconds
            results[variant] = {
                "samples_per_s": config.training.batch_size * config.training.grad_accum_steps * args.steps / seconds,
                "tokens_per_s": tokens_per_step * args.steps / seconds, "ms_per_step": 1e3 * seconds / args.steps,
                "model_tflops_per_s": flops / 1e12, "mfu": flops / args.peak_flops,
                "wall_s_including_warmup": time.perf_counter() - start,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
            r = results[variant]
            print(f"{variant:8s} {r['samples_per_s']:10,.0f} samples/s  {r['tokens_per_s']:12,.0f} tokens/s  "
                  f"{r['ms_per_step']:7.2f} ms/step  {r['model_tflops_per_s']:7.2f} TFLOP/s  "
                  f"MFU {100 * r['mfu']:.1f}%  (wall {r['wall_s_including_warmup']:.0f} s)", flush=True)
    return results, n_params, tokens_per_step, base


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(SCRIPTS.parent / "configs" / "large.yaml"))
    parser.add_argument("--peak-flops", type=float, default=H100_BF16_DENSE,
                        help="peak dense bf16 FLOP/s of the GPU (default 989e12: H100/H200 SXM)")
    parser.add_argument("--steps", type=int, default=200, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation happens here)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per step (default: the config's)")
    parser.add_argument("--symbols", type=int, default=8, help="synthetic symbols in the panel")
    parser.add_argument("--variants", default="eager,compile", help="comma list of eager, compile")
    parser.add_argument("--smoke", action="store_true", help="tiny config on CPU, a few steps (for tests)")
    parser.add_argument("--out", default=str(SCRIPTS.parent / "runs"), help="JSON goes to <out>/bench/bench_gpu.json")
    args = parser.parse_args(argv)

    updates = {"training.amp": True}
    if args.batch_size:
        updates["training.batch_size"] = args.batch_size
    if args.smoke:
        args.config, args.steps, args.warmup, args.symbols = str(SCRIPTS.parent / "configs" / "tiny.yaml"), 3, 1, 1
    elif not torch.cuda.is_available():
        print("no CUDA device: run with --smoke on a CPU", file=sys.stderr)
        return 2
    device = "cpu" if args.smoke else "cuda"
    compile_ = torch.compile
    if args.smoke:      # inductor needs minutes on a CPU; dynamo's eager backend runs the same path in seconds
        torch.compile = lambda model, **kw: compile_(model, **{"backend": "eager", **kw})
    try:
        results, n_params, tokens_per_step, base = measure(args, device, updates)
    finally:
        torch.compile = compile_
    report = {"config": args.config, "smoke": args.smoke, "device": device, "parameters": n_params,
              "batch_size": base.training.batch_size, "context_length": base.data.context_length,
              "tokens_per_step": tokens_per_step, "steps": args.steps, "warmup": args.warmup,
              "peak_flops": args.peak_flops, "results": results, "machine": machine_info()}
    path = write_json(Path(args.out) / "bench" / "bench_gpu.json", report)
    print(f"{n_params:,} parameters, {tokens_per_step:,} tokens/step, peak {args.peak_flops:.3g} FLOP/s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

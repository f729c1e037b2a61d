"""Benchmark the forecast-feature path on CPU: batching speedup, statistical throughput, cache hits.

    python scripts/bench_forecasts.py [--out runs/bench/bench_forecasts.json] [--windows 256] [--threads N]

Uses the tiny random-weight models from tests/tiny_models.py (no downloads), so the numbers measure
the machinery (batching, rolling, caching), not a real model's cost. Goals: batched Chronos-Bolt
>= 20x faster than one window at a time; statistical >= 1e6 windows/s; a cache hit <= 5% of the
first run. Prints a table and writes the JSON file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HFTRAIN_TOTO_ALLOW_CPU", "1")  # tiny Toto on CPU, for the benchmark only

import numpy as np  # noqa: E402 (sys.path is set above)
import torch  # noqa: E402
from tiny_models import random_prices, save_tiny_chronos_bolt, save_tiny_toto  # noqa: E402

from hftraining.atomic import write_json  # noqa: E402
from hftraining.config import DataConfig  # noqa: E402
from hftraining.forecasting import forecast_features  # noqa: E402
from hftraining.forecasting.base import load_backend  # noqa: E402

L, H = 256, 5


def median_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def batching_speedup(data: DataConfig, windows: int) -> dict:
    """Same windows through the backend in batches of forecast_batch_size vs one at a time."""
    backend, reason = load_backend(data)
    assert reason is None, reason
    contexts = np.lib.stride_tricks.sliding_window_view(random_prices(windows + L - 1).astype(np.float32), L)
    batch = data.forecast_batch_size

    def batched():
        for lo in range(0, len(contexts), batch):
            backend.forecast(contexts[lo : lo + batch])

    def single():
        for i in range(len(contexts)):
            backend.forecast(contexts[i : i + 1])

    batched()  # warm-up
    t_batched, t_single = median_seconds(batched), median_seconds(single, repeats=1)
    return {
        "windows": windows,
        "batch_size": batch,
        "batched_ms_per_window": 1e3 * t_batched / windows,
        "single_ms_per_window": 1e3 * t_single / windows,
        "speedup": t_single / t_batched,
    }


def statistical_throughput(bars: int) -> dict:
    data = DataConfig(forecast_backend="statistical", forecast_context_length=L, toto_horizon=H)
    backend, _ = load_backend(data)
    prices = 100 * np.exp(
        np.cumsum(np.random.default_rng(1).normal(0.0, 0.01, bars))
    )  # no drift: no overflow
    contexts = np.lib.stride_tricks.sliding_window_view(prices.astype(np.float32), L)

    def per_window():
        for lo in range(0, len(contexts), backend.batch_size):
            backend.forecast(contexts[lo : lo + backend.batch_size])

    t_backend = median_seconds(per_window)
    t_features = median_seconds(lambda: forecast_features("BENCH", prices, data, None, progress=False))
    windows = len(contexts)
    return {
        "windows": windows,
        "context": L,
        "per_window_formula_windows_per_s": windows / t_backend,
        "forecast_features_windows_per_s": windows / t_features,
    }


def cache_hit_fraction(data: DataConfig, bars: int, cache_dir: Path) -> dict:
    prices = random_prices(bars, seed=2)
    first = forecast_features("BENCH", prices, data, cache_dir, progress=False)
    t_hit = median_seconds(lambda: forecast_features("BENCH", prices, data, cache_dir, progress=False))
    second = forecast_features("BENCH", prices, data, cache_dir, progress=False)
    assert second.info["computed"] == 0 and second.info["cache_hits"] == first.info["windows"]
    return {
        "backend": first.backend,
        "windows": first.info["windows"],
        "first_s": first.info["seconds"],
        "cache_hit_s": t_hit,
        "fraction": t_hit / first.info["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "bench_forecasts.json"))
    parser.add_argument("--windows", type=int, default=256, help="windows for the batching comparisons")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bolt, toto = save_tiny_chronos_bolt(tmp / "bolt"), save_tiny_toto(tmp / "toto")
        bolt_data = DataConfig(
            forecast_backend="chronos",
            chronos_model_id=str(bolt),
            forecast_context_length=L,
            toto_horizon=H,
            forecast_batch_size=256,
        )
        toto_data = DataConfig(
            forecast_backend="toto",
            toto_model_id=str(toto),
            toto_mode="analytic",
            forecast_context_length=L,
            toto_horizon=H,
            forecast_batch_size=256,
        )
        results = {
            "machine": {
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "load_average": os.getloadavg(),
                "torch": torch.__version__,
            },
            "chronos_bolt_tiny": batching_speedup(bolt_data, args.windows),
            "toto_tiny_analytic_cpu": batching_speedup(toto_data, args.windows),
            "statistical": statistical_throughput(500_000),
            "cache_hit_chronos_bolt_tiny": cache_hit_fraction(bolt_data, 2_000, tmp / "cache"),
        }
    results["goals"] = {
        "chronos_bolt_speedup_ge_20": results["chronos_bolt_tiny"]["speedup"] >= 20,
        "statistical_ge_1e6_windows_per_s": results["statistical"]["forecast_features_windows_per_s"] >= 1e6,
        "cache_hit_le_5_percent": results["cache_hit_chronos_bolt_tiny"]["fraction"] <= 0.05,
    }
    for name in ("chronos_bolt_tiny", "toto_tiny_analytic_cpu"):
        r = results[name]
        print(
            f"{name:26s} batched {r['batched_ms_per_window']:.3f} ms/win, single {r['single_ms_per_window']:.2f}"
            f" ms/win, speedup {r['speedup']:.1f}x"
        )
    s = results["statistical"]
    print(
        f"{'statistical':26s} {s['forecast_features_windows_per_s']:,.0f} windows/s (forecast_features, prefix "
        f"sums), {s['per_window_formula_windows_per_s']:,.0f} windows/s (per-window contexts), L={L}"
    )
    c = results["cache_hit_chronos_bolt_tiny"]
    print(
        f"{'cache hit (bolt tiny)':26s} {c['cache_hit_s'] * 1e3:.1f} ms vs first run {c['first_s'] * 1e3:.0f} ms "
        f"= {100 * c['fraction']:.1f}% ({c['windows']} windows)"
    )
    print(
        f"goals met: {results['goals']}  (torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f})"
    )
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Benchmark the evaluation path: ProfitTracker.run plus its metrics on 1e6+ random daily bars.

Measures bar-updates per second without stops (the vectorised path; goal >= 1e7/s) and with
stop-loss/take-profit (the sequential kernel; goal ~1e6 bars in about a second), and writes the
figures to <out>/bench/bench_eval.json.

    python scripts/bench_eval.py [--bars 1000000] [--repeats 5] [--out runs]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hftraining import tracker
from hftraining.atomic import write_json
from hftraining.tracker import ProfitTracker


def random_bars(n: int, seed: int = 0):
    """A random-walk OHLC series and sticky positions in {-1, -0.5, 0, 0.5, 1}."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.015, n)))
    open_ = np.concatenate(([close[0]], close[:-1] * np.exp(rng.normal(0, 0.005, n - 1))))
    high = np.maximum(open_, close) * (1 + rng.exponential(0.006, n))
    low = np.minimum(open_, close) * (1 - rng.exponential(0.006, n))
    change = rng.random(n) < 0.2  # a new target on about one bar in five
    levels = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], n)
    positions = levels[np.maximum.accumulate(np.where(change, np.arange(n), 0))]
    return positions, close, high, low, open_


def timed(fn, repeats: int) -> tuple[dict, object]:
    """Best and median wall time of `repeats` calls after one warm-up call (JIT compile, caches).

    The best is the code's speed; the median also shows what other load on the machine cost.
    """
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "median_seconds": statistics.median(times)}, result


def figure(timing: dict, n: int, **extra) -> dict:
    return {**timing, "bars_per_second": n / timing["seconds"],
            "median_bars_per_second": n / timing["median_seconds"], **extra}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="runs", help="output root; JSON goes to <out>/bench/bench_eval.json")
    parser.add_argument("--skip-interpreted", action="store_true",
                        help="do not time the interpreted (no-numba) stop kernel")
    args = parser.parse_args(argv)

    n = args.bars
    positions, close, high, low, open_ = random_bars(n)
    plain = ProfitTracker()
    stops = ProfitTracker(stop_loss=0.02, take_profit=0.04)

    figures = {}
    timing, res = timed(lambda: plain.run(positions, close), args.repeats)
    figures["no_stops"] = figure(timing, n, trades=len(res.trades), sharpe_ratio=res.metrics["sharpe_ratio"])
    timing, res = timed(lambda: stops.run(positions, close, high, low, open_), args.repeats)
    figures["stops"] = figure(timing, n, trades=len(res.trades), stop_exits=int(res.stopped.sum()),
                              numba=tracker.HAVE_NUMBA)
    if tracker.HAVE_NUMBA and not args.skip_interpreted:
        timing, res = timed(lambda: stops.run(positions, close, high, low, open_, use_numba=False), 1)
        figures["stops_interpreted"] = figure(timing, n, trades=len(res.trades))

    for name, fig in figures.items():
        print(f"{name:18s} {n:,} bars  best {fig['seconds'] * 1e3:7.1f} ms = {fig['bars_per_second']:12,.0f}"
              f" bar-updates/s  (median {fig['median_seconds'] * 1e3:7.1f} ms)  {fig['trades']:,} trades")
    goals = {"no_stops": 1e7, "stops": n / 1.0}
    for name, goal in goals.items():
        ok = figures[name]["bars_per_second"] >= goal
        print(f"goal {name}: >= {goal:,.0f} bar-updates/s: {'met' if ok else 'NOT met'}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"load average {load} on {os.cpu_count()} CPUs (other work slows the median)")

    report = {"bars": n, "repeats": args.repeats, "python": platform.python_version(),
              "numpy": np.__version__, "numba": getattr(tracker.numba, "__version__", None),
              "machine": platform.machine(), "cpus": os.cpu_count(), "load_average_1m": load,
              "figures": figures}
    path = write_json(Path(args.out) / "bench" / "bench_eval.json", report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How time and memory grow with the number of symbols: synthetic universes through the base-model path.

For each universe (10, 100 and 500 symbols x 5000 bars, and one ragged universe whose histories
start at different dates, 1000..5000 bars), in a fresh process so peak RSS is that size's own:
  * panel build s: load and check the CSVs, causal + statistical forecast features, the flat ragged
    panel (hftraining.data.ragged.build_ragged_panel, parallel over symbols), splits and scaler;
  * forecast s: the statistical forecast features of every symbol alone (no cache), one after another
    (the best of 3 passes);
  * training samples/s: `trainer.fit` steady-state steps of the base model (the config's model and
    batch), timed through its on_step hook between two steps, setup and evaluation left out;
  * peak RSS (ru_maxrss) of the process that did all of the above, and the panel's own bytes;
then the growth exponent of each figure against the number of symbols (least squares on log-log over
the 10/100/500 universes; 1 = linear; samples/s should stay flat, exponent ~0). Goal: exponents
<= 1.1 and the 500-symbol run within 8 GB RSS. Writes <out>/bench/bench_scale.json.

    python scripts/bench_scale.py [--sizes 10 100 500] [--bars 5000] [--steps 20] [--out runs]
    python scripts/bench_scale.py --smoke        # tiny sizes, a few seconds (tested)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

RSS_GOAL_GB = 8.0
FORECAST_REPEATS = 3
EXPONENT_GOAL = 1.1


def universe_csvs(folder: Path, n_symbols: int, bars: int, ragged: bool = False, seed: int = 11) -> list[str]:
    """`n_symbols` synthetic CSVs (all ending on the same date); ragged: lengths spread over bars/5..bars."""
    from hftraining.data.synthetic import generate_bars

    folder.mkdir(parents=True, exist_ok=True)
    symbols = []
    for i in range(n_symbols):
        symbol = f"R{i:04d}" if ragged else f"S{i:04d}"
        length = int(bars // 5 + (bars - bars // 5) * i / max(1, n_symbols - 1)) if ragged else bars
        path = folder / f"{symbol}.csv"
        if not path.is_file():
            generate_bars(symbol, length, seed=seed).to_csv(path, index_label="date", float_format="%.8g")
        symbols.append(symbol)
    return symbols


# --- one universe, in its own process --------------------------------------------------------------

def measure(symbols: list[str], data_dir: Path, config_path: str, steps: int, warmup: int, workdir: Path) -> dict:
    import numpy as np
    import torch

    from hftraining.config import load_config
    from hftraining.data.panel import Scaler, panel_windows
    from hftraining.data.ragged import build_ragged_panel, make_ragged_splits
    from hftraining.forecasting import clear_loaded, forecast_features
    from hftraining.train_with_profit import Prepared

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_train import time_trainer  # the same timed window as the single-stock benchmark

    cfg = load_config(config_path, None, {
        "data.source": "csv", "data.data_dir": str(data_dir), "data.forecast_backend": "statistical",
        "training.device": "cpu", "paths.root": str(workdir)})
    began = time.perf_counter()
    panel = build_ragged_panel(symbols, cfg, workdir, progress=False)
    splits = make_ragged_splits(panel, cfg)
    scaler = Scaler.fit(panel, splits.train)
    build_s = time.perf_counter() - began

    clear_loaded()
    forecast_s = float("inf")
    for _ in range(FORECAST_REPEATS):             # the best of a few: milliseconds are noisy on a shared CPU
        began = time.perf_counter()
        for s, symbol in enumerate(panel.symbols):
            forecast_features(symbol, panel.ohlc[panel.rows_of(s), 0, 3], cfg.data, None, progress=False)
        forecast_s = min(forecast_s, time.perf_counter() - began)

    cfg.training.warmup_steps = min(cfg.training.warmup_steps, warmup)
    seconds = time_trainer(cfg, Prepared(panel, splits, scaler), warmup, steps, workdir)
    lengths = np.diff(panel.offsets)
    return {
        "symbols": len(panel.symbols), "bars": int(panel.n_rows), "bars_min": int(lengths.min()),
        "bars_max": int(lengths.max()), "padding_factor": 1.0,      # flat layout: rows == bars, nothing padded
        "first_dates": [str(panel.dates[panel.offsets[0]])[:10], str(panel.dates[panel.offsets[-2]])[:10]],
        "train_windows": int(len(panel_windows(panel, splits.train, cfg.data.context_length))),
        "panel_build_s": round(build_s, 3), "forecast_s": round(forecast_s, 4),
        "samples_per_s": round(steps * cfg.training.batch_size / seconds, 1),
        "panel_mb": round(panel.nbytes() / 2 ** 20, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch_threads": torch.get_num_threads(),
    }


def run_child(args: argparse.Namespace, symbols: list[str], data_dir: Path) -> dict:
    """`measure` in a fresh interpreter (so ru_maxrss is this universe's peak), one JSON line back."""
    spec = json.dumps({"symbols": symbols, "data_dir": str(data_dir), "config": args.config, "steps": args.steps,
                       "warmup": args.warmup})
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, env=env,
                          timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"bench_scale child failed ({len(symbols)} symbols):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def growth_exponent(sizes: list[int], values: list[float]) -> float | None:
    """Slope of log(value) against log(size): 1 = linear growth."""
    import numpy as np

    if len(sizes) < 2 or min(values) <= 0:
        return None
    return round(float(np.polyfit(np.log(sizes), np.log(values), 1)[0]), 3)


FIGURES = [("panel_build_s", "panel build s"), ("forecast_s", "forecast s"), ("samples_per_s", "train samples/s"),
           ("peak_rss_mb", "peak RSS MB"), ("panel_mb", "panel MB")]


def table(rows: list[dict], exponents: dict) -> str:
    head = ["universe", "symbols", "bars", *[label for _, label in FIGURES]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([row["name"], str(row["symbols"]), str(row["bars"]),
                                         *[f"{row[key]:g}" for key, _ in FIGURES]]) + " |")
    lines.append("| growth exponent | | | " + " | ".join(
        "–" if exponents.get(key) is None else f"{exponents[key]:.2f}" for key, _ in FIGURES) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--bars", type=int, default=5000)
    parser.add_argument("--ragged", type=int, default=100, help="symbols in the ragged universe (0 = none)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before the timed ones")
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    parser.add_argument("--data", default=None, help="folder for the synthetic CSVs (kept; default: a temp dir)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per universe")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and configs/tiny.yaml: seconds")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        spec = json.loads(args.child)
        with tempfile.TemporaryDirectory() as work:
            result = measure(spec["symbols"], Path(spec["data_dir"]), spec["config"], spec["steps"], spec["warmup"],
                             Path(work))
        print(json.dumps(result))
        return 0
    if args.smoke:
        args.sizes, args.bars, args.ragged, args.steps, args.warmup = [2, 4], 400, 3, 2, 1
        args.config = str(ROOT / "configs" / "tiny.yaml")

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(args.data) if args.data else Path(scratch) / "csv"
        began = time.perf_counter()
        everything = universe_csvs(data_dir, max(args.sizes), args.bars)
        ragged = universe_csvs(data_dir, args.ragged, args.bars, ragged=True) if args.ragged else []
        print(f"synthetic CSVs ready in {time.perf_counter() - began:.1f} s ({data_dir})", file=sys.stderr)
        rows = []
        for size in sorted(args.sizes):
            rows.append({"name": f"{size} x {args.bars}", **run_child(args, everything[:size], data_dir)})
            print(json.dumps(rows[-1]), file=sys.stderr)
        if ragged:
            rows.append({"name": f"ragged {args.ragged} x {args.bars // 5}..{args.bars}",
                         **run_child(args, ragged, data_dir)})
            print(json.dumps(rows[-1]), file=sys.stderr)

    sized = [r for r in rows if not r["name"].startswith("ragged")]
    exponents = {key: growth_exponent([r["symbols"] for r in sized], [r[key] for r in sized]) for key, _ in FIGURES}
    largest = max(sized, key=lambda r: r["symbols"])
    goals = {"exponents_at_most": EXPONENT_GOAL,
             "exponents_met": all(exponents[k] is None or exponents[k] <= EXPONENT_GOAL
                                  for k in ("panel_build_s", "forecast_s", "peak_rss_mb", "panel_mb")),
             "rss_gb_at_most": RSS_GOAL_GB, "largest_rss_gb": round(largest["peak_rss_mb"] / 1024, 2),
             "rss_met": largest["peak_rss_mb"] / 1024 <= RSS_GOAL_GB}
    print(table(rows, exponents))
    print(f"goals: exponents <= {EXPONENT_GOAL} (build, forecast, RSS, panel): {goals['exponents_met']}; "
          f"{largest['symbols']} symbols in {goals['largest_rss_gb']} GB RSS (<= {RSS_GOAL_GB}): {goals['rss_met']}")
    import torch

    report = {"rows": rows, "growth_exponents": exponents, "goals": goals, "config": args.config,
              "steps": args.steps, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                               "load_average": os.getloadavg(), "torch": torch.__version__,
                                               "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1")}}
    from hftraining.atomic import write_json

    out = Path(args.out) / "bench" / "bench_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

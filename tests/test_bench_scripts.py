"""Smoke runs of the benchmark scripts at tiny sizes: they run, and write the JSON the README quotes."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_train_compares_trainer_and_bare_loop(tmp_path):
    bench = load_script("bench_train")
    assert bench.main(["--config", TINY, "--symbols", "1", "--rounds", "2", "--steps", "2", "--warmup", "1",
                       "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench" / "bench_train.json").read_text())
    assert len(report["rounds"]) == 2 and report["trainer_samples_per_s"] > 0 and report["bare_samples_per_s"] > 0
    assert report["ratio"] > 0
    assert set(report["breakdown_ms_per_step"]) == {"gather", "forward_loss", "backward", "optimizer", "logging"}


def test_bench_eval_small(tmp_path):
    bench = load_script("bench_eval")
    assert bench.main(["--bars", "20000", "--repeats", "1", "--skip-interpreted", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench" / "bench_eval.json").read_text())
    assert report["figures"]["no_stops"]["bars_per_second"] > 0


def test_bench_gpu_smoke_on_cpu(tmp_path):
    import torch

    compile_before = torch.compile
    bench = load_script("bench_gpu")
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    assert torch.compile is compile_before                          # the smoke's eager-backend patch is undone
    report = json.loads((tmp_path / "bench" / "bench_gpu.json").read_text())
    assert set(report["results"]) == {"eager", "compile"}
    assert all(r["samples_per_s"] > 0 and 0 < r["mfu"] for r in report["results"].values())


@pytest.mark.slow
def test_bench_forecasts_small(tmp_path):
    out = tmp_path / "bench_forecasts.json"
    done = subprocess.run([sys.executable, str(SCRIPTS / "bench_forecasts.py"), "--windows", "4", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(out.read_text())["chronos_bolt_tiny"]["windows"] == 4


@pytest.mark.slow
def test_bench_scale_smoke(tmp_path, capsys):
    """Tiny universes (2 and 4 symbols, one ragged) each in its own process: the table and the JSON."""
    bench = load_script("bench_scale")
    assert bench.main(["--smoke", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench" / "bench_scale.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names == ["2 x 400", "4 x 400", "ragged 3 x 80..400"]
    for row in report["rows"]:
        assert row["panel_build_s"] > 0 and row["samples_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["padding_factor"] == 1.0 and row["train_windows"] > 0
    ragged = report["rows"][-1]
    assert ragged["bars_min"] < ragged["bars_max"] and ragged["first_dates"][0] > ragged["first_dates"][1]
    assert report["growth_exponents"]["panel_mb"] == pytest.approx(1.0, abs=0.05)   # memory ~ total bars
    assert "| growth exponent |" in capsys.readouterr().out

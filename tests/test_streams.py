"""Where output goes: results on stdout (unwrapped, paths whole), logs and progress on stderr, --json alone on stdout.

`hftrain single ... > out.txt` must keep the table, the verdict and every path; `--json` keeps its contract
(one JSON line, the last of stdout: here the only one, with the human results moved to stderr).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NO_FORECAST, REPO, TINY

from hftraining.cli import main

PATH_LINE = re.compile(r"^(run|report|log|index|base|state): (.+)$")


@pytest.fixture(scope="module")
def piped(tmp_path_factory) -> dict:
    """`python -m hftraining single` as a real process, stdout and stderr piped to files, under a long --out."""
    deep = tmp_path_factory.mktemp("streams") / ("a-rather-long-folder-name-" * 3) / "that-goes-on" / "runs"
    env = {**os.environ, "COLUMNS": "80", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "hftraining", "single", "--stock", "DEMO", "--config", TINY,
                           "--out", str(deep), *NO_FORECAST, "--steps", "4", "--set", "paths.run_name=piped"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": deep, "out": done.stdout, "err": done.stderr}


def test_results_go_to_stdout_and_logs_to_stderr(piped):
    out, err = piped["out"], piped["err"]
    for text in ("DEMO (SYNTHETIC market) test", "buy_and_hold", "momentum", "mean_abs_position", "volatility",
                 "Against the best baseline: ", "significance: PSR", "run: ", "report: ", "tensorboard: "):
        assert text in out, text
    assert "INFO: single DEMO: positions scaled" in err                    # logs stay on stderr
    assert "buy_and_hold" not in err and "report: " not in err


def test_piped_output_is_not_wrapped_and_paths_are_whole(piped):
    root = piped["root"]
    assert len(str(root)) > 80
    lines = piped["out"].splitlines()
    title = next(line for line in lines if "test" in line and "DEMO" in line)
    assert title.endswith("forecaster: none)")                            # one line, not cut at 80 columns
    paths = {m.group(1): m.group(2) for m in map(PATH_LINE.match, lines) if m}
    assert set(paths) >= {"run", "report", "log"}
    for name, path in paths.items():
        assert path.startswith(str(root)) and Path(path).exists(), (name, path)
    assert paths["report"] == str(root / "reports" / "piped" / "report.html")
    tensorboard = next(line for line in lines if line.startswith("tensorboard: "))
    assert tensorboard == f"tensorboard: tensorboard --logdir {root / 'tensorboard' / 'finetuned'}"


@pytest.fixture(scope="module")
def json_run(tmp_path_factory) -> dict:
    """One tiny single run with --json, in process (capsys is function-scoped, so capture by hand)."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("json")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["single", "--stock", "DEMO", "--config", TINY, "--out", str(root), "-q", *NO_FORECAST,
                     "--steps", "4", "--set", "paths.run_name=j", "--json"])
    assert code == 0, err.getvalue()
    return {"root": root, "out": out.getvalue(), "err": err.getvalue()}


def test_json_is_the_only_line_of_stdout_and_the_table_moves_to_stderr(json_run):
    lines = json_run["out"].splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["run_id"] == "j" and "buy_and_hold" in json_run["err"] and "Against the best" in json_run["err"]


def test_json_carries_significance_every_baseline_and_the_verdict(json_run):
    summary = json.loads(json_run["out"])
    assert set(summary["baselines"]) >= {"buy_and_hold", "momentum", "oracle"}
    sig = summary["significance"]
    assert sig["bootstrap"]["low"] <= sig["sharpe_ratio"] <= sig["bootstrap"]["high"]
    assert 0 <= sig["psr"] <= 1 and 0 <= sig["deflated"]["dsr"] <= 1 and sig["deflated"]["n_trials"] == 1
    assert summary["cost_sensitivity"]["rows"]
    assert summary["verdict"].startswith("Against the best baseline: ")
    assert f"{summary['verdict']}\n" in json_run["err"]                  # the printed verdict is this one


def test_counts_are_integers_everywhere(json_run):
    summary = json.loads(json_run["out"])
    for block in (summary["validation"], summary["test"], *summary["baselines"].values()):
        for key in ("trade_count", "n_bars"):
            assert type(block[key]) is int, (key, block[key])
    rows = [line.split() for line in json_run["err"].splitlines()
            if line.split()[:1] in (["model"], ["buy_and_hold"], ["momentum"], ["oracle"])]
    assert len(rows) == 4 and all(row[-1].isdigit() for row in rows)      # trade_count, the last column


def test_report_data_and_config_results_go_to_stdout(json_run, capsys):
    root = json_run["root"]
    assert main(["report", str(root / "reports" / "j")]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"report: {root / 'reports' / 'j' / 'report.html'}" and captured.err == ""
    assert main(["data", "validate", "--stocks", "AAA", "--source", "synthetic", "--out", str(root)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("AAA: ok, rows=") and "rows=3000," in captured.out
    assert main(["config", "validate", TINY]) == 0
    assert capsys.readouterr().out.strip() == f"{TINY}: ok"

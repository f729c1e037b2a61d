"""The command line's vocabulary and its refusals, through the CLI: one name per idea on every command,
flags shown as flags, real did-you-mean neighbours, error lines naming the flag in plain words, and
commands that say what they do instead of quietly doing something else (a finished --resume, data
fetch of a CSV folder, a forecaster that cannot run, a model applied to a symbol it never saw).

Messages are looked for in stdout + stderr together where the stream is not what is tested; an error
is one line on stderr with exit code 2 (conftest.refuse).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import NO_FORECAST, TINY, assert_untouched, refuse, snapshot

from hftraining.cli import app, main
from hftraining.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def help_text(command: str, capsys, monkeypatch, flag: str = "--help") -> str:
    """`hftrain COMMAND --help` on a wide terminal (no wrapped option names)."""
    monkeypatch.setenv("COLUMNS", "250")
    assert main([*command.split(), flag]) == 0
    captured = capsys.readouterr()
    return captured.out + captured.err


def all_commands() -> list[str]:
    """Every leaf command of the app, as `single` or `data fetch`."""
    import typer

    group = typer.main.get_command(app)
    out = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            out += [f"{name} {sub}" for sub in command.commands]
        else:
            out.append(name)
    return out


def options_of(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


# --- one option vocabulary ------------------------------------------------------------------------

WRITERS = ["single", "study", "forecast", "base", "finetune", "portfolio", "pipeline", "backtest", "ensemble",
           "paper", "report", "data fetch", "data validate", "data show", "runs list"]
CONFIG_READERS = ["single", "study", "forecast", "base", "finetune", "portfolio", "pipeline", "backtest",
                  "data fetch", "data validate", "data show", "config show", "config validate"]


def test_every_command_is_classified():
    """A new command must be added to WRITERS or CONFIG_READERS (or both) on purpose."""
    assert set(all_commands()) <= set(WRITERS) | set(CONFIG_READERS)


@pytest.mark.parametrize("command", WRITERS)
def test_commands_that_write_take_out_quiet_and_json(command, capsys, monkeypatch):
    assert {"--out", "--quiet", "--json"} <= options_of(help_text(command, capsys, monkeypatch))


@pytest.mark.parametrize("command", CONFIG_READERS)
def test_commands_that_read_a_config_take_config_and_set(command, capsys, monkeypatch):
    assert {"--config", "--set"} <= options_of(help_text(command, capsys, monkeypatch))


def test_help_short_and_long_and_version():
    """Through real processes: `hftrain -h`, `--help`, `single -h`, `data fetch -h` and `--version`."""
    from importlib.metadata import version

    def run(*args):
        return subprocess.run([sys.executable, "-m", "hftraining", *args], capture_output=True, text=True,
                              cwd=REPO, timeout=120)

    for args in (["-h"], ["--help"], ["single", "-h"], ["data", "fetch", "-h"], ["config", "-h"]):
        done = run(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert "Usage: hftrain" in done.stdout and "-h" in done.stdout, args
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"hftrain {version('hftraining')}"


@pytest.mark.parametrize("command", all_commands())
def test_boolean_flags_show_as_flags(command, capsys, monkeypatch):
    """`--json`, `--quiet`, `--walk-forward`, `--help`: no `<bool>` value after a flag (and `-h` works)."""
    text = help_text(command, capsys, monkeypatch, "-h")
    assert "<bool>" not in text
    for line in text.splitlines():
        if re.search(r"--(json|quiet|walk-forward|describe|compare-single)\b", line):
            assert not re.search(r"--(json|quiet|walk-forward|describe|compare-single)\s+(<|[A-Z]{2,})", line), line


def test_finetune_epochs_have_one_name(capsys, monkeypatch):
    for command in ("base", "finetune"):
        options = options_of(help_text(command, capsys, monkeypatch))
        assert "--finetune-epochs" in options and "--epochs" not in options, command


def test_old_epochs_spelling_warns_and_a_conflict_is_refused(tmp_path, capsys):
    main(["finetune", "--stock", "DEMO", "--base", str(tmp_path / "nobase"), "--epochs", "2"])
    captured = capsys.readouterr()
    assert "--epochs is deprecated; use --finetune-epochs 2" in captured.err
    refuse(["finetune", "--stock", "DEMO", "--base", str(tmp_path), "--epochs", "2", "--finetune-epochs", "3"],
           capsys, None, "--epochs 2 and --finetune-epochs 3 disagree")


def test_forecast_backend_has_one_name(tmp_path, capsys, monkeypatch):
    """`--forecast-backend` on forecast as on every training command; the old `forecast --backend` warns."""
    for command in ("forecast", "single", "base", "study"):
        assert "--forecast-backend" in options_of(help_text(command, capsys, monkeypatch)), command
    assert "--backend" not in options_of(help_text("forecast", capsys, monkeypatch))
    assert main(["forecast", "--stocks", "AAA", "--backend", "statistical", "--source", "synthetic", "--out",
                 str(tmp_path), "-q"]) == 0
    assert "--backend is deprecated; use --forecast-backend statistical" in capsys.readouterr().err


def captured_config(monkeypatch, module: str, function: str) -> list:
    """Replace a library entry point with one that records the config it got and stops the command."""
    import importlib

    seen: list = []

    def capture(*args, **kwargs):
        seen.append(next(a for a in args if hasattr(a, "training")))
        raise UserError("captured")

    monkeypatch.setattr(importlib.import_module(module), function, capture)
    return seen


def test_portfolio_steps_sets_what_its_help_says(tmp_path, capsys, monkeypatch):
    assert "portfolio.max_steps" in help_text("portfolio", capsys, monkeypatch)
    seen = captured_config(monkeypatch, "hftraining.portfolio", "run_portfolio")
    assert main(["portfolio", "--pairs", "AAA,BBB", "--config", TINY, "--out", str(tmp_path), "--steps", "3"]) == 2
    assert seen[0].portfolio.max_steps == 3 and seen[0].training.max_steps == 20      # tiny.yaml's, untouched
    capsys.readouterr()


@pytest.mark.parametrize("args, typo, meant, not_meant", [
    (["single"], "--quite", "--quiet", "--out"),
    (["single"], "--stepz", "--steps", "--seed"),
    (["backtest", "--model", "x"], "--quite", "--quiet", "--out"),
    (["base"], "--epochs-finetune", "--finetune-epochs", "--finetune"),
    (["data", "show"], "--rowz", "--rows", "--out"),
])
def test_did_you_mean_names_the_nearest_option(args, typo, meant, not_meant, capsys):
    line = refuse([*args, typo], capsys, None, f"no such option: {typo} (did you mean {meant}?)")
    assert not_meant + "," not in line and f"{not_meant})" not in line


def test_did_you_mean_a_command(capsys):
    refuse(["singel"], capsys, None, "no such command: singel (did you mean single?)")


def test_steps_and_set_max_steps_fit_the_schedule_alike(tmp_path, capsys, monkeypatch):
    """`--steps 40` and `--set training.max_steps=40` give one config: warmup and eval_every fitted to 40."""
    seen = captured_config(monkeypatch, "hftraining.train_with_profit", "run_single")
    base = ["single", "--stock", "DEMO", "--config", str(REPO / "configs/default.yaml"), "--out", str(tmp_path)]
    assert main([*base, "--steps", "40"]) == 2
    assert main([*base, "--set", "training.max_steps=40"]) == 2
    by_flag, by_set = seen
    assert by_flag.training == by_set.training
    assert (by_flag.training.max_steps, by_flag.training.warmup_steps, by_flag.training.eval_every,
            by_flag.training.checkpoint_every) == (40, 4, 40, 40)
    # a schedule key given explicitly is kept as written, with either spelling
    assert main([*base, "--steps", "40", "--set", "training.eval_every=7"]) == 2
    assert seen[-1].training.eval_every == 7 and seen[-1].training.warmup_steps == 4
    capsys.readouterr()
    assert main(["config", "show", "--set", "training.max_steps=40"]) == 0
    shown = capsys.readouterr().out
    assert "warmup_steps: 4" in shown and "eval_every: 40" in shown
    refuse([*base, "--steps", "40", "--set", "training.max_steps=50"], capsys, None,
           "--steps 40 and --set training.max_steps=50 disagree")


def test_base_without_stocks_is_an_error_and_help_says_required(tmp_path, capsys, monkeypatch):
    assert "Required, or --stocks-file" in help_text("base", capsys, monkeypatch)
    assert "[required]" in help_text("backtest", capsys, monkeypatch)            # --model
    seen = captured_config(monkeypatch, "hftraining.base_model_trainer", "run_base_pipeline")
    refuse(["base", "--source", "synthetic", "--config", TINY, "--out", str(tmp_path), "--steps", "2"], capsys,
           tmp_path, "hftrain base: no stocks given", "--stocks")
    assert seen == []


# --- commands that must not quietly do something else --------------------------------------------

@pytest.fixture
def finished_run(tiny_run, tmp_path) -> tuple[Path, Path]:
    """(output root, run folder): a copy of the session's finished tiny run."""
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root)
    return root, root / "models/finetuned/DEMO/fixture"


def test_resume_of_a_finished_run_trains_and_registers_nothing(finished_run, capsys):
    root, run = finished_run
    before = snapshot(root)
    trials = (root / "trials.jsonl").read_bytes()
    assert main(["single", "--resume", str(run), "-q"]) == 0
    captured = capsys.readouterr()
    assert "this run already finished (6 steps" in captured.out + captured.err
    assert "nothing trained or registered again" in captured.out + captured.err
    assert (root / "trials.jsonl").read_bytes() == trials
    assert_untouched(before, snapshot(root))
    assert set(snapshot(root)) == set(before)                    # nothing new either


@pytest.mark.parametrize("extra, expect", [
    (["--stock", "MSFT"], "--stock MSFT conflicts with --resume"),
    (["--steps", "99"], "--steps 99 conflicts with --resume"),
    (["--set", "training.max_steps=99"], "--set training.max_steps=99 conflicts with --resume"),
    (["--config", TINY], "drop --config"),
    (["--start", "2020-01-02", "--out", "x"], "drop --out, --start"),
])
def test_resume_refuses_flags_it_would_not_honour(extra, expect, finished_run, capsys):
    root, run = finished_run
    refuse(["single", "--resume", str(run), "-q", *extra], capsys, root, expect)


def test_resume_with_its_own_stock_and_steps_is_fine(finished_run, capsys):
    root, run = finished_run
    assert main(["single", "--resume", str(run), "-q", "--stock", "DEMO", "--steps", "6"]) == 0
    assert "already finished" in capsys.readouterr().out                # a result: on stdout


def test_data_fetch_of_a_csv_folder_says_fetch_is_for_yahoo(tmp_path, capsys, monkeypatch):
    import yfinance

    monkeypatch.setattr(yfinance, "download", lambda *a, **k: pytest.fail("downloaded"))
    (tmp_path / "AAPL.csv").write_text("date,open,high,low,close,adj_close,volume\n")
    refuse(["data", "fetch", "--stocks", "AAPL", "--data-dir", str(tmp_path), "--out", str(tmp_path / "runs")],
           capsys, tmp_path, "downloads from Yahoo only", f"--data-dir {tmp_path}", "data validate --data-dir")
    refuse(["data", "fetch", "--stocks", "AAPL", "--source", "synthetic", "--out", str(tmp_path / "runs")],
           capsys, tmp_path, "Yahoo only", "--source synthetic")


def test_forecast_command_never_falls_back(tmp_path, capsys, monkeypatch, fresh_forecasters):
    """Toto cannot run here (no CUDA): filling its cache is an error, not a statistical cache filled instead."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("HFTRAIN_TOTO_ALLOW_CPU", raising=False)
    line = refuse(["forecast", "--stocks", "AAA", "--forecast-backend", "toto", "--source", "synthetic", "--out",
                   str(tmp_path)], capsys, tmp_path, "toto forecaster unavailable", "Toto requires CUDA")
    assert "statistical forecaster (random walk" not in line
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.npz"))


def test_offline_hub_and_local_paths_never_reach_the_network(tmp_path, capsys, monkeypatch, fresh_forecasters):
    """HF_HUB_OFFLINE: only the local hub cache is looked at; a local folder never calls the hub at all."""
    import huggingface_hub

    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append(kwargs)
        raise OSError("not in the local cache")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["forecast", "--stocks", "AAA", "--forecast-backend", "chronos", "--source", "synthetic", "--out",
            str(tmp_path)]
    refuse([*args, "--model", "no-such-org/no-such-model"], capsys, None, "chronos forecaster unavailable",
           "could not be fetched")
    assert calls and all(call["local_files_only"] is True for call in calls)
    calls.clear()
    local = tmp_path / "my-chronos"
    local.mkdir()
    refuse([*args, "--model", str(local)], capsys, None, "has no config.json")
    assert calls == []


def test_backtest_of_a_symbol_the_model_never_saw_says_so(tiny_run, tmp_path, capsys):
    run = tiny_run / "models/finetuned/DEMO/fixture"
    train = json.loads((run / "metadata.json").read_text())["splits"]["train"]
    code = main(["backtest", "--model", str(run), "--stock", "OTHER", "--source", "synthetic", "--out",
                 str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    text = captured.out + captured.err
    assert "OTHER: this model was trained on DEMO and never saw OTHER" in text
    assert f"DEMO's training statistics (the run's scaler.json, fitted on {train['start']} .. {train['end']})" in text
    assert "the run's own test dates" in text
    summary = json.loads(captured.out.strip().splitlines()[-1])
    meta = json.loads((Path(summary["report_dir"]) / "backtest.json").read_text())
    assert meta["unseen_symbol"] is True and meta["scaler_symbols"] == ["DEMO"]


def test_default_config_is_quiet_on_a_cpu_and_records_its_forecaster(tmp_path, capsys, monkeypatch,
                                                                     fresh_forecasters, one_torch_thread):
    """configs/default.yaml on a CPU machine: statistical forecasts, one info line, no Toto warning."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["single", "--stock", "DEMO", "--config", str(REPO / "configs/default.yaml"), "--source",
                 "synthetic", "--set", "data.synthetic_bars=1200", "--steps", "2", "--out", str(tmp_path), "-q",
                 "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.err.splitlines()
    assert not [line for line in lines if line.startswith("WARNING")], captured.err
    chosen = [line for line in lines if "data.forecast_backend auto" in line]
    assert chosen == ["INFO: forecaster: statistical (data.forecast_backend auto: no CUDA device; Toto runs on "
                      "CUDA only)"]
    summary = json.loads(captured.out.strip().splitlines()[-1])
    meta = json.loads((Path(summary["run_dir"]) / "metadata.json").read_text())
    forecast = meta["forecast"]["DEMO"]
    assert (forecast["requested"], forecast["backend"]) == ("auto", "statistical")
    assert "no CUDA device" in forecast["auto_choice"] and forecast["fallback_reason"] is None


# --- error lines that help more ------------------------------------------------------------------

@pytest.mark.parametrize("args, expect", [
    (["--steps", "0"], "--steps 0: must be at least 1"),
    (["--source", "yahooo"], "--source yahooo: must be one of auto, yahoo, csv, synthetic"),
    (["--device", "gpu"], "--device gpu: must be one of auto, cpu, cuda"),
    (["--set", "training.batch_size=0"], "--set training.batch_size=0: must be at least 1"),
    (["--start", "2021-02-30"], "--start 2021-02-30: not a date; expected YYYY-MM-DD"),
    (["--start", "2021-06-01", "--end", "2020-01-01"],
     "--start 2021-06-01 is after --end 2020-01-01; swap them: --start 2020-01-01 --end 2021-06-01"),
])
def test_error_lines_name_the_flag_in_plain_words(args, expect, tmp_path, capsys):
    line = refuse(["single", "--stock", "DEMO", "--config", TINY, "--out", str(tmp_path), *args], capsys, tmp_path,
                  expect)
    assert "defaults" not in line and "Input should" not in line


def test_missing_config_lists_the_configs_folder(tmp_path, capsys):
    refuse(["single", "--config", "configs/defualt.yaml", "--out", str(tmp_path)], capsys, tmp_path,
           "configs/defualt.yaml: config file not found", "default.yaml", "tiny.yaml")


def test_data_dir_that_is_a_file_names_its_folder(tmp_path, capsys):
    path = tmp_path / "AAPL.csv"
    path.write_text("date,open,high,low,close,adj_close,volume\n")
    refuse(["single", "--stock", "AAPL", "--data-dir", str(path), "--config", TINY, "--out", str(tmp_path / "runs")],
           capsys, tmp_path, f"--data-dir {path}: is a file; pass the folder that holds it: --data-dir {tmp_path}")


# --- warm-up before --start ------------------------------------------------------------------------

@pytest.fixture
def csv_history(tmp_path) -> tuple[Path, pd.DataFrame]:
    from fake_runs import write_csv

    path = write_csv(tmp_path / "csv", bars=900, seed=5)
    return path.parent, pd.read_csv(path, index_col="date", parse_dates=True)


def test_start_trades_from_start_with_features_warmed_up_on_earlier_bars(csv_history, tmp_path, capsys,
                                                                          one_torch_thread):
    from fake_runs import tiny_config

    from hftraining.data.features import FEATURE_NAMES, compute_features
    from hftraining.data.panel import build_panel

    folder, bars = csv_history
    start = f"{bars.index[300]:%Y-%m-%d}"
    code = main(["single", "--stock", "DEMO", "--data-dir", str(folder), "--start", start, "--config", TINY,
                 "--out", str(tmp_path / "runs"), "--steps", "2", "-q", "--json", *NO_FORECAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    splits = json.loads((Path(json.loads(captured.out.splitlines()[-1])["run_dir"]) / "metadata.json")
                        .read_text())["splits"]
    assert splits["train"]["start"] >= start                        # the first traded date

    cfg = tiny_config(tmp_path / "runs", data_dir=folder, overrides=[f"data.start={start}"])
    panel = build_panel(["DEMO"], cfg, tmp_path / "runs", progress=False)
    assert panel.date_str(0) == start                               # no bar of the range lost to warm-up
    full = compute_features(bars)
    expected = full.loc[pd.to_datetime(panel.dates), FEATURE_NAMES].to_numpy("float32")
    assert (panel.features[:, 0, :] == expected).all()             # as computed on the whole history


def test_a_range_too_short_explains_the_warm_up(csv_history, tmp_path, capsys):
    folder, bars = csv_history
    args = ["single", "--stock", "DEMO", "--data-dir", str(folder), "--config", TINY, "--out",
            str(tmp_path / "runs"), "-q", *NO_FORECAST]
    first, end = f"{bars.index[0]:%Y-%m-%d}", f"{bars.index[99]:%Y-%m-%d}"
    refuse([*args, "--start", first, "--end", end], capsys, None, "only 40 bars with complete features",
           "features need about 61 bars of warm-up before --start", f"the data has no bars before {first}")
    start, end = f"{bars.index[500]:%Y-%m-%d}", f"{bars.index[599]:%Y-%m-%d}"
    refuse([*args, "--start", start, "--end", end], capsys, None, "only 100 bars with complete features",
           "500 earlier bars were loaded for it automatically", "move --start earlier or --end later")


def test_report_out_writes_the_page_there(tiny_run, tmp_path, capsys):
    reports = tmp_path / "reports"
    shutil.copytree(tiny_run / "reports/fixture", reports)
    assert main(["report", str(reports), "--out", str(tmp_path / "html"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["report_html"] == str(tmp_path / "html" / "report.html")
    assert (tmp_path / "html" / "report.html").stat().st_size > 1000


def test_portfolio_resume_checks_its_own_steps(tmp_path, capsys):
    """A finished portfolio run (config.yaml + metadata.json suffice here): --steps means portfolio.max_steps."""
    from hftraining.config import load_config, to_yaml

    run = tmp_path / "runs/models/finetuned/portfolio_pairs/AAA_BBB/done"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(load_config(TINY, ["portfolio.max_steps=5", "data.symbols=[AAA, BBB]"])))
    (run / "metadata.json").write_text(json.dumps({"run_id": "done", "status": "completed", "steps_done": 5}))
    refuse(["portfolio", "--resume", str(run), "--steps", "7"], capsys, tmp_path,
           "--steps 7 conflicts with --resume", "started for 5 steps")
    before = snapshot(tmp_path)
    assert main(["portfolio", "--resume", str(run), "--steps", "5", "--json"]) == 0
    captured = capsys.readouterr()
    assert "this run already finished (5 steps" in captured.out + captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["runs"][0]["already_finished"] is True
    assert snapshot(tmp_path) == before


def test_paper_quiet_keeps_decisions_in_the_file_only(tmp_path, capsys):
    from fake_runs import make_run, tiny_config, write_csv

    csv = write_csv(tmp_path / "csv", bars=300)
    run = make_run(tiny_config(tmp_path / "runs", data_dir=csv.parent), seed=1)
    assert main(["paper", "--model", str(run), "--feed", f"csv:{csv}", "--out", str(tmp_path / "runs"), "-q",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert " DEMO close=" not in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert len(Path(summary["decisions_csv"]).read_text().splitlines()) > 100


def test_data_show_json(tmp_path, capsys):
    assert main(["data", "show", "--stock", "DEMO", "--source", "synthetic", "--rows", "3", "--out", str(tmp_path),
                 "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["symbol"] == "DEMO" and len(shown["bars"]) == len(shown["features"]) == 3
    assert shown["bars"][-1]["date"] == shown["features"][-1]["date"] and "rsi_14" in shown["features"][-1]


def test_forecast_with_start_fills_the_cache_training_with_start_reads(csv_history, tmp_path, capsys,
                                                                        one_torch_thread):
    folder, bars = csv_history
    start = f"{bars.index[300]:%Y-%m-%d}"
    common = ["--data-dir", str(folder), "--start", start, "--config", TINY, "--out", str(tmp_path / "runs"), "-q",
              "--json"]
    assert main(["forecast", "--stocks", "DEMO", "--forecast-backend", "statistical", *common]) == 0
    filled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["symbols"][0]
    assert filled["computed"] == filled["windows"] > 0
    assert main(["single", "--stock", "DEMO", "--steps", "2", *common]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    used = json.loads((Path(summary["run_dir"]) / "metadata.json").read_text())["forecast"]["DEMO"]
    assert used["backend"] == "statistical" and used["computed"] == 0
    assert used["cache_hits"] == used["windows"] == filled["windows"]

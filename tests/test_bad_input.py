"""Invariant 7 through the CLI: bad input is one line on stderr naming what and where, exit code 2,
no traceback, and nothing that already existed under the output root is touched.

One tiny training run (the session's `tiny_run`, tests/conftest.py) leaves a real runs/ tree: model,
last/ state, TensorBoard, report, trials.jsonl. Every case snapshots that tree (names, sizes, mtimes, sha256) before the
command and compares it after. Two inputs are repaired rather than refused (unsorted and duplicated
dates): they exit 0 with a warning line, and the tree still only grows.

Run `pytest tests/test_bad_input.py -s` to see every message (lines starting `MESSAGE |`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import NO_FORECAST, TINY, assert_untouched, refuse, snapshot

from hftraining import atomic
from hftraining import checkpoint as ckpt
from hftraining.cli import main
from hftraining.data import yahoo
from hftraining.data.synthetic import generate_bars
from hftraining.forecasting.base import clear_loaded

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tiny_run) -> Path:
    """An output root holding one finished tiny run (run name `fixture`): the session's tiny run."""
    return tiny_run


@pytest.fixture(scope="module")
def run_dir(root) -> Path:
    return root / "models" / "finetuned" / "DEMO" / "fixture"


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory) -> Path:
    """One CSV per kind of bad file (plus a good one), built from a synthetic history."""
    folder = tmp_path_factory.mktemp("csv")
    bars = generate_bars("GOOD", 400, 11)

    def save(name: str, frame: pd.DataFrame) -> None:
        frame.to_csv(folder / f"{name}.csv", index_label="date")

    def edited(row: int, column: str, value) -> pd.DataFrame:
        frame = bars.copy()
        frame.iloc[row, frame.columns.get_loc(column)] = value
        return frame

    save("GOOD", bars)
    (folder / "EMPTY.csv").write_text("")
    (folder / "HEADONLY.csv").write_text("date,open,high,low,close,adj_close,volume\n")
    save("NOVOLUME", bars.drop(columns=["volume"]))
    text = bars.reset_index()
    text["date"] = text["date"].dt.strftime("%Y-%m-%d")
    text.loc[5, "date"] = "31/02/2021x"
    text.to_csv(folder / "BADDATE.csv", index=False)
    save("NANROW", edited(50, "open", np.nan))
    save("ZERO", edited(60, "close", 0.0))
    save("NEGATIVE", edited(61, "low", -1.0))
    save("INFPRICE", edited(62, "adj_close", np.inf))
    frame = bars.copy()
    frame.iloc[70, frame.columns.get_loc("high")] = frame.iloc[70]["low"] * 0.5
    save("HIGHLOW", frame)
    save("SHORT", bars.iloc[:120])
    save("UNSORTED", bars.iloc[::-1])
    save("DUPLICATED", pd.concat([bars, bars.iloc[100:103]]).sort_index(kind="mergesort"))
    return folder


def csv_args(symbol: str, csv_dir: Path, root: Path) -> list[str]:
    return ["single", "--stock", symbol, "--data-dir", str(csv_dir), "--config", TINY, "--out", str(root), "-q",
            *NO_FORECAST]


# --- bars: refused -------------------------------------------------------------------------------

CSV_CASES = {
    "EMPTY": ["EMPTY.csv", "the file is empty"],
    "HEADONLY": ["HEADONLY.csv", "no bars"],
    "NOVOLUME": ["NOVOLUME.csv", "missing column volume"],
    "BADDATE": ["BADDATE.csv", "unparseable date '31/02/2021x'", "row 6"],
    "NANROW": ["NANROW.csv", "missing open on"],
    "ZERO": ["ZERO.csv", "zero or negative price on"],
    "NEGATIVE": ["NEGATIVE.csv", "zero or negative price on"],
    "INFPRICE": ["INFPRICE.csv", "infinite adj_close on"],
    "HIGHLOW": ["HIGHLOW.csv", "high < low on"],
    "SHORT": ["SHORT.csv: SHORT: only 60 bars with complete features, need at least 147"],
}


@pytest.mark.parametrize("symbol", list(CSV_CASES))
def test_bad_csv_is_one_line_and_exit_2(symbol, csv_dir, root, capsys):
    refuse(csv_args(symbol, csv_dir, root), capsys, root, symbol, *CSV_CASES[symbol], case=f"csv {symbol}")


def test_symbol_that_is_a_path_is_refused(csv_dir, root, capsys):
    refuse(csv_args("../../etc/passwd", csv_dir, root), capsys, root, "'../../etc/passwd' is not a ticker")


# --- bars: repaired with a warning ---------------------------------------------------------------

@pytest.mark.parametrize("symbol, warning", [("UNSORTED", "dates are not in order; sorted them"),
                                             ("DUPLICATED", "3 duplicated dates; kept the last row")])
def test_unsorted_and_duplicated_dates_are_repaired_with_a_warning(symbol, warning, csv_dir, root, capsys):
    before = snapshot(root)
    code = main(["data", "validate", "--stocks", symbol, "--data-dir", str(csv_dir), "--out", str(root)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    assert any(line.startswith("WARNING:") and warning in line for line in captured.err.splitlines()), captured.err
    assert f"{symbol}: ok, rows=400" in captured.out                        # the result on stdout
    assert_untouched(before, snapshot(root))
    shown = next(line for line in captured.err.splitlines() if "WARNING" in line)
    print(f"\nMESSAGE | repaired {symbol} | {shown} | exit 0")


def test_training_on_repaired_bars_succeeds(tmp_path, csv_dir, root, capsys):
    """Unsorted and duplicated dates in one file: a full `single` run trains on the repaired bars."""
    messy = tmp_path / "csv"
    messy.mkdir()
    bars = pd.read_csv(csv_dir / "DUPLICATED.csv")
    bars.iloc[::-1].to_csv(messy / "MESSY.csv", index=False)
    before = snapshot(root)
    code = main(csv_args("MESSY", messy, root) + ["--steps", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = [line for line in captured.err.splitlines() if line.startswith("WARNING:")]
    assert any("sorted them" in w for w in warnings) and any("duplicated dates" in w for w in warnings)
    assert_untouched(before, snapshot(root), appended=("trials.jsonl", "reports/index.html"))   # the index grows
    assert (root / "models/finetuned/MESSY").is_dir()
    log = Path(json.loads(captured.out)["log"])        # the run's log keeps the warnings logged while loading
    assert log.parent == root / "logs"
    assert "sorted them" in log.read_text() and "duplicated dates" in log.read_text()


# --- Yahoo ---------------------------------------------------------------------------------------

def test_unknown_ticker_on_yahoo(monkeypatch, root, capsys):
    import yfinance

    def no_such_ticker(symbol, **kwargs):
        logging.getLogger("yfinance").error("1 Failed download:")
        logging.getLogger("yfinance").error(f"['{symbol}']: YFTzMissingError('possibly delisted; no timezone found')")
        return pd.DataFrame()

    monkeypatch.setattr(yahoo, "yahoo_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(yfinance, "download", no_such_ticker)
    refuse(["single", "--stock", "NOSUCHTKR", "--source", "yahoo", "--config", TINY, "--out", str(root), "-q"],
           capsys, root, "unknown ticker 'NOSUCHTKR' on Yahoo Finance")


def test_yahoo_unreachable(monkeypatch, root, capsys):
    import yfinance

    def must_not_download(*args, **kwargs):
        raise AssertionError("yf.download called while offline")

    monkeypatch.setattr(yahoo, "yahoo_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(yfinance, "download", must_not_download)
    refuse(["single", "--stock", "AAPL", "--source", "yahoo", "--config", TINY, "--out", str(root), "-q"],
           capsys, root, "cannot reach Yahoo Finance to download AAPL")


def test_yahoo_connection_drops_mid_download(monkeypatch, root, capsys):
    import yfinance

    def drop(*args, **kwargs):
        raise ConnectionError("Connection reset by peer\nsecond line of a long urllib3 message")

    monkeypatch.setattr(yahoo, "yahoo_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(yfinance, "download", drop)
    refuse(["single", "--stock", "MSFT", "--source", "yahoo", "--config", TINY, "--out", str(root), "-q"],
           capsys, root, "Yahoo Finance download of MSFT failed: Connection reset by peer")


# --- config --------------------------------------------------------------------------------------

CONFIG_FILES = {
    "yaml_syntax": ("training:\n  learning_rate: [1\n  batch_size: 3\n", ["line 3, column 13", "YAML syntax error"]),
    "unknown_key": ("training:\n  learning_rat: 0.1\n",
                    ["unknown config key 'training.learning_rat'", "did you mean training.learning_rate"]),
    "wrong_type": ("training:\n  batch_size: lots\n", ["training.batch_size = 'lots': must be a whole number"]),
    "below minimum": ("training:\n  batch_size: 0\n", ["training.batch_size = 0: must be at least 1"]),
}


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_bad_config_file(name, tmp_path, root, capsys):
    text, expect = CONFIG_FILES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    refuse(["single", "--stock", "DEMO", "--config", str(path), "--source", "synthetic", "--out", str(root), "-q"],
           capsys, root, str(path), *expect, case=f"config file {name}")


SET_CASES = {
    "unknown key": ("training.learnin_rate=0.1", ["unknown config key 'training.learnin_rate'"]),
    "wrong type": ("training.batch_size=abc", ["--set training.batch_size=abc: must be a whole number"]),
    "negative learning rate": ("training.learning_rate=-0.1",
                               ["--set training.learning_rate=-0.1: must be greater than 0"]),
    "zero learning rate": ("training.learning_rate=0", ["--set training.learning_rate=0: must be greater than 0"]),
    "negative batch size": ("training.batch_size=-4", ["--set training.batch_size=-4: must be at least 1"]),
    "not a choice": ("profit.objective=sharp", ["--set profit.objective=sharp: must be one of sharpe, mean, "
                                                "mean_variance"]),
    "run name with ..": ("paths.run_name=../../x", ["paths.run_name '../../x' is not allowed"]),
    "absolute run name": ("paths.run_name=/tmp/x", ["paths.run_name '/tmp/x' is not allowed"]),
}


@pytest.mark.parametrize("name", list(SET_CASES))
def test_bad_set_override(name, root, capsys):
    item, expect = SET_CASES[name]
    refuse(["single", "--stock", "DEMO", "--config", TINY, "--out", str(root), "-q", "--set", item],
           capsys, root, *expect, case=f"--set {name}")


def test_steps_below_the_configured_warmup_is_not_an_error(root, capsys):
    """`--steps 2` with tiny.yaml (warmup 2) shrinks the warmup instead of refusing the flag."""
    from hftraining.commands.common import build_config

    cfg = build_config(Path(TINY), None, root, None, None, None, None, 2, None, None)
    assert cfg.training.max_steps == 2 and cfg.training.warmup_steps == 0


# --- forecasters ---------------------------------------------------------------------------------

def test_toto_on_cuda_without_cuda_and_no_fallback(monkeypatch, root, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # a CPU machine, even on a GPU host
    monkeypatch.delenv("HFTRAIN_TOTO_ALLOW_CPU", raising=False)
    clear_loaded()
    refuse(["single", "--stock", "DEMO", "--config", TINY, "--out", str(root), "-q", "--source", "synthetic",
            "--forecast-backend", "toto", "--device", "cpu", "--set", "data.toto_device=cuda",
            "--set", "data.forecast_fallback=error"],
           capsys, root, "Toto requires CUDA", "data.forecast_fallback=error")
    clear_loaded()


@pytest.mark.parametrize("backend", ["toto", "chronos"])
def test_forecaster_model_path_that_does_not_exist(backend, tmp_path, root, capsys):
    missing = tmp_path / "no-such-model"
    clear_loaded()
    refuse(["single", "--stock", "DEMO", "--config", TINY, "--out", str(root), "-q", "--source", "synthetic",
            "--forecast-backend", backend, "--set", f"data.{backend}_model_id={missing}"],
           capsys, root, f"data.{backend}_model_id = '{missing}'", "no such", case=f"{backend} model path missing")
    clear_loaded()


# --- run folders and checkpoints ------------------------------------------------------------------

def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of the fixture run under its own root (so damage to it cannot reach the shared root)."""
    copy = tmp_path / "copyroot" / "models" / "finetuned" / "DEMO" / "fixture"
    shutil.copytree(run_dir, copy)
    return copy


def test_model_folder_that_is_not_a_run(tmp_path, root, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    refuse(["backtest", "--model", str(tmp_path), "--out", str(root)], capsys, root,
           f"--model {tmp_path}: not a run folder (missing config.yaml, scaler.json, metadata.json, model.safetensors)")


def test_model_folder_that_does_not_exist(tmp_path, root, capsys):
    refuse(["backtest", "--model", str(tmp_path / "nope"), "--out", str(root)], capsys, root, "no such folder")


def test_open_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    from hftraining.errors import UserError

    with pytest.raises(UserError, match="not a run folder"):
        ckpt.open_run(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_is_refused(damage, tmp_path, run_dir, root, capsys):
    copy = copy_run(run_dir, tmp_path)
    weights = copy / ckpt.WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b""}[damage])
    refuse(["backtest", "--model", str(copy), "--out", str(root)], capsys, root, str(weights),
           "not a readable safetensors checkpoint", case=f"{damage} model.safetensors")


def test_truncated_training_state_is_refused_on_resume(tmp_path, run_dir, capsys):
    copy = copy_run(run_dir, tmp_path)
    ckpt.update_metadata(copy, status="running")                  # interrupted, so there is something to resume
    state = copy / "last" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:1000])
    copyroot = tmp_path / "copyroot"
    refuse(["single", "--resume", str(copy), "-q"], capsys, copyroot, str(state), "may be truncated")


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, root, capsys):
    refuse(["single", "--resume", str(tmp_path), "-q"], capsys, root, f"--resume {tmp_path}: not a run folder")


def test_checkpoint_whose_features_differ_from_the_data(run_dir, root, capsys):
    """The fixture trained without forecast features; this data has them."""
    refuse(["backtest", "--model", str(run_dir), "--set", "data.forecast_backend=statistical"], capsys, root,
           f"--model {run_dir}", "the data's features differ from the model's", "unexpected ['fc_mean_1'")


def test_scaler_and_features_json_that_disagree(tmp_path, run_dir, root, capsys):
    copy = copy_run(run_dir, tmp_path)
    names = ckpt.read_json(copy / ckpt.FEATURES)
    (copy / ckpt.FEATURES).write_text(str(list(reversed(names))).replace("'", '"'))
    refuse(["backtest", "--model", str(copy), "--out", str(root)], capsys, root,
           "features.json and scaler.json list different features")


# --- the output root -----------------------------------------------------------------------------

def test_out_under_a_regular_file(tmp_path, root, capsys):
    """Root ignores chmod, so an honest unwritable --out is a path through a regular file (ENOTDIR)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    refuse(["single", "--stock", "DEMO", "--config", TINY, "--out", str(blocker / "sub"), "-q", *NO_FORECAST],
           capsys, root, f"--out {blocker / 'sub'}: cannot create the output folder (Not a directory)")
    assert blocker.read_text() == "x"


def _readonly_namespace_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _readonly_namespace_works(), reason="needs unshare -m and mount (root in a container)")
@pytest.mark.parametrize("where", ["root", "models"])
def test_out_on_a_read_only_file_system(where, tmp_path, run_dir, capsys):
    """A real read-only bind mount (EROFS, which stops root too), private to the command's mount namespace.

    where=root: the whole output root is read-only (refused up front). where=models: only models/ is,
    so the run gets as far as claiming its folder and hits EROFS there: cli.main makes that one line.
    """
    out = tmp_path / "runs"
    shutil.copytree(run_dir.parents[3], out)
    target = out if where == "root" else out / "models"
    before = snapshot(out)
    command = [sys.executable, "-m", "hftraining", "single", "--stock", "DEMO", "--config", TINY, "--out",
               str(out), "-q", *NO_FORECAST, "--steps", "2"]
    script = (f"mount --bind {target} {target} && mount -o remount,bind,ro {target} && exec "
              + " ".join(f"'{c}'" for c in command))
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    expect = "the output folder is not writable" if where == "root" else "Read-only file system (EROFS)"
    assert expect in lines[0], lines[0]
    assert_untouched(before, snapshot(out))
    print(f"\nMESSAGE | read-only {where} | {lines[0]} | exit 2")


def test_disk_full_while_writing_a_checkpoint(monkeypatch, root, capsys):
    """ENOSPC half-way through the second training-state write: one line, the first state is intact."""
    real = atomic._write_all
    states: list[bytes] = []

    def disk_fills_up(path: Path, data: bytes) -> None:
        if ".state.safetensors." in path.name:
            states.append(data)
            if len(states) == 2:
                with open(path, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(atomic, "_write_all", disk_fills_up)
    message = refuse(["single", "--stock", "DEMO", "--config", TINY, "--out", str(root), "-q", *NO_FORECAST,
                      "--steps", "4", "--set", "training.checkpoint_every=2", "--set", "training.eval_every=2",
                      "--set", "paths.run_name=diskfull"],
                     capsys, root, "state.safetensors: No space left on device (ENOSPC)")
    run = root / "models/finetuned/DEMO/diskfull"
    assert str(run / "last" / "state.safetensors") in message
    assert (run / "last" / "state.safetensors").read_bytes() == states[0]       # the step-2 state, whole
    tensors, header = ckpt.read_tensor_file(run / "last" / "state.safetensors")
    assert '"step": 2' in header["state"] and ckpt.read_json(run / "last" / "state.json")["step"] == 2
    assert ckpt.load_tensors(run / ckpt.WEIGHTS)                                   # best weights readable
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]              # no half files left


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_write_refused_by_the_system_mid_run(code, monkeypatch, root, capsys):
    """EROFS / EACCES from a write inside a run (here: the first file of the run folder) are one line too."""
    def refused(path: Path, data: bytes) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic, "_write_all", refused)
    refuse(["single", "--stock", "DEMO", "--config", TINY, "--out", str(root), "-q", *NO_FORECAST,
            "--set", f"paths.run_name=refused{code}"],
           capsys, root, f"config.yaml: {os.strerror(code)} ({errno.errorcode[code]})",
           case=f"write fails with {errno.errorcode[code]}")

"""Shared pytest fixtures and helpers: the tiny config, one-line refusals, a session-wide finished tiny run.

Helpers are imported from here (`from conftest import TINY, refuse`); the tests directory is on
sys.path, as for `fake_runs`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")          # a few seconds on a CPU: hftrain single --config TINY
NO_FORECAST = ["--set", "data.forecast_backend=none"]


# --- refusals: exit 2, one line, nothing touched -------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under root: (size, mtime_ns, sha256)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns,
                                                hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def assert_untouched(before: dict, after: dict, appended: tuple[str, ...] = ()) -> None:
    """Files that existed are unchanged; `appended` files (append-only logs) may only have grown."""
    for name, (size, mtime, digest) in before.items():
        assert name in after, f"{name} was removed"
        if name in appended:
            continue
        assert after[name] == (size, mtime, digest), f"{name} was modified"


def request_name() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]


def refuse(args: list[str], capsys, root: Path | None, *expect: str, case: str = "") -> str:
    """Run the CLI; assert exit 2 and one stderr line (no traceback) containing each of `expect`; with a
    `root`, also that no file under it changed. Prints the line (the README's table of messages comes from these)."""
    from hftraining.cli import main

    before = snapshot(root) if root is not None else None
    code = main(args)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: "), lines[0]
    for text in expect:
        assert text in lines[0], (text, lines[0])
    if before is not None:
        assert_untouched(before, snapshot(root))
    print(f"\nMESSAGE | {case or request_name()} | {lines[0]} | exit {code}")
    return lines[0]


# --- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The output root of one finished `hftrain single` tiny run (DEMO, run name `fixture`, resumable state,
    report, trial), shared by the whole session: use it read-only."""
    from hftraining.cli import main

    out = tmp_path_factory.mktemp("runs")
    code = main(["single", "--stock", "DEMO", "--config", TINY, "--out", str(out), "-q", *NO_FORECAST,
                 "--steps", "6", "--set", "training.eval_every=3", "--set", "training.checkpoint_every=3",
                 "--set", "paths.run_name=fixture"])
    assert code == 0
    assert (out / "models/finetuned/DEMO/fixture/last/state.safetensors").is_file()
    assert (out / "trials.jsonl").is_file() and (out / "reports/fixture/metrics.json").is_file()
    return out


@pytest.fixture
def real_data_dir() -> Path:
    """The shared folder of real daily CSVs (or $HFTRAIN_REAL_DATA); skips the test when absent."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "daily"
    folder = Path(os.environ.get("HFTRAIN_REAL_DATA", default))
    if not folder.is_dir() or not any(folder.glob("*.csv")):
        pytest.skip(f"no real data folder at {folder}")
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are overhead-bound; one torch thread avoids OpenMP stalls when CI shares its cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_forecasters():
    """Forget loaded forecast models and warnings given, before and after a test."""
    from hftraining.forecasting import clear_loaded

    clear_loaded()
    yield
    clear_loaded()


@pytest.fixture
def toto_fell_back_then_appears(tmp_path, monkeypatch):
    """A run that asked for Toto on a CPU machine (so it trained on the statistical fallback), after which a
    different 'toto' (a GPU machine) becomes available: paper trading and ensembles must keep the fallback's
    features. Yields (root, run folder, config)."""
    from fake_runs import OtherForecaster, make_run, tiny_config, write_csv

    from hftraining import checkpoint as ckpt
    from hftraining.forecasting import base as forecast_base

    monkeypatch.delenv("HFTRAIN_TOTO_ALLOW_CPU", raising=False)
    forecast_base.clear_loaded()
    write_csv(tmp_path / "train", bars=300)
    cfg = tiny_config(tmp_path, data_dir=tmp_path / "train",
                      overrides=["data.forecast_backend=toto", "data.toto_device=cuda"])
    run = make_run(cfg, seed=1)
    meta = ckpt.open_run(run).metadata
    assert meta["forecast"]["DEMO"]["backend"] == "statistical"      # what the weights learned from
    real_build = forecast_base._build
    monkeypatch.setattr(forecast_base, "_build",
                        lambda data, requested: OtherForecaster(data) if requested == "toto"
                        else real_build(data, requested))
    forecast_base.clear_loaded()
    yield tmp_path, run, cfg
    forecast_base.clear_loaded()

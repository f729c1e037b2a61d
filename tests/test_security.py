"""Security: nothing is ever unpickled, and names never become paths outside the output root.

Planted pickles carry a payload that would create a marker file when unpickled; every test checks the
command was refused with one line (exit 2) and that the marker was never created.
"""

from __future__ import annotations

import logging
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY, refuse
from fake_runs import make_run, tiny_config

from hftraining import atomic
from hftraining import checkpoint as ckpt
from hftraining.config import _Loader
from hftraining.errors import UserError
from hftraining.layout import Layout, check_run_name, normalize_symbol

PACKAGE = Path(__file__).resolve().parents[1] / "hftraining"


class Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"weight": Payload(marker)})


def refused(args: list[str], capsys, *expect: str) -> str:
    """conftest.refuse without an output root to watch."""
    return refuse(args, capsys, None, *expect)


@pytest.fixture
def no_torch_load(monkeypatch):
    """If anything reached torch.load, the test fails loudly instead of unpickling."""
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", forbidden)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A complete (untrained) run folder: config, scaler, metadata, weights."""
    root = tmp_path_factory.mktemp("runs")
    return make_run(tiny_config(root), seed=0, run_name="victim")


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "root" / "models" / "finetuned" / "DEMO" / "victim"
    shutil.copytree(run_dir, copy)
    return copy


# --- nothing is unpickled -----------------------------------------------------------------------

def test_the_package_never_unpickles():
    """No torch.load / pickle / unsafe YAML / pickled numpy anywhere in hftraining/."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            where = f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
            if re.search(r"\btorch\.load\(|\bpickle\.(load|loads|Unpickler)\b|^\s*(import|from) (c?pickle|dill|"
                         r"cloudpickle|joblib)\b|\bjoblib\.load\(|torch\.jit\.load\(", code):
                if "weights_only=True" not in code:
                    offenders.append(where)
            if re.search(r"yaml\.(unsafe_load|full_load|load_all)\(|yaml\.(Unsafe|Full)?Loader\b|Loader=yaml\.Loader",
                         code):
                offenders.append(where)
            if re.search(r"yaml\.load\(", code) and "Loader=_Loader" not in code:
                offenders.append(where)
            if re.search(r"\bnp\.load\(", code) and "allow_pickle=False" not in code:
                offenders.append(where)
            if "allow_pickle=True" in code or "weights_only=False" in code:
                offenders.append(where)
    assert not offenders, "\n".join(offenders)
    assert issubclass(_Loader, yaml.SafeLoader)


def test_pickle_posing_as_model_safetensors_is_refused(tmp_path, run_dir, capsys, no_torch_load):
    copy = copy_of(run_dir, tmp_path)
    marker = tmp_path / "PWNED"
    (copy / ckpt.WEIGHTS).write_bytes(evil_pickle(marker))
    refused(["backtest", "--model", str(copy), "--out", str(tmp_path / "out")], capsys,
            f"{copy / ckpt.WEIGHTS}: not a readable safetensors checkpoint", "pickles are never loaded")
    assert not marker.exists()


def test_torch_save_file_posing_as_model_safetensors_is_refused(tmp_path, run_dir, capsys, no_torch_load):
    copy = copy_of(run_dir, tmp_path)
    marker = tmp_path / "PWNED"
    import torch.serialization

    with open(copy / ckpt.WEIGHTS, "wb") as handle:     # the zip format torch.save writes, with the payload inside
        torch.serialization.save({"weight": Payload(marker)}, handle)
    refused(["backtest", "--model", str(copy), "--out", str(tmp_path / "out")], capsys,
            "not a readable safetensors checkpoint")
    assert not marker.exists()


def test_a_run_with_only_a_pt_file_is_not_a_run(tmp_path, run_dir, capsys, no_torch_load):
    copy = copy_of(run_dir, tmp_path)
    marker = tmp_path / "PWNED"
    (copy / ckpt.WEIGHTS).unlink()
    (copy / "model.pt").write_bytes(evil_pickle(marker))
    refused(["backtest", "--model", str(copy), "--out", str(tmp_path / "out")], capsys,
            "not a run folder (missing model.safetensors)")
    assert not marker.exists()


def test_pickle_posing_as_training_state_is_refused_on_resume(tmp_path, run_dir, capsys, no_torch_load):
    copy = copy_of(run_dir, tmp_path)
    marker = tmp_path / "PWNED"
    (copy / "last").mkdir()
    (copy / "last" / "state.safetensors").write_bytes(evil_pickle(marker))
    atomic.write_json(copy / "last" / "state.json", {"step": 3})
    refused(["single", "--resume", str(copy), "-q"], capsys, "last/state.safetensors: not a readable safetensors")
    assert not marker.exists()


def test_run_config_with_python_tags_is_refused(tmp_path, run_dir, capsys):
    copy = copy_of(run_dir, tmp_path)
    marker = tmp_path / "PWNED"
    (copy / ckpt.CONFIG).write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    refused(["backtest", "--model", str(copy), "--out", str(tmp_path / "out")], capsys, str(copy / ckpt.CONFIG),
            "python/object/apply:os.system")
    refused(["single", "--config", str(copy / ckpt.CONFIG), "--stock", "DEMO", "--out", str(tmp_path / "out")],
            capsys, "python/object/apply:os.system")
    assert not marker.exists()


def test_forecast_cache_holding_a_pickle_is_recomputed_not_loaded(tmp_path, caplog, monkeypatch):
    from hftraining.forecasting import cache

    package_log = logging.getLogger("hftraining")          # an earlier CLI call bound it to a closed stream
    monkeypatch.setattr(package_log, "handlers", [])
    monkeypatch.setattr(package_log, "propagate", True)
    marker = tmp_path / "PWNED"
    path = tmp_path / "DEMO.statistical.0123456789abcdef.npz"
    np.savez(path, key=np.array([Payload(marker)], dtype=object), prices=np.ones(3), values=np.ones((3, 2)))
    assert cache.load(path, {"backend": "statistical"}, 2) is None
    assert "unreadable" in caplog.text and "recomputing" in caplog.text
    assert not marker.exists()


def test_chronos_folder_with_a_pickled_bin_is_refused(tmp_path, capsys):
    """A forecaster folder is third-party loading code: a pickle in pytorch_model.bin must not run."""
    pytest.importorskip("chronos")
    from tiny_models import save_tiny_chronos_bolt

    from hftraining.forecasting.base import clear_loaded

    folder = save_tiny_chronos_bolt(tmp_path / "chronos")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    (folder / "pytorch_model.bin").write_bytes(evil_pickle(marker))
    clear_loaded()
    capsys.readouterr()                                   # save_pretrained's progress bar above
    refused(["single", "--stock", "DEMO", "--config", TINY, "--out", str(tmp_path / "out"), "-q",
             "--forecast-backend", "chronos", "--set", f"data.chronos_model_id={folder}"],
            capsys, f"data.chronos_model_id = '{folder}': could not load a Chronos model")
    clear_loaded()
    assert not marker.exists()


# --- names never become paths outside the root -----------------------------------------------------

@pytest.mark.parametrize("symbol", ["../../etc/passwd", "..", ".", "", "A/B", "A\\B", "~root", "$HOME", "AAPL\nX",
                                    "A" * 16, "NUL\x00", "C:", "a b"])
def test_symbols_that_could_act_as_paths_are_refused(symbol):
    with pytest.raises(UserError, match="is not a ticker"):
        normalize_symbol(symbol)


@pytest.mark.parametrize("symbol", ["aapl", "BRK-B", "BRK.B", "^GSPC", "EURUSD=X"])
def test_real_tickers_are_accepted(symbol):
    assert normalize_symbol(symbol) == symbol.upper()


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/abs", ".hidden", "", "a..b", "x" * 101, "a\nb"])
def test_run_names_that_could_act_as_paths_are_refused(name):
    with pytest.raises(UserError, match="is not allowed"):
        check_run_name(name)


@pytest.mark.parametrize("args, expect", [
    (["single", "--stock", "../../etc/passwd", "--source", "synthetic"], "'../../etc/passwd' is not a ticker"),
    (["data", "fetch", "--stocks", "AAPL", "../x", "--source", "synthetic"], "'../x' is not a ticker"),
    (["portfolio", "--pairs", "AAPL,../../x", "--source", "synthetic"], "'../../x' is not a ticker"),
    (["single", "--stock", "DEMO", "--source", "synthetic", "--set", "paths.run_name=../../x"],
     "paths.run_name '../../x' is not allowed"),
    (["single", "--stock", "DEMO", "--source", "synthetic", "--set", "paths.run_name=/etc"],
     "paths.run_name '/etc' is not allowed"),
])
def test_cli_refuses_names_that_escape(args, expect, tmp_path, capsys):
    refused([*args, "--config", TINY, "--out", str(tmp_path / "runs"), "-q"] if args[0] != "data"
            else [*args, "--out", str(tmp_path / "runs")], capsys, expect)
    outside = [p for p in tmp_path.rglob("*") if not str(p).startswith(str(tmp_path / "runs"))]
    assert not outside


def test_backtest_stock_that_is_a_path_is_refused(tmp_path, run_dir, capsys):
    refused(["backtest", "--model", str(run_dir), "--stock", "../../etc/passwd", "--out", str(tmp_path)], capsys,
            "'../../etc/passwd' is not a ticker")


def test_symlinked_folder_that_leads_outside_the_root_is_refused(tmp_path, capsys):
    """runs/models -> /elsewhere: a run folder resolved through it would be outside the root."""
    root, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.mkdir()
    (root / "models").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UserError, match="would be outside the output root"):
        Layout.at(root).finetuned_model("DEMO", "run1")
    refused(["single", "--stock", "DEMO", "--config", TINY, "--source", "synthetic", "--out", str(root), "-q",
             "--set", "data.forecast_backend=none", "--set", "paths.run_name=run1"],
            capsys, "would be outside the output root")
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_output_file_is_replaced_not_written_through(tmp_path):
    """An attacker's symlink at an output path (e.g. reports/<run>/metrics.json -> ~/.bashrc) is replaced."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "reports" / "run" / "metrics.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    atomic.write_json(link, {"sharpe": 1.0})
    assert victim.read_text() == "precious\n"
    assert not link.is_symlink() and ckpt.read_json(link) == {"sharpe": 1.0}

"""The command line: every subcommand has help, options parse, errors are one line with exit code 2."""

import json
import sys
from pathlib import Path

import pytest

from hftraining.cli import app, expand_multi_value, main

SUBCOMMANDS = ["single", "base", "finetune", "portfolio", "pipeline", "forecast", "backtest",
               "data fetch", "data validate", "data show", "config show", "config validate"]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    assert main(command.split() + ["--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage" in out and "--help" in out


def test_training_commands_share_the_common_options(capsys):
    for command in ("single", "base", "portfolio", "pipeline"):
        main([command, "--help"])
        out = capsys.readouterr().out
        for option in ("--config", "--set", "--out", "--source", "--data-dir", "--start", "--end", "--steps",
                       "--device", "--seed", "--json"):
            assert option in out, (command, option)


def test_multi_value_options_accept_space_and_comma_forms():
    assert expand_multi_value(["base", "--stocks", "AAPL", "MSFT", "--steps", "3"]) == \
        ["base", "--stocks", "AAPL", "--stocks", "MSFT", "--steps", "3"]
    assert expand_multi_value(["--stocks", "AAPL,MSFT"]) == ["--stocks", "AAPL,MSFT"]


def test_bad_flag_value_is_one_line_exit_2(capsys):
    assert main(["single", "--steps", "many"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--steps" in err[0]


def test_unknown_option_is_one_line_exit_2(capsys):
    assert main(["single", "--no-such-flag"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_config_validate_and_show(capsys):
    assert main(["config", "validate", *map(str, sorted(CONFIGS.glob("*.yaml")))]) == 0
    assert main(["config", "show", "--config", str(CONFIGS / "tiny.yaml"), "--set", "training.max_steps=7"]) == 0
    assert "max_steps: 7" in capsys.readouterr().out
    assert main(["config", "show", "--set", "training.max_stepz=7"]) == 2
    assert "did you mean training.max_steps" in capsys.readouterr().err


def test_forecast_command_fills_then_hits_the_cache(tmp_path, capsys):
    args = ["forecast", "--stocks", "AAA", "BBB", "--forecast-backend", "statistical", "--source", "synthetic",
            "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["symbol"] for row in first["symbols"]] == ["AAA", "BBB"]
    assert all(row["computed"] == row["windows"] > 0 for row in first["symbols"])
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(row["cache_hits"] == row["windows"] and row["computed"] == 0 for row in second["symbols"])


def test_data_validate_reports_each_symbol(tmp_path, capsys):
    assert main(["data", "validate", "--stocks", "AAA,BBB", "--source", "synthetic", "--out", str(tmp_path),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(rows) == {"AAA", "BBB"} and rows["AAA"]["rows"] > 0


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "hftraining", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "single" in done.stdout


def test_app_is_typer():
    assert app.info.help.startswith("Train trading models")


@pytest.mark.parametrize("args, module", [
    (["base", "--stocks", "AAA"], "hftraining.base_model_trainer"),
    (["finetune", "--stock", "AAA", "--base", "x"], "hftraining.base_model_trainer"),
    (["portfolio", "--pairs", "AAA,BBB"], "hftraining.portfolio"),
    (["pipeline", "--stocks", "AAA", "BBB", "--pairs", "AAA,BBB"], "hftraining.portfolio"),
    (["backtest", "--model", "x", "--stock", "AAA"], "hftraining.backtest"),
])
def test_a_broken_import_surfaces_as_itself(monkeypatch, capsys, args, module):
    """A missing dependency must show its real ImportError, never "not yet available in this version"."""
    monkeypatch.setitem(sys.modules, module, None)          # importing it now raises ImportError
    with pytest.raises(ImportError, match=module):
        main(args)
    assert "not yet available" not in capsys.readouterr().err

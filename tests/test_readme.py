"""The README documents what exists: the config reference matches the config tree, commands are real."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import config_reference  # noqa: E402

README = (ROOT / "README.md").read_text()


def test_config_reference_is_current():
    start = README.index(config_reference.START) + len(config_reference.START)
    end = README.index(config_reference.END)
    assert README[start:end].strip() == config_reference.table().strip(), \
        "run: python scripts/config_reference.py"


def test_readme_names_the_test_command_and_demo():
    assert "make test" in README and "make demo" in README


def test_every_documented_subcommand_exists(capsys):
    from hftraining.cli import main

    documented = set(re.findall(r"^hftrain ([a-z]+)", README, flags=re.M))
    assert {"single", "base", "portfolio", "forecast", "backtest"} <= documented
    for command in documented:
        assert main([command, "--help"]) == 0, command
    capsys.readouterr()

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


def command_table() -> list[str]:
    """The usage part of each line of the README's command table (the code block listing `hftrain ...` lines)."""
    section = README[README.index("## Commands"):]
    block = section[section.index("```\nhftrain ") + 4:]
    block = block[:block.index("```")]
    return [re.split(r"\s{2,}", line.strip(), maxsplit=1)[0] for line in block.splitlines() if line.strip()]


def table_entries() -> dict[str, set[str]]:
    """{`single` or `data fetch`: the options its table lines name}; `a|b` alternatives become one entry each."""
    entries: dict[str, set[str]] = {}
    for usage in command_table():
        words = usage.split()
        assert words[0] == "hftrain", usage
        path = [words[1]]
        if words[1] in ("data", "config", "runs"):
            path.append(words[2])
        options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", usage))
        heads = [p.split("|") for p in path]
        for head in heads[0]:
            for sub in (heads[1] if len(heads) > 1 else [None]):
                entries.setdefault(f"{head} {sub}" if sub else head, set()).update(options)
    return entries


def help_options(command: str, capsys, monkeypatch) -> set[str]:
    from hftraining.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    assert main([*command.split(), "--help"]) == 0, command
    text = capsys.readouterr().out
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))


def test_command_table_matches_the_help(capsys, monkeypatch):
    """Every command and option in the README's command table exists in that command's --help, and every
    command of the app is in the table (as the config reference is checked against the config tree)."""
    from test_cli_options import all_commands

    entries = table_entries()
    assert set(entries) == set(all_commands()), "README command table vs the app's commands"
    for command, options in entries.items():
        missing = options - help_options(command, capsys, monkeypatch)
        assert not missing, f"README lists {sorted(missing)} for `hftrain {command}`, which its --help lacks"


def test_every_documented_subcommand_exists(capsys):
    from hftraining.cli import main

    documented = set(re.findall(r"^hftrain ([a-z]+)", README, flags=re.M))
    assert {"single", "base", "portfolio", "forecast", "backtest"} <= documented
    for command in documented:
        assert main([command, "--help"]) == 0, command
    capsys.readouterr()

"""Universes: --stocks-file, parallel loading, and data.on_bad_symbol (skip | error)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from hftraining.cli import main
from hftraining.config import load_config
from hftraining.data.panel import fingerprint
from hftraining.data.ragged import build_ragged_panel
from hftraining.data.synthetic import generate_bars
from hftraining.data.universe import featurise_universe, read_stocks_file, universe_symbols
from hftraining.errors import UserError


def test_stocks_file_one_per_line_with_comments(tmp_path):
    path = tmp_path / "sp.txt"
    path.write_text("# my universe\naapl\n\n  MSFT   # software\nBRK-B\nAAPL\n^GSPC\n")
    assert read_stocks_file(path) == ["AAPL", "MSFT", "BRK-B", "^GSPC"]
    assert universe_symbols(["JPM", "msft"], path) == ["JPM", "MSFT", "AAPL", "BRK-B", "^GSPC"]


@pytest.mark.parametrize("text, message", [
    ("AAPL\n../etc/passwd\n", r"sp\.txt:2: symbol '\.\./etc/passwd' is not a ticker"),
    ("AAPL MSFT\n", r"sp\.txt:1: symbol 'AAPL MSFT' is not a ticker.*one symbol per line"),
    ("# nothing here\n\n", r"--stocks-file .*sp\.txt: no symbols in it"),
])
def test_bad_stocks_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "sp.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_stocks_file(path)


def test_missing_stocks_file_on_the_command_line(tmp_path, capsys):
    assert main(["data", "validate", "--stocks-file", str(tmp_path / "none.txt"), "--source", "synthetic",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stocks-file" in err[0] and "file not found" in err[0]
    assert main(["forecast", "--forecast-backend", "statistical", "--out", str(tmp_path)]) == 2
    assert "no stocks given; use --stocks AAPL MSFT ... or --stocks-file FILE" in capsys.readouterr().err


def test_stocks_file_feeds_data_and_forecast_commands(tmp_path, capsys):
    path = tmp_path / "universe.txt"
    path.write_text("AAA\nBBB  # second\n")
    assert main(["data", "validate", "--stocks-file", str(path), "--stocks", "CCC", "--source", "synthetic",
                 "--out", str(tmp_path), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) == ["CCC", "AAA", "BBB"]
    assert main(["forecast", "--stocks-file", str(path), "--forecast-backend", "statistical", "--source", "synthetic",
                 "--out", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["symbols"]
    assert [r["symbol"] for r in rows] == ["AAA", "BBB"]


@pytest.fixture
def folder_with_a_bad_symbol(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    for i, symbol in enumerate(["AAA", "BBB", "CCC", "DDD"]):
        generate_bars(symbol, 400 + 50 * i, seed=2).to_csv(folder / f"{symbol}.csv", index_label="date")
    bad = generate_bars("BAD", 400, seed=2)
    bad.iloc[100, bad.columns.get_loc("close")] = np.nan
    bad.to_csv(folder / "BAD.csv", index_label="date")
    return folder


def _cfg(folder, *extra):
    return load_config(None, ["data.source=csv", f"data.data_dir={folder}", "data.context_length=16",
                              "data.horizon=3", "data.forecast_backend=statistical", "data.toto_horizon=3",
                              "data.forecast_context_length=32", *extra])


def test_bad_symbol_stops_the_run_by_default(folder_with_a_bad_symbol, tmp_path):
    with pytest.raises(UserError, match=r"BAD\.csv: BAD: missing close on"):
        build_ragged_panel(["AAA", "BAD", "BBB"], _cfg(folder_with_a_bad_symbol), tmp_path, progress=False)
    loaded = []                                                        # the first failure stops the loading

    def keep(symbol, frame):
        loaded.append(symbol)
        return symbol

    with pytest.raises(UserError, match=r"BAD\.csv: BAD: missing close on"):
        featurise_universe(["BAD", "AAA", "BBB", "CCC"], _cfg(folder_with_a_bad_symbol, "data.load_workers=1"),
                           tmp_path, progress=False, keep=keep)
    assert len(loaded) < 3


def test_skip_reports_each_bad_symbol_in_one_line_and_goes_on(folder_with_a_bad_symbol, tmp_path, caplog):
    cfg = _cfg(folder_with_a_bad_symbol, "data.on_bad_symbol=skip")
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        panel = build_ragged_panel(["AAA", "BAD", "BBB", "NOPE"], cfg, tmp_path, progress=False)
    assert panel.symbols == ["AAA", "BBB"] and list(panel.skipped) == ["BAD", "NOPE"]
    bad_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bad symbol")]
    assert len(bad_lines) == 2 and all("\n" not in line for line in bad_lines)
    assert "missing close" in panel.skipped["BAD"] and "no CSV for NOPE" in panel.skipped["NOPE"]
    with pytest.raises(UserError, match="every symbol failed to load"):
        build_ragged_panel(["BAD", "NOPE"], cfg, tmp_path, progress=False)


def test_base_run_lists_skipped_symbols_in_its_metadata(folder_with_a_bad_symbol, tmp_path, capsys):
    assert main(["base", "--stocks", "AAA", "BAD", "BBB", "--data-dir", str(folder_with_a_bad_symbol),
                 "--config", "configs/tiny.yaml", "--set", "data.on_bad_symbol=skip", "--set",
                 "data.forecast_backend=none", "--no-finetune", "--steps", "2", "--device", "cpu",
                 "--set", "paths.run_name=skip", "--out", str(tmp_path / "runs"), "--json", "-q"]) == 0
    meta = json.loads((tmp_path / "runs" / "models" / "base" / "skip" / "metadata.json").read_text())
    assert meta["symbols"] == ["AAA", "BBB"] and list(meta["skipped_symbols"]) == ["BAD"]
    assert "missing close" in meta["skipped_symbols"]["BAD"]


def test_parallel_loading_builds_the_same_panel(folder_with_a_bad_symbol, tmp_path):
    symbols = ["DDD", "AAA", "CCC", "BBB"]
    one = build_ragged_panel(symbols, _cfg(folder_with_a_bad_symbol, "data.load_workers=1"), tmp_path / "a",
                             progress=False)
    many = build_ragged_panel(symbols, _cfg(folder_with_a_bad_symbol, "data.load_workers=4"), tmp_path / "b",
                              progress=True)
    assert one.symbols == many.symbols == symbols                     # the order asked for, not finishing order
    for name in ("offsets", "dates", "features", "ohlc", "returns", "runs"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name))
    assert fingerprint(one) == fingerprint(many)                       # what ranks compare before training
    many.features[5, 0, 0] += 1e-6
    assert fingerprint(one) != fingerprint(many)

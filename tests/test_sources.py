"""load_bars: which source answers, what it says it used, and the one-line errors around it."""

from __future__ import annotations

import pandas as pd
import pytest

from hftraining.config import DataConfig
from hftraining.data import load_bars, yahoo
from hftraining.data.sources import resolve_source
from hftraining.errors import UserError

CSV = """date,open,high,low,close,adj_close,volume
2024-01-02,10,11,9,10.5,10.4,1000
2024-01-03,10.5,12,10,11.5,11.4,2000
2024-01-04,11.5,12,11,11.8,11.7,1500
2024-01-05,11.8,12.5,11.5,12.0,11.9,1800
"""


@pytest.fixture
def csv_dir(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "AAPL.csv").write_text(CSV)
    (folder / "msft.csv").write_text(CSV)
    return folder


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(yahoo, "yahoo_reachable", lambda timeout=3.0: False)


def test_csv_source_and_labels(csv_dir, tmp_path):
    bars = load_bars("AAPL", DataConfig(source="csv", data_dir=str(csv_dir)), tmp_path / "raw")
    assert len(bars) == 4 and list(bars.columns) == ["open", "high", "low", "close", "adj_close", "volume"]
    assert bars.attrs == {"source": "csv", "origin": str((csv_dir / "AAPL.csv").resolve())}
    assert not (tmp_path / "raw").exists()  # the csv source writes nothing


def test_dates_cut_inclusively(csv_dir, tmp_path):
    data = DataConfig(data_dir=str(csv_dir), start="2024-01-03", end="2024-01-04")
    bars = load_bars("AAPL", data, tmp_path)
    assert list(bars.index) == [pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-04")]
    assert bars.attrs["source"] == "csv"


def test_cut_to_nothing_is_an_error(csv_dir, tmp_path):
    with pytest.raises(UserError, match="no bars between data.start=2025-01-01"):
        load_bars("AAPL", DataConfig(data_dir=str(csv_dir), start="2025-01-01"), tmp_path)


def test_auto_uses_data_dir_and_finds_lower_case_file_names(csv_dir, tmp_path):
    data = DataConfig(source="auto", data_dir=str(csv_dir))
    assert resolve_source(data) == "csv"
    assert load_bars("msft", data, tmp_path).attrs["origin"].endswith("msft.csv")


def test_missing_file_lists_what_exists(csv_dir, tmp_path):
    with pytest.raises(UserError) as info:
        load_bars("TSLA", DataConfig(source="csv", data_dir=str(csv_dir)), tmp_path)
    message = str(info.value)
    assert "TSLA.csv" in message and "AAPL, MSFT" in message and "--data-dir" in message


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="--data-dir .*folder not found"):
        load_bars("AAPL", DataConfig(source="csv", data_dir=str(tmp_path / "nowhere")), tmp_path)


def test_csv_source_needs_a_folder(tmp_path):
    with pytest.raises(UserError, match="--data-dir"):
        load_bars("AAPL", DataConfig(source="csv"), tmp_path)


def test_empty_file(csv_dir, tmp_path):
    (csv_dir / "EMPTY.csv").write_text("")
    with pytest.raises(UserError, match="EMPTY.csv: EMPTY: the file is empty"):
        load_bars("EMPTY", DataConfig(data_dir=str(csv_dir)), tmp_path)


@pytest.mark.parametrize("source", ["auto", "csv", "yahoo", "synthetic"])
def test_a_symbol_is_never_a_path(csv_dir, tmp_path, source):
    with pytest.raises(UserError, match="is not a ticker"):
        load_bars("../../etc/passwd", DataConfig(source=source, data_dir=str(csv_dir)), tmp_path)


def test_synthetic_source(tmp_path):
    data = DataConfig(source="synthetic", synthetic_bars=300, synthetic_seed=11, start="2024-06-01")
    bars = load_bars("AAPL", data, tmp_path)
    assert bars.attrs["source"] == "synthetic" and "seed 11" in bars.attrs["origin"]
    assert bars.index[0] >= pd.Timestamp("2024-06-01")
    pd.testing.assert_frame_equal(bars, load_bars("AAPL", data, tmp_path))
    assert not (tmp_path / "yahoo").exists()


def test_auto_offline_without_cache_stops_and_never_invents_data(offline, tmp_path):
    with pytest.raises(UserError, match=r"^cannot reach Yahoo Finance to download AAPL \(offline\?\)"):
        load_bars("AAPL", DataConfig(source="auto"), tmp_path)


def test_bad_date_in_config_fails_before_any_download(offline, tmp_path):
    data = DataConfig(source="auto")
    data.start = "2024-02-30"  # DataConfig alone does not check the format; Config does
    with pytest.raises(UserError, match="data.start"):
        load_bars("AAPL", data, tmp_path)


def test_real_aapl(real_data_dir, tmp_path):
    bars = load_bars("AAPL", DataConfig(data_dir=str(real_data_dir), start="2010-01-01", end="2019-12-31"),
                     tmp_path)
    assert bars.index[0] == pd.Timestamp("2010-01-04") and bars.index[-1] == pd.Timestamp("2019-12-31")
    assert 2500 < len(bars) < 2530 and bars.index.is_unique
    assert bars.attrs["source"] == "csv"


def test_real_agg_keeps_its_own_adjusted_close(real_data_dir, tmp_path):
    bars = load_bars("AGG", DataConfig(data_dir=str(real_data_dir)), tmp_path)
    assert (bars["adj_close"] < bars["close"]).mean() > 0.9  # distributions: adj_close != close
    total_return = bars["adj_close"].iloc[-1] / bars["adj_close"].iloc[0]
    assert total_return > bars["close"].iloc[-1] / bars["close"].iloc[0]

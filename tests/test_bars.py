"""check_bars: every layout we accept comes out in one shape; every bad table stops with one line."""

from __future__ import annotations

import io
import logging

import numpy as np
import pandas as pd
import pytest

from hftraining.data.bars import COLUMNS, check_bars, summarize
from hftraining.errors import UserError

GOOD = """date,open,high,low,close,adj_close,volume
2024-01-02,10,11,9,10.5,10.4,1000
2024-01-03,10.5,12,10,11.5,11.4,2000
2024-01-04,11.5,12,11,11.8,11.7,1500
"""


def table(text: str) -> pd.DataFrame:
    """A CSV read the way the csv source reads it (values as text)."""
    return pd.read_csv(io.StringIO(text), dtype=str)


def check(text: str) -> pd.DataFrame:
    return check_bars(table(text), "TEST", "test.csv")


def error_of(text: str) -> str:
    with pytest.raises(UserError) as info:
        check(text)
    message = str(info.value)
    assert "\n" not in message
    assert "test.csv" in message and "TEST" in message
    return message


def test_output_shape():
    bars = check(GOOD)
    assert list(bars.columns) == COLUMNS
    assert all(dtype == np.float64 for dtype in bars.dtypes)
    assert isinstance(bars.index, pd.DatetimeIndex) and bars.index.name == "date"
    assert bars.index.tz is None
    assert bars.index.is_monotonic_increasing and bars.index.is_unique
    assert bars.loc["2024-01-03", "adj_close"] == 11.4


def test_yahoo_layout_with_date_index():
    raw = table(GOOD).rename(columns={"date": "Date", "open": "Open", "high": "High", "low": "Low",
                                      "close": "Close", "adj_close": "Adj Close", "volume": "Volume"})
    raw["Date"] = pd.to_datetime(raw["Date"])
    raw = raw.set_index("Date")
    pd.testing.assert_frame_equal(check_bars(raw, "TEST", "yahoo"), check(GOOD))


def test_header_spelling_case_spaces_underscores():
    header = "DATE, Open ,HIGH,low,Close,ADJ_CLOSE,Volume"
    text = GOOD.replace("date,open,high,low,close,adj_close,volume", header)
    pd.testing.assert_frame_equal(check(text), check(GOOD))


def test_extra_columns_are_dropped():
    text = GOOD.replace("volume\n", "volume,dividends\n").replace("1000\n", "1000,0\n")
    assert list(check(text).columns) == COLUMNS


def test_missing_adj_close_uses_close_with_warning(caplog):
    text = table(GOOD).drop(columns="adj_close").to_csv(index=False)
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        bars = check(text)
    assert (bars["adj_close"] == bars["close"]).all()
    assert any("adj_close" in r.getMessage() and "TEST" in r.getMessage() for r in caplog.records)


def test_missing_column_is_named():
    text = "\n".join(line.rsplit(",", 1)[0] for line in GOOD.splitlines())
    assert "missing column volume" in error_of(text)


def test_empty_table():
    with pytest.raises(UserError, match="empty"):
        check_bars(pd.DataFrame(), "TEST", "test.csv")
    assert "no bars" in error_of(GOOD.splitlines()[0] + "\n")


def test_unparseable_date_names_value_and_row():
    message = error_of(GOOD.replace("2024-01-03", "2024-13-45"))
    assert "'2024-13-45'" in message and "row 2" in message


def test_unsorted_dates_are_sorted_with_warning(caplog):
    lines = GOOD.splitlines()
    text = "\n".join([lines[0], lines[3], lines[1], lines[2]])
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        bars = check(text)
    pd.testing.assert_frame_equal(bars, check(GOOD))
    assert any("sorted" in r.getMessage() for r in caplog.records)


def test_duplicated_dates_keep_last_with_warning(caplog):
    text = GOOD + "2024-01-03,10.5,12,10,11.6,11.5,2500\n"
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        bars = check(text)
    assert len(bars) == 3 and bars.index.is_unique
    assert bars.loc["2024-01-03", "close"] == 11.6
    assert any("1 duplicated" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("column", ["open", "close", "adj_close", "volume"])
def test_missing_value_names_first_date_never_filled(column):
    position = COLUMNS.index(column) + 1
    lines = GOOD.splitlines()
    cells = lines[2].split(",")
    cells[position] = ""
    lines[2] = ",".join(cells)
    message = error_of("\n".join(lines))
    assert "2024-01-03" in message and column in message


def test_non_numeric_value():
    message = error_of(GOOD.replace("11.5,11.4", "n/a?,11.4"))
    assert "close on 2024-01-03" in message and "n/a?" in message


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_non_positive_price_names_first_date(bad):
    message = error_of(GOOD.replace("2024-01-04,11.5", f"2024-01-04,{bad}"))
    assert "2024-01-04" in message and "price" in message


def test_high_below_low_names_first_date():
    message = error_of(GOOD.replace("2024-01-03,10.5,12,10", "2024-01-03,10.5,9,10"))
    assert "high < low on 2024-01-03" in message


def test_timezone_aware_dates_become_naive_midnight():
    raw = table(GOOD)
    raw["date"] = pd.to_datetime(raw["date"]).dt.tz_localize("America/New_York")
    bars = check_bars(raw, "TEST", "yahoo")
    assert bars.index.tz is None
    assert list(bars.index) == list(pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04"]))


def test_summarize_counts_gaps_and_zero_volume():
    dates = pd.DatetimeIndex(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-16",
                              "2024-01-17"], name="date")
    bars = pd.DataFrame({"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0, "adj_close": 10.0,
                         "volume": [5.0, 0.0, 5.0, 5.0, 0.0, 5.0]}, index=dates)
    summary = summarize(bars)
    assert summary["rows"] == 6
    assert (summary["first"], summary["last"]) == ("2024-01-02", "2024-01-17")
    assert summary["gaps"] == 1 and summary["largest_gap_days"] == 11
    assert summary["zero_volume_days"] == 2
    assert summary["min_price"] == 9.0

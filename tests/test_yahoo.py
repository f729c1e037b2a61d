"""The Yahoo source against frames shaped exactly like yf.download's, with no network at all."""

from __future__ import annotations

import json
import logging
from datetime import date

import numpy as np
import pandas as pd
import pytest
import yfinance

from hftraining.config import DataConfig
from hftraining.data import yahoo
from hftraining.data.sources import load_bars
from hftraining.errors import UserError

YAHOO_COLUMNS = ["Open", "High", "Low", "Close", "Adj Close", "Volume"]


def history(start: str, periods: int, seed: int = 0, adj_ratio: float = 0.9) -> pd.DataFrame:
    """One ticker as yfinance's Ticker.history returns it (daily, auto_adjust=False, actions=False)."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, periods)))
    index = pd.bdate_range(start, periods=periods, name="Date")
    return pd.DataFrame({"Open": close * 0.999, "High": close * 1.01, "Low": close * 0.99, "Close": close,
                         "Adj Close": close * adj_ratio, "Volume": rng.integers(1_000, 9_000, periods)},
                        index=pd.DatetimeIndex(index.to_numpy(), name="Date"))


def yahoo_frame(histories: dict[str, pd.DataFrame], multi_level_index: bool = True) -> pd.DataFrame:
    """What yf.download(..., group_by='column') builds from per-ticker histories (yfinance 1.x).

    Tickers are aligned on the union of their dates, concatenated with keys (Ticker, Price), swapped
    to (Price, Ticker) and sorted; a single ticker with multi_level_index=False is flattened.
    """
    union = None
    for frame in histories.values():
        union = frame.index if union is None else union.union(frame.index)
    union = pd.DatetimeIndex([], name="Date") if union is None else union
    aligned = {ticker: frame.reindex(union) for ticker, frame in histories.items()}
    data = pd.concat(aligned.values(), axis=1, sort=True, keys=aligned.keys(), names=["Ticker", "Price"])
    data.columns = data.columns.swaplevel(0, 1)
    data = data.sort_index(level=0, axis=1)
    if not multi_level_index and len(histories) == 1:
        data = data.droplevel(1, axis=1).rename_axis(None, axis=1)
    return data


class FakeDownload:
    """Stands in for yfinance.download: serves `universe` between start and the exclusive end."""

    def __init__(self, universe: dict[str, pd.DataFrame], multi_level_index: bool = True, extra: tuple = ()):
        self.universe = universe
        self.multi_level_index = multi_level_index
        self.extra = extra  # other tickers that come back in the same frame
        self.calls: list[dict] = []

    def __call__(self, tickers, start=None, end=None, period=None, interval="1d", **kwargs):
        self.calls.append(dict(tickers=tickers, start=start, end=end, period=period, interval=interval,
                               **kwargs))
        histories = {}
        names = [tickers] if isinstance(tickers, str) else list(tickers)   # one ticker, or a batch as a list
        for ticker in [*names, *self.extra]:
            nothing = pd.DataFrame(columns=YAHOO_COLUMNS, index=pd.DatetimeIndex([], name="Date"))
            frame = self.universe.get(ticker, nothing)
            if start is not None:
                frame = frame[frame.index >= pd.Timestamp(start)]
            if end is not None:
                frame = frame[frame.index < pd.Timestamp(end)]  # yfinance's end is exclusive
            histories[ticker] = frame
        return yahoo_frame(histories, self.multi_level_index)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Yahoo is 'reachable' and fixed in time; any real download attempt fails the test."""
    monkeypatch.setattr(yahoo, "yahoo_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(yahoo, "_today", lambda: date(2022, 1, 10))

    def refuse(*args, **kwargs):
        raise AssertionError("a test reached the real yfinance.download")

    monkeypatch.setattr(yfinance, "download", refuse)


def install(monkeypatch, fake: FakeDownload) -> FakeDownload:
    monkeypatch.setattr(yfinance, "download", fake)
    return fake


def yahoo_config(**kwargs) -> DataConfig:
    return DataConfig(source="yahoo", **kwargs)


def test_fake_frames_match_what_this_yfinance_builds(monkeypatch):
    """Run the real yf.download with a fake Ticker, so the frames above cannot drift from yfinance's."""
    multi = pytest.importorskip("yfinance.multi")
    histories = {"AAPL": history("2024-01-02", 5, seed=1), "MSFT": history("2024-01-03", 5, seed=2)}

    class FakeTicker:
        def __init__(self, ticker):
            self.ticker, self._price_history = ticker, None

        def history(self, **kwargs):
            return histories[self.ticker].copy()

    monkeypatch.setattr(multi, "Ticker", FakeTicker)
    real = multi.download
    for tickers in (["AAPL"], ["AAPL", "MSFT"]):
        for flat in (False, True):
            built = real(tickers if len(tickers) > 1 else tickers[0], start="2024-01-01", auto_adjust=False,
                         actions=False, progress=False, threads=False, multi_level_index=not flat)
            expected = yahoo_frame({t: histories[t] for t in tickers}, multi_level_index=not flat)
            pd.testing.assert_frame_equal(built, expected)


@pytest.mark.parametrize("flat", [False, True])
def test_single_ticker_frames_flat_and_multiindex(monkeypatch, tmp_path, flat):
    source = history("2021-01-04", 60)
    fake = install(monkeypatch, FakeDownload({"AAPL": source}, multi_level_index=not flat))
    bars = load_bars("aapl", yahoo_config(), tmp_path)
    assert list(bars.columns) == ["open", "high", "low", "close", "adj_close", "volume"]
    assert bars.index.name == "date" and len(bars) == 60
    np.testing.assert_allclose(bars["adj_close"], source["Adj Close"])
    np.testing.assert_allclose(bars["volume"], source["Volume"])
    assert bars.attrs["source"] == "yahoo"
    assert bars.attrs["origin"] == f"Yahoo Finance (cached {tmp_path / 'yahoo' / 'AAPL_1d.csv'})"
    call = fake.calls[0]
    assert call["tickers"] == "AAPL" and call["period"] == "max" and call["start"] is None
    assert call["auto_adjust"] is False and call["actions"] is False
    assert call["progress"] is False and call["threads"] is False


def test_cli_data_fetch_says_what_it_stored_on_stdout(monkeypatch, tmp_path, capsys):
    from hftraining.cli import main

    install(monkeypatch, FakeDownload({"AAPL": history("2021-01-04", 100)}))
    assert main(["data", "fetch", "--stocks", "AAPL", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("AAPL: 100 bars 2021-01-04 .. ") and "Traceback" not in captured.err
    assert main(["data", "fetch", "--stocks", "AAPL", "--out", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["AAPL"]["rows"] == 100        # --json: the only stdout line


def test_multi_ticker_frame_picks_the_requested_one(monkeypatch, tmp_path):
    aapl = history("2021-01-04", 40, seed=1).drop(index=pd.Timestamp("2021-01-12"))
    msft = history("2021-01-04", 40, seed=2)
    install(monkeypatch, FakeDownload({"AAPL": aapl, "MSFT": msft}, extra=("MSFT",)))
    bars = load_bars("AAPL", yahoo_config(), tmp_path)
    assert len(bars) == 39 and pd.Timestamp("2021-01-12") not in bars.index  # the union row is dropped
    np.testing.assert_allclose(bars["close"], aapl["Close"])


def test_end_is_inclusive_and_today_is_never_requested(monkeypatch, tmp_path):
    fake = install(monkeypatch, FakeDownload({"AAPL": history("2021-01-04", 300)}))
    bars = load_bars("AAPL", yahoo_config(start="2021-02-01", end="2021-03-01"), tmp_path)
    assert fake.calls[0]["end"] == "2021-03-02"  # yfinance's end is exclusive
    assert (bars.index[0], bars.index[-1]) == (pd.Timestamp("2021-02-01"), pd.Timestamp("2021-03-01"))
    load_bars("AAPL", yahoo_config(refresh=True), tmp_path)
    assert fake.calls[-1]["end"] == "2022-01-10"  # 'today': its bar may still be forming


def test_cache_is_reused(monkeypatch, tmp_path):
    fake = install(monkeypatch, FakeDownload({"AAPL": history("2021-01-04", 100)}))
    first = load_bars("AAPL", yahoo_config(), tmp_path)
    second = load_bars("AAPL", yahoo_config(start="2021-02-01"), tmp_path)
    assert len(fake.calls) == 1
    assert (tmp_path / "yahoo" / "AAPL_1d.csv").is_file()
    pd.testing.assert_frame_equal(second, first.loc["2021-02-01":])


def test_incremental_refresh_downloads_only_newer_bars(monkeypatch, tmp_path):
    full = history("2021-01-04", 200)
    fake = install(monkeypatch, FakeDownload({"AAPL": full}))
    early = load_bars("AAPL", yahoo_config(end="2021-03-31"), tmp_path)
    later = load_bars("AAPL", yahoo_config(end="2021-08-31"), tmp_path)
    assert len(fake.calls) == 2
    # The top-up starts at the last cached bar (one bar of overlap checks the adjustment basis).
    assert fake.calls[1]["start"] == f"{early.index[-1]:%Y-%m-%d}" and fake.calls[1]["end"] == "2021-09-01"
    expected = full.loc[:"2021-08-31"]
    assert len(later) == len(expected) and later.index.is_unique
    np.testing.assert_allclose(later["adj_close"], expected["Adj Close"])
    cached = pd.read_csv(tmp_path / "yahoo" / "AAPL_1d.csv", index_col="date", parse_dates=True)
    assert len(cached) == len(expected)
    record = json.loads((tmp_path / "yahoo" / "AAPL_1d.json").read_text())
    assert record["checked_through"] == "2021-08-31"


def test_refresh_flag_tops_up_an_open_ended_cache(monkeypatch, tmp_path):
    fake = install(monkeypatch, FakeDownload({"AAPL": history("2021-01-04", 100)}))
    load_bars("AAPL", yahoo_config(end="2021-03-01"), tmp_path)
    load_bars("AAPL", yahoo_config(), tmp_path)  # no end, no refresh: the cache as it is
    assert len(fake.calls) == 1
    bars = load_bars("AAPL", yahoo_config(refresh=True), tmp_path)
    assert len(fake.calls) == 2 and len(bars) == 100


def test_request_ending_on_a_holiday_does_not_download_again(monkeypatch, tmp_path):
    fake = install(monkeypatch, FakeDownload({"AAPL": history("2021-01-04", 300)}))
    load_bars("AAPL", yahoo_config(end="2021-07-04"), tmp_path)  # a Sunday
    load_bars("AAPL", yahoo_config(end="2021-07-04"), tmp_path)
    assert len(fake.calls) == 1


def test_readjusted_history_is_downloaded_again(monkeypatch, tmp_path, caplog):
    fake = install(monkeypatch, FakeDownload({"AAPL": history("2021-01-04", 200, adj_ratio=0.9)}))
    load_bars("AAPL", yahoo_config(end="2021-03-31"), tmp_path)
    readjusted = history("2021-01-04", 200, adj_ratio=0.8)  # a dividend moved every adjusted price
    fake.universe["AAPL"] = readjusted
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        bars = load_bars("AAPL", yahoo_config(end="2021-08-31"), tmp_path)
    assert fake.calls[-1]["period"] == "max"
    np.testing.assert_allclose(bars["adj_close"], readjusted.loc[:"2021-08-31", "Adj Close"])
    assert any("full history" in r.getMessage() for r in caplog.records)


def test_unknown_ticker(monkeypatch, tmp_path):
    install(monkeypatch, FakeDownload({}))
    with pytest.raises(UserError, match="unknown ticker 'NOPE' on Yahoo Finance"):
        load_bars("NOPE", yahoo_config(), tmp_path)
    assert not (tmp_path / "yahoo" / "NOPE_1d.csv").exists()


def test_offline_is_one_line_and_never_downloads(monkeypatch, tmp_path):
    fake = install(monkeypatch, FakeDownload({"AAPL": history("2021-01-04", 10)}))
    monkeypatch.setattr(yahoo, "yahoo_reachable", lambda timeout=3.0: False)
    with pytest.raises(UserError) as info:
        load_bars("AAPL", yahoo_config(), tmp_path)
    assert str(info.value) == ("cannot reach Yahoo Finance to download AAPL (offline?): "
                               "use --data-dir DIR with <SYMBOL>.csv files, or --source synthetic")
    assert fake.calls == []


def test_offline_with_a_sufficient_cache_still_works(monkeypatch, tmp_path):
    install(monkeypatch, FakeDownload({"AAPL": history("2021-01-04", 50)}))
    load_bars("AAPL", yahoo_config(), tmp_path)
    monkeypatch.setattr(yahoo, "yahoo_reachable", lambda timeout=3.0: False)
    assert len(load_bars("AAPL", DataConfig(source="auto"), tmp_path)) == 50


def test_yfinance_exception_becomes_one_line(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("Too Many Requests. Rate limited.\nmore detail")

    monkeypatch.setattr(yfinance, "download", broken)
    expected = r"^Yahoo Finance download of AAPL failed: Too Many Requests\. Rate limited\.$"
    with pytest.raises(UserError, match=expected):
        load_bars("AAPL", yahoo_config(), tmp_path)


def test_bad_download_is_not_cached(monkeypatch, tmp_path):
    source = history("2021-01-04", 30)
    source.iloc[5, source.columns.get_loc("Close")] = np.nan
    install(monkeypatch, FakeDownload({"AAPL": source}))
    with pytest.raises(UserError, match="missing close on 2021-01-11"):
        load_bars("AAPL", yahoo_config(), tmp_path)
    assert not (tmp_path / "yahoo" / "AAPL_1d.csv").exists()


def test_interval_cannot_name_a_path(tmp_path):
    with pytest.raises(UserError, match="not a Yahoo interval"):
        load_bars("AAPL", yahoo_config(interval="../1d"), tmp_path)


def test_empty_answer_while_the_network_drops_is_offline(monkeypatch, tmp_path):
    install(monkeypatch, FakeDownload({}))
    answers = iter([True, False])  # reachable before the download, gone after it
    monkeypatch.setattr(yahoo, "yahoo_reachable", lambda timeout=3.0: next(answers))
    with pytest.raises(UserError, match="cannot reach Yahoo Finance"):
        load_bars("AAPL", yahoo_config(), tmp_path)


def test_rate_limit_is_named_and_yfinance_logs_stay_quiet(monkeypatch, tmp_path, capsys):
    fake = FakeDownload({})

    def rate_limited(*args, **kwargs):
        logger = logging.getLogger("yfinance")
        logger.error("\n1 Failed download:")
        logger.error("['AAPL']: YFRateLimitError('Too Many Requests. Rate limited. Try after a while.')")
        return fake(*args, **kwargs)

    monkeypatch.setattr(yfinance, "download", rate_limited)
    with pytest.raises(UserError, match="rate-limiting"):
        load_bars("AAPL", yahoo_config(), tmp_path)
    assert "Failed download" not in capsys.readouterr().err


# --- many symbols: batched downloads ---------------------------------------------------------------

class LoggingDownload(FakeDownload):
    """FakeDownload that also logs yfinance's failure lines for tickers it does not know, as yfinance 1.x does."""

    def __call__(self, tickers, *args, **kwargs):
        names = [tickers] if isinstance(tickers, str) else list(tickers)
        unknown = [t for t in names if t not in self.universe]
        if unknown:
            logger = logging.getLogger("yfinance")
            logger.error("\n%d Failed download%s:", len(unknown), "s" if len(unknown) > 1 else "")
            logger.error(f"{unknown}: YFTzMissingError('possibly delisted; no timezone found')")
        return super().__call__(tickers, *args, **kwargs)


def test_many_symbols_download_in_one_batched_call(monkeypatch, tmp_path):
    universe = {s: history("2021-01-04", 80 + i, seed=i) for i, s in enumerate(["AAA", "BBB", "CCC"])}
    fake = install(monkeypatch, LoggingDownload(universe))
    loaded, failed = yahoo.fetch_yahoo(["AAA", "BBB", "NOPE", "CCC"], yahoo_config(end="2021-06-30"), tmp_path)
    assert len(fake.calls) == 1
    call = fake.calls[0]
    assert call["tickers"] == ["AAA", "BBB", "NOPE", "CCC"] and call["period"] == "max" and call["threads"] is True
    assert sorted(loaded) == ["AAA", "BBB", "CCC"] and list(failed) == ["NOPE"]
    assert "unknown ticker 'NOPE'" in str(failed["NOPE"]) and "YFTzMissingError" in str(failed["NOPE"])
    for symbol in ("AAA", "BBB", "CCC"):
        np.testing.assert_allclose(loaded[symbol]["adj_close"], universe[symbol]["Adj Close"])
        assert (tmp_path / "yahoo" / f"{symbol}_1d.csv").is_file()
        assert loaded[symbol].attrs["source"] == "yahoo"
    assert not (tmp_path / "yahoo" / "NOPE_1d.csv").exists()

    loaded, failed = yahoo.fetch_yahoo(["AAA", "BBB", "CCC"], yahoo_config(end="2021-03-31"), tmp_path)
    assert len(fake.calls) == 1 and loaded == {} and failed == {}     # fresh caches: read where they are used


def test_stale_caches_are_topped_up_together(monkeypatch, tmp_path):
    universe = {s: history("2021-01-04", 200, seed=i) for i, s in enumerate(["AAA", "BBB"])}
    fake = install(monkeypatch, FakeDownload(universe))
    yahoo.fetch_yahoo(["AAA", "BBB"], yahoo_config(end="2021-03-31"), tmp_path)
    universe["BBB"] = history("2021-01-04", 200, seed=1, adj_ratio=0.8)    # BBB re-adjusted meanwhile
    loaded, failed = yahoo.fetch_yahoo(["AAA", "BBB"], yahoo_config(end="2021-08-31"), tmp_path)
    assert failed == {}
    top_up, again = fake.calls[1], fake.calls[2]
    assert top_up["tickers"] == ["AAA", "BBB"] and top_up["start"] == "2021-03-31"
    assert again["tickers"] == "BBB" and again["period"] == "max"          # only the re-adjusted one, whole
    for symbol in ("AAA", "BBB"):
        np.testing.assert_allclose(loaded[symbol]["adj_close"], universe[symbol].loc[:"2021-08-31", "Adj Close"])
    assert len(fake.calls) == 3


def test_batches_are_capped(monkeypatch, tmp_path):
    monkeypatch.setattr(yahoo, "BATCH_SIZE", 2)
    universe = {s: history("2021-01-04", 60, seed=i) for i, s in enumerate(["AAA", "BBB", "CCC"])}
    fake = install(monkeypatch, FakeDownload(universe))
    loaded, _ = yahoo.fetch_yahoo(["AAA", "BBB", "CCC"], yahoo_config(), tmp_path)
    assert [c["tickers"] for c in fake.calls] == [["AAA", "BBB"], "CCC"] and len(loaded) == 3


def test_a_rate_limited_batch_stops_everything_and_caches_nothing(monkeypatch, tmp_path):
    fake = FakeDownload({"AAA": history("2021-01-04", 60)})

    def rate_limited(*args, **kwargs):
        logging.getLogger("yfinance").error("['AAA', 'BBB']: YFRateLimitError('Too Many Requests.')")
        return fake(*args, **{**kwargs, "start": "2030-01-01"})           # and nothing comes back

    monkeypatch.setattr(yfinance, "download", rate_limited)
    with pytest.raises(UserError, match="rate-limiting"):
        yahoo.fetch_yahoo(["AAA", "BBB"], yahoo_config(), tmp_path)
    assert not (tmp_path / "yahoo").exists() or not any((tmp_path / "yahoo").glob("*.csv"))


def test_offline_batch_is_one_line(monkeypatch, tmp_path):
    install(monkeypatch, FakeDownload({}))
    monkeypatch.setattr(yahoo, "yahoo_reachable", lambda timeout=3.0: False)
    with pytest.raises(UserError, match=r"^cannot reach Yahoo Finance to download AAA, BBB \(offline\?\)"):
        yahoo.fetch_yahoo(["AAA", "BBB"], yahoo_config(), tmp_path)


def test_a_universe_from_yahoo_skips_the_bad_symbol(monkeypatch, tmp_path, caplog):
    """Batched download, parallel featurising and data.on_bad_symbol=skip end to end on a ragged panel."""
    from hftraining.config import load_config
    from hftraining.data.ragged import build_ragged_panel

    universe = {"AAA": history("2019-01-01", 700, seed=1), "BBB": history("2020-01-01", 450, seed=2)}
    fake = install(monkeypatch, LoggingDownload(universe))
    cfg = load_config(None, ["data.source=yahoo", "data.forecast_backend=none", "data.context_length=16",
                             "data.horizon=3", "data.on_bad_symbol=skip", "data.end=2021-12-31"])
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        panel = build_ragged_panel(["AAA", "NOPE", "BBB"], cfg, tmp_path, progress=False)
    assert len(fake.calls) == 1 and panel.symbols == ["AAA", "BBB"]
    assert list(panel.skipped) == ["NOPE"] and "unknown ticker" in panel.skipped["NOPE"]
    lines = [r.getMessage() for r in caplog.records if "NOPE" in r.getMessage()]
    assert lines[0].startswith("bad symbol NOPE: unknown ticker 'NOPE'") and "\n" not in lines[0]
    assert panel.dates[panel.rows_of(0)][0] < np.datetime64("2020-01-01")   # AAA keeps its older bars


def test_several_bad_symbols_are_listed_before_the_run_stops(monkeypatch, tmp_path, caplog):
    from hftraining.config import load_config
    from hftraining.data.universe import featurise_universe

    install(monkeypatch, LoggingDownload({"AAA": history("2019-01-01", 300)}))
    cfg = load_config(None, ["data.source=yahoo", "data.forecast_backend=none"])
    stop = r"^2 symbols failed to load \(NOPE, NADA; reasons above\).*on_bad_symbol=skip"
    with caplog.at_level(logging.WARNING, logger="hftraining"), pytest.raises(UserError, match=stop):
        featurise_universe(["AAA", "NOPE", "NADA"], cfg, tmp_path, progress=False)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["bad symbol NOPE", "bad symbol NADA"]


def test_downloaded_bars_equal_the_cache_read_back_bit_for_bit(monkeypatch, tmp_path):
    """The downloading process (rank 0) and every reader of the cache (other ranks, later runs) see the same bits."""
    fake = install(monkeypatch, FakeDownload({"AAPL": history("2021-01-04", 300)}))
    first = load_bars("AAPL", yahoo_config(end="2021-06-30"), tmp_path)          # downloaded now
    again = load_bars("AAPL", yahoo_config(end="2021-06-30"), tmp_path)          # from the cache
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    topped = load_bars("AAPL", yahoo_config(end="2021-12-31"), tmp_path)         # a top-up, then the cache
    pd.testing.assert_frame_equal(topped, load_bars("AAPL", yahoo_config(end="2021-12-31"), tmp_path),
                                  check_exact=True)
    assert len(fake.calls) == 2

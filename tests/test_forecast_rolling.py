"""Rolling driver and cache: hits, incremental appends, revised history, corrupt files, progress."""

import logging

import numpy as np
import pytest
from tiny_models import random_prices, tiny_model_dir

from hftraining.config import DataConfig
from hftraining.errors import UserError
from hftraining.forecasting import forecast_features, precompute
from hftraining.forecasting.rolling import causal_ffill

L = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_forecasters")




def stat_data(**kw):
    return DataConfig(forecast_backend="statistical", forecast_context_length=L, **kw)


def bolt_data(**kw):
    return DataConfig(
        forecast_backend="chronos",
        chronos_model_id=str(tiny_model_dir("bolt")),
        forecast_context_length=L,
        **kw,
    )


@pytest.mark.parametrize("make_data", [stat_data, bolt_data], ids=["statistical", "chronos-bolt"])
def test_second_identical_call_is_all_cache_hits(tmp_path, make_data):
    prices = random_prices(150)
    first = forecast_features("AAA", prices, make_data(), tmp_path, progress=False)
    second = forecast_features("AAA", prices, make_data(), tmp_path, progress=False)
    assert first.info["computed"] == first.info["windows"] == 150 - L + 1 and first.info["cache_hits"] == 0
    assert second.info["computed"] == 0 and second.info["cache_hits"] == second.info["windows"]
    np.testing.assert_array_equal(first.values, second.values)
    assert len(list(tmp_path.glob("AAA.*.npz"))) == 1


def test_appending_bars_computes_only_the_new_windows(tmp_path):
    prices = random_prices(200, seed=1)
    forecast_features("AAA", prices[:180], stat_data(), tmp_path, progress=False)
    grown = forecast_features("AAA", prices, stat_data(), tmp_path, progress=False)
    assert grown.info["computed"] == 20 and grown.info["cache_hits"] == 180 - L + 1
    np.testing.assert_array_equal(
        grown.values, forecast_features("AAA", prices, stat_data(), None, False).values
    )
    shorter = forecast_features("AAA", prices[:150], stat_data(), tmp_path, progress=False)
    assert shorter.info["computed"] == 0
    np.testing.assert_array_equal(shorter.values, grown.values[:150])


def test_appending_bars_with_a_model_reuses_the_cached_rows(tmp_path):
    prices = random_prices(160, seed=2)
    forecast_features("AAA", prices[:140], bolt_data(), tmp_path, progress=False)
    grown = forecast_features("AAA", prices, bolt_data(), tmp_path, progress=False)
    assert grown.info["computed"] == 20
    full = forecast_features("AAA", prices, bolt_data(), None, progress=False).values
    np.testing.assert_array_equal(grown.values, full)  # every model call has one shape: bit for bit


def test_revised_history_recomputes_from_the_first_changed_bar(tmp_path):
    prices = random_prices(150, seed=3)
    forecast_features("AAA", prices, stat_data(), tmp_path, progress=False)
    revised = prices.copy()
    revised[100:] *= 0.5  # e.g. a split adjustment applied from bar 100
    ff = forecast_features("AAA", revised, stat_data(), tmp_path, progress=False)
    assert ff.info["computed"] == 50 and ff.info["cache_hits"] == 100 - (L - 1)
    np.testing.assert_array_equal(
        ff.values, forecast_features("AAA", revised, stat_data(), None, False).values
    )


def test_cache_key_separates_settings_and_symbols(tmp_path):
    prices = random_prices(100)
    forecast_features("AAA", prices, stat_data(), tmp_path, progress=False)
    forecast_features("AAA", prices, stat_data(toto_horizon=3), tmp_path, progress=False)
    forecast_features("BBB", prices, stat_data(), tmp_path, progress=False)
    forecast_features("AAA", prices, bolt_data(), tmp_path, progress=False)
    names = sorted(p.name.split(".")[:2] == ["AAA", "statistical"] for p in tmp_path.glob("*.npz"))
    assert len(names) == 4 and sum(names) == 2


def test_corrupt_cache_file_is_reported_and_recomputed(tmp_path, caplog):
    prices = random_prices(100)
    good = forecast_features("AAA", prices, stat_data(), tmp_path, progress=False)
    (path,) = tmp_path.glob("AAA.*.npz")
    path.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="hftraining"):
        again = forecast_features("AAA", prices, stat_data(), tmp_path, progress=False)
    assert "unreadable" in caplog.text and str(path) in caplog.text
    assert again.info["computed"] == again.info["windows"]
    np.testing.assert_array_equal(again.values, good.values)
    assert forecast_features("AAA", prices, stat_data(), tmp_path, progress=False).info["computed"] == 0


def test_progress_bar_goes_to_stderr_and_quiet_mode_prints_nothing(capsys):
    prices = random_prices(80)
    forecast_features("AAA", prices, bolt_data(), None, progress=False)
    capsys.readouterr()  # drop whatever loading the model printed
    forecast_features("AAA", prices, bolt_data(), None, progress=False)
    assert capsys.readouterr().err == ""
    forecast_features("AAA", prices, bolt_data(), None, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "AAA chronos forecasts" in captured.err


def test_precompute_summarises_each_symbol(tmp_path):
    prices = {"AAA": random_prices(90, seed=1), "BBB": random_prices(70, seed=2)}
    rows = precompute(prices, stat_data(), tmp_path, progress=False)
    assert [r["symbol"] for r in rows] == ["AAA", "BBB"]
    assert [r["computed"] for r in rows] == [90 - L + 1, 70 - L + 1]
    assert all(r["backend"] == "statistical" and r["fallback_reason"] is None for r in rows)
    assert [r["cache_hits"] for r in precompute(prices, stat_data(), tmp_path, progress=False)] == [59, 39]


def test_backend_none_is_the_callers_job():
    with pytest.raises(UserError, match="none"):
        forecast_features("AAA", random_prices(50), DataConfig(forecast_backend="none"), None, progress=False)


def test_causal_ffill():
    x = np.array([np.nan, 1.0, np.nan, 0.0, 3.0, np.inf])
    np.testing.assert_array_equal(causal_ffill(x), [np.nan, 1.0, 1.0, 1.0, 3.0, 3.0])

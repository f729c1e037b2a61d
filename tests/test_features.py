"""Causal features: perturbing bars after t never changes a feature at or before t; no back-fill."""

import numpy as np
import pandas as pd
import pytest

from hftraining.data.features import FEATURE_NAMES, WARMUP_BARS, adjusted_ohlc, compute_features
from hftraining.data.synthetic import generate_bars


@pytest.fixture
def bars():
    return generate_bars("SYN", 400, seed=3)


def perturb_after(bars: pd.DataFrame, t: int, factor: float = 1.5) -> pd.DataFrame:
    out = bars.copy()
    cols = ["open", "high", "low", "close", "adj_close"]
    out.iloc[t + 1:, [out.columns.get_loc(c) for c in cols]] *= factor
    out.iloc[t + 1:, out.columns.get_loc("volume")] *= 3
    return out


def test_perturbing_the_future_leaves_the_past_unchanged(bars):
    t = 250
    base = compute_features(bars)
    moved = compute_features(perturb_after(bars, t))
    pd.testing.assert_frame_equal(base.iloc[: t + 1], moved.iloc[: t + 1])
    assert not np.allclose(base.iloc[t + 1:].fillna(0).to_numpy(), moved.iloc[t + 1:].fillna(0).to_numpy())


def test_feature_at_t_equals_feature_from_history_alone(bars):
    full = compute_features(bars)
    for t in (WARMUP_BARS, 200, 399):
        alone = compute_features(bars.iloc[: t + 1])
        np.testing.assert_allclose(full.iloc[t].to_numpy(), alone.iloc[-1].to_numpy(), rtol=1e-12, atol=1e-12)


def test_warmup_rows_are_nan_not_backfilled(bars):
    features = compute_features(bars)
    assert list(features.columns) == FEATURE_NAMES
    assert features.iloc[0].isna().any()
    assert features["ret_60"].iloc[:60].isna().all()
    assert features.iloc[WARMUP_BARS:].notna().all().all()


def test_returns_use_adjusted_close():
    dates = pd.bdate_range("2020-01-01", periods=3)
    bars = pd.DataFrame({"open": [10, 10, 10], "high": [11, 11, 11], "low": [9, 9, 9], "close": [10.0, 10, 10],
                         "adj_close": [5.0, 5.5, 5.5], "volume": [1, 1, 1]}, index=dates)
    px = adjusted_ohlc(bars)
    assert px["close"].tolist() == [5.0, 5.5, 5.5]
    assert px["high"].iloc[0] == pytest.approx(5.5)
    assert compute_features(bars)["ret_1"].iloc[1] == pytest.approx(np.log(1.1))

"""Panel, chronological splits with embargo, train-only scaler, windows within one symbol."""

import numpy as np
import pandas as pd
import pytest
from test_features import perturb_after

from hftraining.config import load_config
from hftraining.data.features import compute_features
from hftraining.data.panel import Scaler, assemble_panel, make_splits, required_bars, symbol_frame, window_ends
from hftraining.data.synthetic import generate_bars
from hftraining.errors import UserError


@pytest.fixture
def config():
    return load_config(None, ["data.context_length=16", "data.horizon=3", "data.forecast_backend=none"])


def frames(config, symbols=("AAA", "BBB"), n=600, perturb=None):
    out = {}
    for s in symbols:
        bars = generate_bars(s, n, seed=1)
        if perturb is not None and s == symbols[0]:
            bars = perturb_after(bars, perturb)
        out[s] = symbol_frame(s, bars, config, None, progress=False)[0]
    return out


def test_splits_are_ordered_with_embargo(config):
    splits = make_splits(800, config)
    embargo = config.data.context_length + config.data.horizon
    assert splits.embargo == embargo
    assert splits.train.start == config.data.context_length - 1
    assert splits.val.start - splits.train.stop == embargo
    assert splits.test.start - splits.val.stop == embargo
    assert splits.test.stop == 800 - 1          # the last bar has no next-bar return
    # The earliest validation window starts after the last training label (close train.stop).
    assert splits.val.start - config.data.context_length + 1 > splits.train.stop + config.data.horizon - 1


def test_too_short_history_names_the_need(config):
    with pytest.raises(UserError, match=f"need at least {required_bars(config)} bars"):
        make_splits(60, config)


def test_scaler_is_fitted_on_training_rows_only(config):
    panel = assemble_panel(frames(config))
    splits = make_splits(panel.n_time, config)
    scaler = Scaler.fit(panel, splits.train)
    changed = panel.features.copy()
    changed[splits.train.stop:] *= 100.0            # anything after training must not move the scaler
    panel2 = type(panel)(**{**panel.__dict__, "features": changed})
    again = Scaler.fit(panel2, splits.train)
    np.testing.assert_array_equal(scaler.mean, again.mean)
    train_rows = panel.features[: splits.train.stop, 0].astype(np.float64)
    np.testing.assert_allclose(scaler.mean[0], train_rows.mean(axis=0), rtol=1e-4, atol=1e-9)


def test_panel_is_causal_under_future_perturbation(config):
    t = 400
    a = assemble_panel(frames(config))
    b = assemble_panel(frames(config, perturb=t))
    cut = int(np.searchsorted(a.dates, np.datetime64(generate_bars("AAA", 600, seed=1).index[t])))
    np.testing.assert_array_equal(a.features[: cut + 1], b.features[: cut + 1])
    np.testing.assert_array_equal(a.returns[:cut], b.returns[:cut])
    assert not np.array_equal(a.features[cut + 1:], b.features[cut + 1:])


def test_returns_are_next_bar_simple_returns_of_adjusted_close(config):
    panel = assemble_panel(frames(config))
    close = panel.ohlc[..., 3]
    np.testing.assert_allclose(panel.returns[:-1], close[1:] / close[:-1] - 1)
    assert np.isnan(panel.returns[-1]).all()


def test_windows_never_cross_symbols(config):
    panel = assemble_panel(frames(config, symbols=("AAA", "BBB", "CCC")))
    splits = make_splits(panel.n_time, config)
    ends = window_ends(splits.train, 3)
    assert set(ends[:, 1]) == {0, 1, 2}
    assert ends[:, 0].min() - config.data.context_length + 1 >= 0
    assert ends[:, 0].max() < splits.train.stop


def test_symbols_align_on_common_dates(config):
    f = frames(config)
    f["BBB"] = f["BBB"].iloc[100:]                  # BBB starts later
    panel = assemble_panel(f)
    assert pd.Timestamp(panel.dates[0]) >= f["BBB"].dropna().index[0]
    assert panel.features.shape[1] == 2


def test_scaler_refuses_a_different_feature_list(config):
    panel = assemble_panel(frames(config))
    scaler = Scaler.fit(panel, make_splits(panel.n_time, config).train)
    scaler.feature_names = scaler.feature_names[:-1] + ["other"]
    with pytest.raises(UserError, match="feature list differs"):
        scaler.transform(panel)


def test_features_match_compute_features(config):
    bars = generate_bars("AAA", 600, seed=1)
    panel = assemble_panel({"AAA": symbol_frame("AAA", bars, config, None, progress=False)[0]})
    expected = compute_features(bars).dropna()
    np.testing.assert_allclose(panel.features[:, 0], expected.to_numpy(np.float32))


def test_an_embargo_shorter_than_a_window_plus_the_horizon_is_refused(tmp_path):
    """DESIGN invariant 2: splits are separated by at least context + horizon bars."""
    from fake_runs import tiny_config

    cfg = tiny_config(tmp_path, overrides=["data.embargo=2"])    # context 16 + horizon 3 = 19 needed
    with pytest.raises(UserError, match="data.embargo"):
        make_splits(2000, cfg)
    ok = tiny_config(tmp_path, overrides=["data.embargo=19"])
    assert make_splits(2000, ok).embargo == 19

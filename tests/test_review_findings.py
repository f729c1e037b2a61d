"""Defects found in review, each pinned by a test that failed before its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from fake_runs import make_run, tiny_config, write_csv

from hftraining import checkpoint as ckpt
from hftraining.data.panel import build_panel
from hftraining.evaluation import model_positions
from hftraining.forecasting import base as forecast_base
from hftraining.forecasting.statistical import StatisticalBackend
from hftraining.paper import DECISIONS, CsvReplay, LiveTrader, run_paper


class _OtherForecaster(StatisticalBackend):
    """Stands in for Toto becoming available later (a GPU machine): different numbers, name 'toto'."""

    name = "toto"

    def forecast_series(self, prices, first_end):
        last, mean, std = super().forecast_series(prices, first_end)
        return last, mean * 1.05, std * 3.0


@pytest.fixture
def toto_fell_back_then_appears(tmp_path, monkeypatch):
    """A run that asked for Toto on a CPU machine (so it trained on the statistical fallback)."""
    monkeypatch.delenv("HFTRAIN_TOTO_ALLOW_CPU", raising=False)
    forecast_base.clear_loaded()
    write_csv(tmp_path / "train", bars=300)
    cfg = tiny_config(tmp_path, data_dir=tmp_path / "train",
                      overrides=["data.forecast_backend=toto", "data.toto_device=cuda"])
    run = make_run(cfg, seed=1)
    meta = ckpt.open_run(run).metadata
    assert meta["forecast"]["DEMO"]["backend"] == "statistical"      # what the weights learned from
    real_build = forecast_base._build
    monkeypatch.setattr(forecast_base, "_build",
                        lambda data, requested: _OtherForecaster(data) if requested == "toto"
                        else real_build(data, requested))
    forecast_base.clear_loaded()
    yield tmp_path, run, cfg
    forecast_base.clear_loaded()


def _statistical_positions(root, run_dir, data_dir):
    cfg = tiny_config(root, data_dir=data_dir, overrides=["data.forecast_backend=statistical"])
    panel = build_panel(["DEMO"], cfg, root, progress=False, min_bars=20)
    run = ckpt.open_run(run_dir)
    model = run.model()
    x = torch.from_numpy(run.scaler.transform(panel))
    decisions = range(model.context_length - 1, panel.n_time)
    return pd.DatetimeIndex(panel.dates[decisions.start:]), model_positions(model, x, panel, 0, decisions, run.config)


def test_paper_trades_on_the_forecaster_the_run_actually_used(toto_fell_back_then_appears):
    root, run, _ = toto_fell_back_then_appears
    replay = root / "replay" / "DEMO.csv"
    replay.parent.mkdir()
    pd.read_csv(root / "train" / "DEMO.csv").iloc[:140].to_csv(replay, index=False)
    start = pd.read_csv(replay)["date"].iloc[100]
    run_paper(LiveTrader(run, root / "state", start=start), CsvReplay("DEMO", replay))
    log = pd.read_csv(root / "state" / DECISIONS, parse_dates=["date"]).set_index("date")
    dates, expected = _statistical_positions(root, run, replay.parent)
    paper = log["position"].reindex(dates[dates >= pd.Timestamp(start)])
    assert len(paper) > 10 and not paper.isna().any()
    np.testing.assert_allclose(paper.to_numpy(), expected[dates >= pd.Timestamp(start)], rtol=0, atol=1e-6)


def test_ensemble_scores_members_on_the_forecaster_they_actually_used(toto_fell_back_then_appears):
    from hftraining.ensemble import run_ensemble

    root, run, _ = toto_fell_back_then_appears
    result = run_ensemble([run, run], stock="DEMO")
    frame = pd.read_csv(result.report_dir / "test_returns.csv", parse_dates=["date"]).set_index("date")
    dates, expected = _statistical_positions(root, run, root / "train")
    np.testing.assert_allclose(frame["position"].to_numpy(),
                               pd.Series(expected, index=dates).reindex(frame.index).to_numpy(), rtol=0, atol=1e-6)


def test_an_embargo_shorter_than_a_window_plus_the_horizon_is_refused(tmp_path):
    """DESIGN invariant 2: splits are separated by at least context + horizon bars."""
    from hftraining.data.panel import make_splits
    from hftraining.errors import UserError

    cfg = tiny_config(tmp_path, overrides=["data.embargo=2"])    # context 16 + horizon 3 = 19 needed
    with pytest.raises(UserError, match="data.embargo"):
        make_splits(2000, cfg)
    ok = tiny_config(tmp_path, overrides=["data.embargo=19"])
    assert make_splits(2000, ok).embargo == 19

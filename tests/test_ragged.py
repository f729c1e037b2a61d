"""Ragged panels: each symbol on its own full history, calendar splits, windows inside one symbol and run.

The universe used here (CSV files, forecasts off so the warm-up is exactly WARMUP_BARS):
    AAA: 700 business days ending 2024-12-31, with a hole of 30 bars (positions 300..329) removed;
    BBB: the last 400 of those business days (it lists 300 days after AAA).
An aligned panel would start both at BBB's first complete bar and throw away 240 of AAA's bars.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_features import perturb_after

from hftraining import trainer
from hftraining.base_model_trainer import train_base
from hftraining.config import load_config
from hftraining.data.features import WARMUP_BARS
from hftraining.data.panel import Scaler, build_panel, make_splits, panel_windows, symbol_views, window_ends
from hftraining.data.ragged import RaggedPanel, build_ragged_panel, make_ragged_splits
from hftraining.data.synthetic import generate_bars
from hftraining.errors import UserError

L, H = 16, 3                  # context and horizon; embargo = L + H = 19
HOLE = range(300, 330)        # AAA positions removed: a 6-week hole in its data
FIRST = WARMUP_BARS - 1       # first bar with every causal feature defined (position 60)


def universe(folder, perturb: dict | None = None) -> dict[str, pd.DataFrame]:
    full = generate_bars("AAA", 700, seed=3)
    bars = {"AAA": full.drop(index=full.index[list(HOLE)]), "BBB": generate_bars("BBB", 400, seed=3)}
    folder.mkdir(exist_ok=True)
    for symbol, frame in bars.items():
        if perturb and symbol in perturb:
            frame = perturb_after(frame, int(frame.index.searchsorted(perturb[symbol])))
        frame.to_csv(folder / f"{symbol}.csv", index_label="date")
    return bars


def config_for(folder, *extra: str):
    return load_config(None, ["data.source=csv", f"data.data_dir={folder}", f"data.context_length={L}",
                              f"data.horizon={H}", "data.forecast_backend=none", "model.hidden_size=8",
                              "model.num_heads=2", "model.num_layers=1", "training.batch_size=16",
                              "training.warmup_steps=1", "training.max_steps=4", "training.eval_every=4",
                              "training.device=cpu", "training.early_stopping_patience=0", *extra])


@pytest.fixture
def csv_universe(tmp_path):
    folder = tmp_path / "csv"
    return folder, universe(folder), config_for(folder, f"paths.root={tmp_path / 'runs'}")


def test_base_trains_on_each_symbols_full_history(csv_universe, monkeypatch, one_torch_thread):
    """Window counts against a hand count; no training window crosses a symbol or AAA's hole.

    Union calendar of complete-feature dates: AAA positions 60..299 and 330..699 (BBB's complete bars,
    positions 360..699, add nothing): 610 dates. make_splits(610) with L=16, embargo 19: usable
    = (608 - 15 + 1) - 38 = 556, val = test = int(0.15 * 556) = 83, train = 390 -> calendar train
    index 15..404, i.e. AAA positions 75..299 and 330..494.
      AAA rows (own bars with features): r = p - 60 before the hole, p - 90 after it; train decisions
        r = 15..404 (390); a window t-15..t+1 touching both sides of the hole (rows 239|240) has
        t in 239..254 (16 windows) -> 374 windows.
      BBB rows r = p - 360; its train decisions are r >= 15 up to p = 494 -> p = 375..494 -> 120.
    """
    folder, bars, cfg = csv_universe
    captured = []
    real = trainer.Batches.__init__

    def spy(self, x, returns, ends, *args, **kwargs):
        captured.append(np.asarray(ends).copy())
        real(self, x, returns, ends, *args, **kwargs)

    monkeypatch.setattr(trainer.Batches, "__init__", spy)
    run = train_base(["AAA", "BBB"], cfg, steps=4, run_id="ragged", progress=False)
    panel = run.prepared.panel
    assert isinstance(panel, RaggedPanel) and panel.n_rows == (700 - 30 - FIRST) + (400 - FIRST)

    ends = captured[0]                                   # the training batches' window ends (fit builds them first)
    rows = ends[:, 0]
    symbol = np.searchsorted(panel.offsets, rows, side="right") - 1
    assert np.bincount(symbol).tolist() == [374, 120]
    assert (ends[:, 1] == 0).all()

    dates = panel.dates
    aaa = bars["AAA"].index
    assert pd.Timestamp(dates[rows[symbol == 0].min()]) == aaa[FIRST + L - 1]      # AAA from its first full window,
    assert dates[rows].min() < np.datetime64(bars["BBB"].index[0])                  # long before BBB lists
    for t, s in zip(rows, symbol, strict=True):                                    # inside one symbol, no hole
        lo, hi = panel.offsets[s], panel.offsets[s + 1]
        assert lo <= t - L + 1 and t + 1 < hi
        spacing = np.diff(dates[t - L + 1:t + 2]).astype("timedelta64[D]").astype(int)
        assert spacing.max() <= 4
    hole_start, hole_end = aaa[HOLE.start - 1], bars["AAA"].index[HOLE.start]     # last bar before, first after
    assert not ((dates[rows - L + 1] <= np.datetime64(hole_start)) & (dates[rows + 1] >= np.datetime64(hole_end))).any()

    meta = json.loads((run.run_dir / "metadata.json").read_text())
    assert meta["panel"]["decisions_per_symbol"] == {"AAA": {"train": 390, "val": 83, "test": 83},
                                                     "BBB": {"train": 120, "val": 83, "test": 83}}
    assert meta["splits"]["train"]["start"] == f"{aaa[FIRST + 15]:%Y-%m-%d}"


def test_aligned_panel_would_have_dropped_the_older_history(csv_universe):
    folder, bars, cfg = csv_universe
    aligned = build_panel(["AAA", "BBB"], cfg, folder.parent / "runs", progress=False)
    assert aligned.n_time == 400 - FIRST                                 # only BBB's dates with features
    assert len(window_ends(make_splits(aligned.n_time, cfg).train, 2)) == 2 * 202


def test_on_common_dates_ragged_equals_aligned(tmp_path):
    """Same dates for every symbol: the same scaler, scaled rows, windows in the same order (so the same batches)."""
    folder = tmp_path / "csv"
    folder.mkdir()
    for symbol in ("AAA", "BBB"):
        generate_bars(symbol, 500, seed=4).to_csv(folder / f"{symbol}.csv", index_label="date")
    cfg = config_for(folder, "data.forecast_backend=statistical", "data.forecast_context_length=32",
                     "data.toto_horizon=3")
    ragged = build_ragged_panel(["AAA", "BBB"], cfg, tmp_path)
    aligned = build_panel(["AAA", "BBB"], cfg, tmp_path, progress=False)
    rs, als = make_ragged_splits(ragged, cfg), make_splits(aligned.n_time, cfg)
    assert rs.as_dict(ragged) == als.as_dict(aligned)
    a, b = Scaler.fit(ragged, rs.train), Scaler.fit(aligned, als.train)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    xr, xa = a.transform(ragged), b.transform(aligned)
    T = aligned.n_time
    np.testing.assert_array_equal(xr[:T, 0], xa[:, 0])
    np.testing.assert_array_equal(xr[T:, 0], xa[:, 1])
    wr, wa = panel_windows(ragged, rs.train, L), window_ends(als.train, 2)
    np.testing.assert_array_equal(np.stack([wr[:, 0] % T, wr[:, 0] // T], axis=1), wa)


def test_perturbing_the_future_of_a_ragged_panel_leaves_the_past_unchanged(tmp_path):
    """Bars after 2024-06-03 (a validation date) multiplied in both symbols: every row dated <= then is
    bit-identical (features with the statistical forecasts, returns, scaled inputs, training windows)."""
    cut = pd.Timestamp("2024-06-03")
    cfg = config_for(tmp_path / "a", "data.forecast_backend=statistical", "data.forecast_context_length=32",
                     "data.toto_horizon=3")
    universe(tmp_path / "a")
    universe(tmp_path / "b", perturb={"AAA": cut, "BBB": cut})
    before = build_ragged_panel(["AAA", "BBB"], cfg, tmp_path / "runs_a", progress=False)
    after = build_ragged_panel(["AAA", "BBB"], cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"data_dir": str(tmp_path / "b")})}), tmp_path / "runs_b", progress=False)
    np.testing.assert_array_equal(before.offsets, after.offsets)
    np.testing.assert_array_equal(before.dates, after.dates)
    past = before.dates <= np.datetime64(cut)
    known = past & np.append(before.dates[1:] <= np.datetime64(cut), False)   # return r needs close r+1 <= cut
    known[before.offsets[1:] - 1] = False                                 # a symbol's last row has no return
    assert past.sum() > 100 and (~past).sum() > 100
    np.testing.assert_array_equal(before.features[past], after.features[past])
    np.testing.assert_array_equal(before.returns[known], after.returns[known])
    assert not np.array_equal(before.features[~past], after.features[~past])

    splits = make_ragged_splits(before, cfg)
    assert splits.as_dict(before) == make_ragged_splits(after, cfg).as_dict(after)
    train_end = np.datetime64(splits.calendar["train"][1])
    assert train_end < np.datetime64(cut)                                 # the cut lies after training
    scaler = Scaler.fit(before, splits.train)
    moved = Scaler.fit(after, make_ragged_splits(after, cfg).train)
    np.testing.assert_array_equal(scaler.mean, moved.mean)
    np.testing.assert_array_equal(scaler.transform(before)[past], scaler.transform(after)[past])
    np.testing.assert_array_equal(panel_windows(before, splits.train, L), panel_windows(after, splits.train, L))


def test_model_positions_at_or_before_t_ignore_later_bars(tmp_path, one_torch_thread):
    """The evaluation path of a ragged panel (per symbol, own bars): positions dated <= t are unchanged."""
    from hftraining.evaluation import predict_positions
    from hftraining.model import build_model

    cut = pd.Timestamp("2024-11-01")                                       # inside the test dates
    cfg = config_for(tmp_path / "a")
    universe(tmp_path / "a")
    universe(tmp_path / "b", perturb={"AAA": cut, "BBB": cut})
    cfg_b = cfg.model_copy(update={"data": cfg.data.model_copy(update={"data_dir": str(tmp_path / "b")})})
    torch.manual_seed(0)
    model = build_model(15, L, H, cfg.model).eval()                       # the 15 causal features
    with torch.no_grad():                                                  # no zero-initialised head: every
        for p in model.parameters():                                       # input must be able to move it
            p.normal_(0, 0.3)
    got = []
    for c, root in ((cfg, tmp_path / "ra"), (cfg_b, tmp_path / "rb")):
        panel = build_ragged_panel(["AAA", "BBB"], c, root, progress=False)
        splits = make_ragged_splits(panel, c)
        x = torch.from_numpy(Scaler.fit(panel, splits.train).transform(panel))
        out = {}
        for symbol, one, s, rows, test in symbol_views(panel, x, splits.test):
            out[symbol] = pd.Series(predict_positions(model, rows, s, test), index=one.dates[test.start:test.stop])
        got.append(out)
    for symbol in ("AAA", "BBB"):
        a, b = got[0][symbol], got[1][symbol]
        np.testing.assert_array_equal(a[a.index <= cut].to_numpy(), b[b.index <= cut].to_numpy())
        assert not np.array_equal(a[a.index > cut].to_numpy(), b[b.index > cut].to_numpy())


def test_a_symbol_without_test_bars_is_absent_from_the_test_split(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    generate_bars("AAA", 600, seed=5).to_csv(folder / "AAA.csv", index_label="date")
    gone = generate_bars("OLD", 600, seed=5)
    gone.index = gone.index - pd.Timedelta(days=400)                   # delisted before the test dates
    gone.to_csv(folder / "OLD.csv", index_label="date")
    cfg = config_for(folder)
    panel = build_ragged_panel(["AAA", "OLD"], cfg, tmp_path)
    splits = make_ragged_splits(panel, cfg)
    counts = splits.per_symbol(panel)
    assert counts["OLD"]["train"] > 0 and counts["OLD"]["test"] == 0 and counts["AAA"]["test"] > 0
    assert [v[0] for v in symbol_views(panel, np.zeros((panel.n_rows, 1, 1)), splits.test)] == ["AAA"]
    # OLD's labels never reach AAA's rows: its last training window ends two rows before its last bar
    old = panel.symbol_index("OLD")
    assert splits.train.ranges[old].stop <= panel.offsets[old + 1] - 1


def test_ragged_splits_need_bars_in_every_split(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    generate_bars("AAA", 60 + L + 1, seed=5).to_csv(folder / "AAA.csv", index_label="date")
    generate_bars("BBB", 60 + L + 1, seed=6).to_csv(folder / "BBB.csv", index_label="date")
    cfg = config_for(folder)
    panel = build_ragged_panel(["AAA", "BBB"], cfg, tmp_path)
    with pytest.raises(UserError, match="history too short"):
        make_ragged_splits(panel, cfg)

"""Base-initialised portfolios: the base's split dates are inherited, and a test range inside its sample is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hftraining import checkpoint as ckpt
from hftraining.base_dates import check_out_of_sample, inherit_splits
from hftraining.cli import main
from hftraining.config import Config, load_config
from hftraining.data.features import FEATURE_NAMES
from hftraining.data.panel import Scaler
from hftraining.errors import UserError
from hftraining.model import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMON = ["portfolio", "--pairs", "AAA,BBB", "--config", "configs/tiny.yaml", "--source", "synthetic",
          "--forecast-backend", "none", "--steps", "2", "-q", "--set", "portfolio.batch_size=2"]


@pytest.fixture(scope="module")
def group_panel(tmp_path_factory):
    """The aligned AAA,BBB panel `hftrain portfolio` builds from configs/tiny.yaml (900 synthetic bars)."""
    from hftraining.portfolio import prepare_aligned

    root = tmp_path_factory.mktemp("panel")
    cfg = load_config("configs/tiny.yaml", ["data.forecast_backend=none"], {"paths.root": str(root)})
    return prepare_aligned(["AAA", "BBB"], cfg, progress=False).panel


def fake_base(folder, panel, bounds):
    """A base run folder whose metadata says it trained on bars bounds[0]..bounds[1], validated on
    bounds[2]..bounds[3] and tested on bounds[4]..bounds[5] (indices of the group panel's dates)."""
    names = ("train", "val", "test")
    splits = {name: {"start": panel.date_str(bounds[2 * i]), "end": panel.date_str(bounds[2 * i + 1]),
                     "bars": bounds[2 * i + 1] - bounds[2 * i] + 1} for i, name in enumerate(names)}
    cfg = Config()
    cfg.model = load_config("configs/tiny.yaml").model
    n = len(FEATURE_NAMES)
    folder.mkdir(parents=True)
    scaler = Scaler(list(FEATURE_NAMES), ["AAA"], np.zeros((1, n)), np.ones((1, n)))
    meta = {"run_id": folder.name, "kind": "base", "splits": {**splits, "embargo": 19}}
    ckpt.save_run_files(folder, cfg, scaler, meta)
    ckpt.save_tensors(folder / ckpt.WEIGHTS, build_model(n, 16, 3, cfg.model).state_dict())
    return folder


# The group's own splits (configs/tiny.yaml, 840 bars): train 15..566, val 586..702, test 722..838. This base
# trained and validated up to bar 740, inside the group's own test range; its test range starts at 760.
LATE_BASE = (15, 650, 670, 740, 760, 838)


def test_inherited_splits_are_the_base_dates_with_the_embargo_in_the_groups_bars(group_panel, tmp_path):
    base = ckpt.open_run(fake_base(tmp_path / "base", group_panel, LATE_BASE))
    splits = inherit_splits(group_panel, base, 16, 19)
    assert (splits.train, splits.val, splits.test) == (range(15, 651), range(670, 741), range(760, 839))
    tight = ckpt.open_run(fake_base(tmp_path / "tight", group_panel, (15, 650, 655, 740, 745, 838)))
    splits = inherit_splits(group_panel, tight, 16, 19)          # 4 bars apart on this calendar: 19 enforced
    assert splits.val.start == 651 + 19 and splits.test.start == 741 + 19


def test_a_test_range_inside_the_bases_sample_is_refused_in_one_line(group_panel, tmp_path):
    base = ckpt.open_run(fake_base(tmp_path / "base", group_panel, LATE_BASE))
    for start in (722, 740, 759):                                # inside, at the end, within the embargo
        with pytest.raises(UserError, match="reaches into") as err:
            check_out_of_sample(group_panel, range(start, 839), base, 19)
        assert "\n" not in str(err.value)
    check_out_of_sample(group_panel, range(760, 839), base, 19)
    bare = ckpt.open_run(fake_base(tmp_path / "bare", group_panel, LATE_BASE))
    meta = ckpt.read_json(bare.path / ckpt.METADATA)
    meta.pop("splits")
    (bare.path / ckpt.METADATA).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="records no split dates"):
        check_out_of_sample(group_panel, range(760, 839), ckpt.open_run(bare.path), 19)


def test_cli_portfolio_from_a_base_tests_on_the_bases_test_dates(group_panel, tmp_path, capsys):
    base = fake_base(tmp_path / "base", group_panel, LATE_BASE)
    out = tmp_path / "runs"
    assert main(COMMON + ["--out", str(out), "--base", str(base), "--set", "paths.run_name=p"]) == 0, \
        capsys.readouterr().err
    metrics = json.loads((out / "reports" / "p" / "metrics.json").read_text())
    assert metrics["test_start"] == group_panel.date_str(760) and metrics["test_end"] == group_panel.date_str(838)
    meta = ckpt.read_json(out / "models/finetuned/portfolio_pairs/AAA_BBB/p" / ckpt.METADATA)
    assert meta["splits"]["train"]["end"] == group_panel.date_str(650)
    assert meta["splits"]["val"] == {"start": group_panel.date_str(670), "end": group_panel.date_str(740), "bars": 71}
    assert meta["base_splits"]["val"]["end"] == group_panel.date_str(740)


def test_cli_walk_forward_inside_the_bases_sample_is_refused_before_training(group_panel, tmp_path, capsys):
    base = fake_base(tmp_path / "base", group_panel, LATE_BASE)
    out = tmp_path / "runs"
    code = main(COMMON + ["--out", str(out), "--base", str(base), "--walk-forward", "--retrain-every", "60"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "reaches into" in err and "walk-forward" in err, err
    assert not (out / "models").exists()


def test_pipeline_portfolio_on_a_longer_history_tests_on_the_bases_test_dates(tmp_path, capsys):
    """The pair's own splits (on its 900 bars) would test on bars the base (400 bars) trained and selected on."""
    from fake_runs import write_csv

    for symbol, bars in (("AAA", 400), ("BBB", 400), ("CCC", 900), ("DDD", 900)):
        write_csv(tmp_path / "csv", symbol, bars, seed=len(symbol) + bars)
    code = main(["pipeline", "--stocks", "AAA", "BBB", "--pairs", "CCC,DDD", "--config", "configs/tiny.yaml",
                 "--data-dir", str(tmp_path / "csv"), "--forecast-backend", "none", "--steps", "2",
                 "--set", "portfolio.max_steps=2", "--set", "training.finetune_epochs=1",
                 "--out", str(tmp_path / "runs"), "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    base = ckpt.read_json(Path(result["base"]) / ckpt.METADATA)["splits"]
    pair = ckpt.read_json(Path(result["portfolios"]["CCC_DDD"]["run_dir"]) / ckpt.METADATA)["splits"]
    assert pair["test"]["start"] == base["test"]["start"] and pair["test"]["end"] == base["test"]["end"]
    assert pair["val"]["end"] == base["val"]["end"] and pair["test"]["start"] > base["val"]["end"]


def test_a_backtest_overlapping_the_bases_sample_is_in_sample():
    from hftraining.backtest import in_sample_overlap

    meta = {"splits": {"train": {"start": "2020-01-01", "end": "2020-06-30"},
                       "val": {"start": "2020-08-01", "end": "2020-10-31"}},
            "base_splits": {"train": {"start": "2015-01-01", "end": "2021-06-30"},
                            "val": {"start": "2021-08-01", "end": "2022-03-31"}}}
    assert in_sample_overlap(meta, "2022-01-03", "2022-12-30") == ["base validation 2021-08-01 .. 2022-03-31"]
    assert in_sample_overlap(meta, "2022-06-01", "2022-12-30") == []

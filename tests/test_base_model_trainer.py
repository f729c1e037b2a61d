"""Base model on several stocks -> fine-tune per stock -> report, end to end on the tiny synthetic config."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import runpy
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hftraining import checkpoint as ckpt
from hftraining.base_model_trainer import BaseModelTrainer, parse_groups
from hftraining.cli import main
from hftraining.config import load_config
from hftraining.errors import UserError
from hftraining.finetune import check_compatible, finetune_steps, load_model, with_schedule

SMALL = ["--set", "data.forecast_backend=none", "--set", "data.synthetic_bars=400"]
RUN = "t1"
STOCKS = ["AAA", "BBB", "CCC"]
BASELINES = {"buy_and_hold", "momentum", "vol_long", "oracle"}        # the oracle: synthetic markets only


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that remembers the weights it was handed: the model's state before the first step."""

    initial: ClassVar[list[list[torch.Tensor]]] = []

    def __init__(self, params, *args, **kwargs):
        params = list(params)
        RecordingAdamW.initial.append([p.detach().clone() for p in params])
        super().__init__(params, *args, **kwargs)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """One `hftrain base` run (3 symbols, fine-tunes included): its output and the initial weights."""
    root = tmp_path_factory.mktemp("base")
    out, err = io.StringIO(), io.StringIO()
    RecordingAdamW.initial = []
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setattr(torch.optim, "AdamW", RecordingAdamW)
        code = main(["base", "--stocks", "AAA", "BBB,CCC", "--config", str(TINY), *SMALL,
                     "--set", f"paths.run_name={RUN}", "--base-steps", "10", "--finetune-epochs", "1",
                     "--batch-size", "32",
                     "--out", str(root), "--json", "--quiet"])
    assert code == 0, err.getvalue()
    return {"root": root, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "summary": json.loads(out.getvalue().strip().splitlines()[-1]), "initial": RecordingAdamW.initial}


def scalar_tags(folder: Path) -> set[str]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_directories(pipeline):
    root = pipeline["root"]
    base = root / "models" / "base" / RUN
    for name in ("config.yaml", "model.safetensors", "scaler.json", "features.json", "metadata.json"):
        assert (base / name).is_file()
    assert (root / "tensorboard" / "base" / RUN).is_dir()
    for symbol in STOCKS:
        assert (root / "models" / "finetuned" / symbol / RUN / "model.safetensors").is_file()
        assert (root / "tensorboard" / "finetuned" / symbol / RUN).is_dir()
        assert (root / "reports" / RUN / f"{symbol}_metrics.json").is_file()
        assert (root / "reports" / RUN / f"{symbol}_test_returns.csv").is_file()
    assert (root / "reports" / RUN / "metrics.json").is_file()
    assert pipeline["summary"]["base_run"] == str(base)


def test_tensorboard_tags(pipeline):
    root = pipeline["root"]
    design = {"train/loss", "train/learning_rate", "eval/loss", "profit/total_return", "profit/sharpe_ratio",
              "profit/win_rate", "profit/max_drawdown", "profit/trade_count"}
    base_tags = scalar_tags(root / "tensorboard" / "base" / RUN)
    assert design <= base_tags
    for symbol in STOCKS:
        assert {f"profit/{symbol}/sharpe_ratio", f"profit/{symbol}/total_return"} <= base_tags
    ft_tags = scalar_tags(root / "tensorboard" / "finetuned" / "AAA" / RUN)
    assert design <= ft_tags
    assert not any(tag.startswith("profit/AAA/") for tag in ft_tags)    # one symbol: averages only


def test_base_and_finetunes_log_hparams_like_single_runs(pipeline):
    """TensorBoard's hparams view: the base's validation Sharpe and its test Sharpe averaged over stocks; each
    fine-tune's own."""
    root = pipeline["root"]
    report = json.loads((root / "reports" / RUN / "metrics.json").read_text())

    def hparam(folder: Path, name: str) -> float:
        acc = EventAccumulator(str(folder))
        acc.Reload()
        return acc.Scalars(f"hparam/{name}")[-1].value

    base_tb = root / "tensorboard" / "base" / RUN
    assert hparam(base_tb, "test_sharpe") == pytest.approx(report["average"]["base"]["sharpe_ratio"], abs=1e-6)
    base_meta = ckpt.read_json(root / "models" / "base" / RUN / "metadata.json")
    assert hparam(base_tb, "val_sharpe") == pytest.approx(base_meta["validation"]["sharpe_ratio"], abs=1e-6)
    for symbol in STOCKS:
        expected = report["stocks"][symbol]["strategies"]["finetuned"]["sharpe_ratio"]
        assert hparam(root / "tensorboard" / "finetuned" / symbol / RUN, "test_sharpe") == pytest.approx(
            expected, abs=1e-6)


def test_base_report_log_and_verdicts(pipeline):
    """The same file names as every report (metrics.json, report.html), the run's log, a verdict per stock."""
    root, summary = pipeline["root"], pipeline["summary"]
    assert summary["report_html"] == str(root / "reports" / RUN / "report.html")
    assert json.loads((root / "reports" / RUN / "metrics.json").read_text())["kind"] == "base"
    assert summary["log"] == str(root / "logs" / f"{RUN}.log")
    log_text = (root / "logs" / f"{RUN}.log").read_text()
    assert f"base {','.join(STOCKS)}: positions scaled" in log_text and "finetune BBB:" in log_text
    for symbol in STOCKS:
        assert summary["verdict"][symbol].startswith("Against the best baseline: ")
        assert f"{symbol}: {summary['verdict'][symbol]}" in pipeline["stderr"]        # --json: the table on stderr
        assert summary["significance"][symbol]["bootstrap"]["low"] is not None


def test_base_profit_average_is_mean_over_symbols(pipeline):
    acc = EventAccumulator(str(pipeline["root"] / "tensorboard" / "base" / RUN))
    acc.Reload()
    mean = acc.Scalars("profit/sharpe_ratio")[-1].value
    per_symbol = [acc.Scalars(f"profit/{s}/sharpe_ratio")[-1].value for s in STOCKS]
    assert mean == pytest.approx(np.mean(per_symbol), rel=1e-5, abs=1e-6)


def test_finetune_starts_from_base_weights(pipeline):
    root = pipeline["root"]
    base = ckpt.open_run(root / "models" / "base" / RUN)
    model = load_model(base.config, len(base.scaler.feature_names), base.weights, base.path)
    base_params = [p.detach().cpu() for p in model.parameters()]
    initial = pipeline["initial"]
    assert len(initial) == 1 + len(STOCKS)                       # base, then one fine-tune per stock
    assert not all(torch.equal(a, b) for a, b in zip(initial[0], base_params, strict=True))  # base trained
    for fine_tune in initial[1:]:
        assert len(fine_tune) == len(base_params)
        assert all(torch.equal(a.cpu(), b) for a, b in zip(fine_tune, base_params, strict=True))


def test_finetune_metadata_scaler_and_schedule(pipeline):
    root = pipeline["root"]
    base_dir = root / "models" / "base" / RUN
    base_meta = ckpt.read_json(base_dir / "metadata.json")
    assert (base_meta["kind"], base_meta["symbols"], base_meta["status"]) == ("base", STOCKS, "completed")
    ft_dir = root / "models" / "finetuned" / "BBB" / RUN
    meta = ckpt.read_json(ft_dir / "metadata.json")
    assert meta["kind"] == "finetune" and meta["base_run"] == str(base_dir) and meta["symbol_in_base"] is True
    assert meta["splits"] == base_meta["splits"]                 # same dates, same test bars
    assert (ft_dir / "scaler.json").read_text() == (base_dir / "scaler.json").read_text()
    n_train = meta["splits"]["train"]["bars"]
    assert meta["steps"] == math.ceil(1 * n_train / 32) == meta["steps_done"]     # --finetune-epochs 1
    cfg = load_config(ft_dir / "config.yaml")
    assert cfg.training.max_steps == meta["steps"] and cfg.training.batch_size == meta["batch_size"] == 32
    assert load_config(base_dir / "config.yaml").training.max_steps == base_meta["steps_done"] == 10
    assert meta["learning_rate"] == cfg.training.finetune_learning_rate


def test_report(pipeline):
    report = json.loads((pipeline["root"] / "reports" / RUN / "metrics.json").read_text())
    assert list(report["stocks"]) == STOCKS
    spans = {(v["test_start"], v["test_end"], v["test_bars"]) for v in report["stocks"].values()}
    assert len(spans) == 1                                       # every stock on the same test bars
    for symbol, stock in report["stocks"].items():
        assert set(stock["strategies"]) == {"finetuned", "base", *BASELINES}
        returns = pd.read_csv(pipeline["root"] / "reports" / RUN / f"{symbol}_test_returns.csv")
        total = float(np.prod(1 + returns["net_return"]) - 1)
        assert stock["strategies"]["finetuned"]["total_return"] == pytest.approx(total, abs=1e-9)
        assert stock["strategies"]["buy_and_hold"]["trade_count"] == 1
        assert all(0 <= row["psr"] <= 1 for row in stock["strategies"].values() if row.get("psr") is not None)
        metrics = json.loads((pipeline["root"] / "reports" / RUN / f"{symbol}_metrics.json").read_text())
        dsr = metrics["significance"]["deflated"]                # the base and the fine-tune of this stock
        assert metrics["significance"]["psr"] is not None and dsr["n_trials"] == 2, dsr
        assert "N = 2" in dsr["n_trials_source"] and "trials.jsonl" in dsr["n_trials_source"]
    assert set(report["average"]) == {"finetuned", "base", *BASELINES}
    table = pipeline["stderr"]
    for symbol in STOCKS:
        assert f"{symbol} (SYNTHETIC market): test" in table
    assert "average over 3 stocks" in table
    page = (pipeline["root"] / "reports" / RUN / "report.html").read_text()
    assert all(f"{symbol} Test" in page for symbol in STOCKS)
    assert table.count("buy_and_hold") == 4 and table.count("finetuned") == 4


def test_base_and_finetunes_are_registered_as_trials(pipeline):
    from hftraining.trials import read_trials

    records = read_trials(pipeline["root"])
    report = json.loads((pipeline["root"] / "reports" / RUN / "metrics.json").read_text())
    for symbol in STOCKS:
        mine = {r["kind"]: r for r in records if r["symbols"] == [symbol]}
        assert set(mine) == {"base", "finetuned"}
        strategies = report["stocks"][symbol]["strategies"]
        for kind in ("base", "finetuned"):
            assert mine[kind]["test_sharpe"] == pytest.approx(strategies[kind]["sharpe_ratio"])


def test_incompatible_base_is_refused(pipeline, tmp_path, capsys):
    base = pipeline["root"] / "models" / "base" / RUN
    code = main(["finetune", "--stock", "AAA", "--base", str(base), "--config", str(TINY), *SMALL,
                 "--set", "model.hidden_size=32", "--set", "data.context_length=20", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --base ")
    assert "model.hidden_size 16 (base) vs 32 (requested)" in err and "data.context_length" in err
    assert not (tmp_path / "models").exists()                    # refused before anything was written


def test_not_a_base_folder(tmp_path, capsys):
    code = main(["finetune", "--stock", "AAA", "--base", str(tmp_path)])
    assert code == 2 and "not a trained run folder" in capsys.readouterr().err


def test_feature_list_difference_is_named():
    cfg = load_config(TINY)
    with pytest.raises(UserError, match="feature list .*base only: fc_mean"):
        check_compatible(Path("b"), cfg, cfg, ["ret_1", "fc_mean"], ["ret_1"])


def test_finetune_later_on_a_symbol_the_base_never_saw(pipeline, capsys):
    root = pipeline["root"]
    base_dir = root / "models" / "base" / RUN
    code = main(["finetune", "--stock", "DDD", "--base", str(base_dir), "--steps", "3", "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == root / "models" / "finetuned" / "DDD"           # the base's root, a fresh run id
    meta = ckpt.read_json(run_dir / "metadata.json")
    assert meta["symbol_in_base"] is False and "pooled" in meta["scaler"]["stats"]
    assert meta["steps_done"] == 3
    base_meta = ckpt.read_json(base_dir / "metadata.json")
    assert meta["splits"]["test"] == base_meta["splits"]["test"]
    assert set(summary["test"]) == {"finetuned", "base", *BASELINES}
    assert (Path(summary["report_dir"]) / "metrics.json").is_file()
    assert "never saw this symbol" in captured.err


def test_no_finetune_with_single_from_scratch(tmp_path, capsys):
    code = main(["base", "--base-stocks", "AAA,BBB", "--no-finetune", "--compare-single", "--steps", "3",
                 "--config", str(TINY), *SMALL, "--set", "paths.run_name=r", "--out", str(tmp_path),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert not (tmp_path / "models" / "finetuned" / "AAA" / "r").exists()
    assert (tmp_path / "models" / "finetuned" / "AAA" / "r-scratch" / "model.safetensors").is_file()
    report = json.loads((tmp_path / "reports" / "r" / "metrics.json").read_text())
    assert set(report["stocks"]["BBB"]["strategies"]) == {"base", "single", *BASELINES}


def test_python_api(tmp_path):
    cfg = load_config(TINY, ["data.forecast_backend=none", "data.synthetic_bars=400",
                             f"paths.root={tmp_path}"])
    trainer = BaseModelTrainer(base_stocks=["AAA", "BBB"], config=cfg, progress=False)
    model, path = trainer.train_base_model(max_steps=3, batch_size=64)
    assert path.is_file() and path.parent.parent == tmp_path / "models" / "base"
    ft_model, ft_path = trainer.finetune_for_stock(stock_symbol="BBB", base_checkpoint_path=path,
                                                   num_epochs=1)
    assert ft_path.parent.parent == tmp_path / "models" / "finetuned" / "BBB"
    meta = ckpt.read_json(ft_path.parent / "metadata.json")
    assert meta["steps_done"] == finetune_steps(1, meta["splits"]["train"]["bars"], 64)
    assert isinstance(ft_model, torch.nn.Module) and isinstance(model, torch.nn.Module)


def test_pipeline_with_portfolio(tmp_path, capsys):
    code = main(["pipeline", "--stocks", "AAA", "BBB", "--pairs", "AAA,BBB", "--config", str(TINY), *SMALL,
                 "--set", "portfolio.max_steps=3", "--set", "training.finetune_epochs=1",
                 "--set", "training.batch_size=64", "--steps", "3",
                 "--out", str(tmp_path), "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert set(result["finetuned"]) == {"AAA", "BBB"} and Path(result["base"]).is_dir()
    portfolio_dir = Path(result["portfolios"]["AAA_BBB"]["run_dir"])
    assert portfolio_dir.is_dir() and portfolio_dir.name == f"{Path(result['base']).name}-AAA_BBB"
    meta = ckpt.read_json(portfolio_dir / "metadata.json")
    assert meta["base_run"] == result["base"]
    base_splits = ckpt.read_json(Path(result["base"]) / "metadata.json")["splits"]
    for name in ("train", "val", "test"):        # the portfolio tests on the base's test dates, never its sample
        assert meta["splits"][name]["end"] == base_splits[name]["end"], name
    assert meta["splits"]["test"]["start"] == base_splits["test"]["start"]
    # the portfolio stage is reported like the others (with --json, the human results are on stderr)
    err = captured.err
    portfolio = result["portfolios"]["AAA_BBB"]
    assert "pipeline stage 3: portfolio AAA_BBB" in err and "equal_weight" in err.split("stage 3")[1]
    assert f"report: {portfolio['report_dir']}/report.html" in err and f"run: {portfolio['run_dir']}" in err
    assert result["verdict"]["portfolios"]["AAA_BBB"].startswith("Against the best baseline: ")
    info = [line for line in err.splitlines() if line.startswith("INFO:")]
    assert info
    for line in info:                                # every INFO line names its stage and a symbol
        assert re.match(r"INFO: (base|finetune|portfolio|single|data) \S*(AAA|BBB)", line), line


def test_helpers():
    assert finetune_steps(2, 100, 64) == 4 and finetune_steps(1, 1, 64) == 1
    cfg = with_schedule(load_config(TINY), 5)
    assert (cfg.training.max_steps, cfg.training.eval_every, cfg.training.warmup_steps) == (5, 5, 0)
    cfg = with_schedule(load_config(TINY, ["training.eval_every=100"]), 213, evaluations=4)
    assert (cfg.training.eval_every, cfg.training.warmup_steps) == (54, 2)
    assert parse_groups(["AAPL,MSFT", "googl,tsla xom,jpm,bac"]) == [["AAPL", "MSFT"], ["GOOGL", "TSLA"],
                                                                    ["XOM", "JPM", "BAC"]]
    with pytest.raises(UserError, match="at least two"):
        parse_groups(["AAPL"])


@pytest.mark.filterwarnings("ignore:'hftraining.base_model_trainer' found in sys.modules")
def test_module_entry_forwards_to_hftrain_base(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["base_model_trainer.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("hftraining.base_model_trainer", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Usage: hftrain base" in out and "--base-stocks" in out and "--finetune-epochs" in out


@pytest.mark.parametrize("base_is_better", [True, False])
def test_a_finetune_that_does_not_beat_its_base_on_validation_keeps_the_base(pipeline, monkeypatch, tmp_path,
                                                                             base_is_better):
    """Fine-tuning cannot make things worse by choice: losing to the base on validation keeps the base."""
    from hftraining import finetune

    base_dir = pipeline["root"] / "models" / "base" / RUN
    base_weights = ckpt.load_tensors(base_dir / "model.safetensors")
    real = finetune.validation_sharpe
    seen = {}

    def rigged(model, job, x):
        value = real(model, job, x)
        is_base = all(torch.equal(t, base_weights[k]) for k, t in model.state_dict().items() if k != "output_scale")
        seen["base" if is_base else "tuned"] = value
        return value + (1.0 if is_base == base_is_better else -1.0)

    monkeypatch.setattr(finetune, "validation_sharpe", rigged)
    config = load_config(base_dir / "config.yaml")
    config.paths.root = str(tmp_path)
    run = finetune.finetune_stock("AAA", base_dir, config, steps=3, run_id="ft", progress=False)
    meta = json.loads((run.run_dir / "metadata.json").read_text())
    assert meta["kept_base"] is base_is_better
    assert meta["validation_sharpe_base"] == pytest.approx(seen["base"] + (1.0 if base_is_better else -1.0))
    assert meta["validation_sharpe_finetuned"] == pytest.approx(seen["tuned"] + (-1.0 if base_is_better else 1.0))
    saved = ckpt.load_tensors(run.run_dir / "model.safetensors")
    same = all(torch.equal(saved[k], base_weights[k]) for k in base_weights if k != "output_scale")
    assert same is base_is_better
    assert all(torch.equal(t, saved[k]) for k, t in run.model.state_dict().items())   # memory == disk

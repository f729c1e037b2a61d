"""report.html: figures render to real PNGs, every section is present, self-contained, and `hftrain report` works."""

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hftraining import html_report as hr
from hftraining.backtest import evaluate_and_report
from hftraining.cli import main
from hftraining.config import Config, to_yaml
from hftraining.data.panel import Panel
from hftraining.tensorboard_log import RunLogger


def assert_real_png(png: bytes, min_size=(300, 150)) -> Image.Image:
    """A decodable PNG of a sensible size that is not blank (many pixels off-white, some colour)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.width >= min_size[0] and image.height >= min_size[1]
    pixels = np.asarray(image, dtype=np.float64)
    assert pixels.std() > 10
    assert (pixels.min(axis=2) < 235).mean() > 0.01                       # ink, not an empty canvas
    assert (pixels.max(axis=2) - pixels.min(axis=2) > 60).mean() > 0.001  # coloured lines or cells
    return image


def synthetic_panel(n=620, seed=5):
    rng = np.random.default_rng(seed)
    close = 40 * np.exp(np.cumsum(0.012 * rng.standard_normal(n) + 0.0004))
    ohlc = np.stack([close, close * 1.01, close * 0.99, close], axis=1)[:, None, :]
    returns = np.append(close[1:] / close[:-1] - 1, np.nan)[:, None]
    return Panel(["DEMO"], pd.bdate_range("2021-01-04", periods=n).to_numpy(), ["f"],
                 np.zeros((n, 1, 1), np.float32), ohlc, returns)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A finished run folder (metadata, config, TensorBoard events) and its report folder, no training."""
    root = tmp_path_factory.mktemp("runs")
    run_dir = root / "models" / "finetuned" / "DEMO" / "r1"
    report_dir = root / "reports" / "r1"
    tb_dir = root / "tensorboard" / "finetuned" / "DEMO" / "r1"
    run_dir.mkdir(parents=True)
    logger = RunLogger(tb_dir)
    for step in range(10, 110, 10):
        logger.scalar("train/loss", 1.0 / step, step)
        logger.scalar("eval/loss", 0.5 / step + 0.01, step)
        logger.scalar("profit/sharpe_ratio", np.log(step) / 3, step)
    logger.close()
    config = Config()
    (run_dir / "config.yaml").write_text(to_yaml(config))
    meta = {"run_id": "r1", "kind": "single", "symbols": ["DEMO"], "synthetic": True, "best_step": 70,
            "steps_done": 100, "status": "completed", "report_dir": str(report_dir),
            "data": {"DEMO": {"source": "synthetic", "origin": "seed <7> & co"}},
            "forecast": {"DEMO": {"backend": "statistical", "requested": "toto", "fallback_reason": "no CUDA"}},
            "splits": {"train": {"start": "2021-01-04", "end": "2022-06-01", "bars": 370},
                       "val": {"start": "2022-08-01", "end": "2022-12-30", "bars": 110},
                       "test": {"start": "2023-02-01", "end": "2023-05-18", "bars": 100}, "embargo": 20}}
    (run_dir / "metadata.json").write_text(json.dumps(meta))
    panel = synthetic_panel()
    decisions = range(300, 619)
    positions = np.clip(np.sin(np.arange(len(decisions)) / 9.0) * 1.3, -1, 1)
    evaluate_and_report(report_dir, panel, 0, decisions, positions, config,
                        {"run_id": "r1", "run_dir": str(run_dir), "synthetic": True, "forecast_backend": "statistical"})
    return {"root": root, "run_dir": run_dir, "report_dir": report_dir, "tb_dir": tb_dir}


@pytest.fixture(scope="module")
def page(report) -> Path:
    return hr.write_html_report(report["report_dir"], report["run_dir"])


def test_page_has_every_section_and_is_self_contained(page):
    assert list(hr.load_series(page.parent)) == ["model", "buy_and_hold", "momentum", "vol_long"]
    page = page.read_text()
    for text in ["SYNTHETIC DATA", "Net performance vs baselines", "Buy &amp; hold", "TS momentum",
                 "Long, vol-targeted", "PSR",
                 "Deflated Sharpe", "Bootstrap 95% interval", "Cost sensitivity", "Break-even cost",
                 "Equity and drawdown", "Against the best baseline", "Positions", "Monthly returns", "Training",
                 "Provenance",
                 "requested toto, used statistical (no CUDA)", "transaction_cost_bps"]:
        assert text in page, text
    assert "IN SAMPLE" not in page
    assert "seed &lt;7&gt; &amp; co" in page                               # metadata is escaped
    assert "<script" not in page and not re.search(r'(src|href)="https?:', page)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5                                               # equity, positions, monthly, cost, training
    for data in images:                                                   # each figure is a real, non-blank PNG
        assert_real_png(base64.b64decode(data))


def test_in_sample_banner_and_old_reports(report, tmp_path):
    copy = tmp_path / "r1"
    shutil.copytree(report["report_dir"], copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics.update(in_sample=True, overlap=["training 2021-01-04 .. 2022-06-01"], significance=None)
    (copy / "metrics.json").write_text(json.dumps(metrics))
    (copy / "series.csv").unlink()                  # a report written before series.csv existed
    page = hr.render_report(copy, report["run_dir"])
    assert "IN SAMPLE" in page and "training 2021-01-04 .. 2022-06-01" in page
    assert "No significance figures" in page and page.count("data:image/png") == 5


def test_training_curves_from_events_or_history(report, tmp_path):
    curves = hr.training_curves(report["tb_dir"])
    assert set(curves) == {"train/loss", "eval/loss", "profit/sharpe_ratio"}
    assert curves["train/loss"][0].tolist() == list(range(10, 110, 10))
    history = [{"step": 5, "val_loss": 0.2, "sharpe_ratio": 0.1}, {"step": 10, "val_loss": 0.1, "sharpe_ratio": 0.4}]
    fallback = hr.training_curves(tmp_path / "missing", history)
    assert fallback["profit/sharpe_ratio"][1].tolist() == [0.1, 0.4]
    assert hr.training_curves(None) == {}


def test_monthly_returns_compound():
    dates = pd.to_datetime(["2023-01-30", "2023-01-31", "2023-02-01", "2024-03-05"])
    table = hr.monthly_returns(pd.Series([0.1, 0.1, -0.5, 0.02], index=dates))
    assert table.loc[2023, 1] == pytest.approx(0.21) and table.loc[2023, 2] == pytest.approx(-0.5)
    assert table.loc[2024, 3] == pytest.approx(0.02) and np.isnan(table.loc[2024, 1]) and table.shape == (2, 12)


def test_report_command(report, capsys, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(report["report_dir"], target)
    (target / "report.html").unlink(missing_ok=True)
    meta = json.loads((report["run_dir"] / "metadata.json").read_text())
    run_dir = tmp_path / "run"
    shutil.copytree(report["run_dir"], run_dir)
    (run_dir / "metadata.json").write_text(json.dumps({**meta, "report_dir": str(target)}))
    assert main(["report", str(run_dir), "--json"]) == 0                 # a run folder: its metadata names the report
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["report_html"] == str(target / "report.html") and (target / "report.html").is_file()
    assert hr.resolve_report_dir(report["report_dir"]) == (report["report_dir"], None)   # or a report folder
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run folder" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_renders_in_headless_chromium(page, tmp_path):
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={profile}", "--window-size=1200,3000", f"--screenshot={shot}",
                        page.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    image = assert_real_png(shot.read_bytes(), min_size=(1200, 3000))
    top = np.asarray(image.crop((0, 0, 1200, 200)), dtype=np.float64)
    assert ((top[..., 0] > 180) & (top[..., 1] < 120)).any()             # the red SYNTHETIC banner is on screen

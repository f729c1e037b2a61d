"""`hftrain runs list` and reports/index.html: every report under a root, with its kind, symbols and test Sharpe."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import NO_FORECAST, TINY

from hftraining import atomic
from hftraining.cli import main
from hftraining.run_index import list_runs
from hftraining.trials import register_trial


def write_metrics(root: Path, name: str, summary: dict, folder: str = "reports") -> Path:
    path = root / folder / name / "metrics.json"
    path.parent.mkdir(parents=True)
    atomic.write_json(path, summary)
    return path


def test_every_kind_of_metrics_file_gives_its_row(tmp_path):
    write_metrics(tmp_path, "s1", {"kind": "single", "symbol": "AAA", "model": {"sharpe_ratio": 0.5}})
    write_metrics(tmp_path, "b1", {"kind": "base", "symbols": ["AAA", "BBB"], "stocks": {},
                                   "average": {"finetuned": {"sharpe_ratio": 0.7}, "base": {"sharpe_ratio": 0.1}}})
    write_metrics(tmp_path, "g1", {"kind": "seeds", "symbol": "AAA", "test": {"sharpe_ratio": {"mean": 0.3}}})
    write_metrics(tmp_path, "st", {"kind": "study", "symbols": ["AAA", "BBB", "CCC", "DDD", "EEE"],
                                   "book": {"sharpe": -0.2}})
    write_metrics(tmp_path, "old", {"symbol": "CCC", "model": {"sharpe_ratio": 1.5}})    # before "kind" existed
    register_trial(tmp_path, "old", "walk_forward", ["CCC"], None, 1.5, date="2020-01-02T03:04:05")
    write_metrics(tmp_path, "r1/DEMO", {"kind": "paper", "symbol": "DEMO", "model": {"sharpe_ratio": None}},
                  folder="paper")
    (tmp_path / "reports" / "empty").mkdir()                                     # no metrics.json: not listed
    rows = {r["name"]: r for r in list_runs(tmp_path)}
    assert set(rows) == {"s1", "b1", "g1", "st", "old", "r1/DEMO"}
    assert (rows["b1"]["kind"], rows["b1"]["symbols"], rows["b1"]["test_sharpe"]) == ("base", ["AAA", "BBB"], 0.7)
    assert rows["g1"]["test_sharpe"] == 0.3 and rows["st"]["test_sharpe"] == -0.2
    assert (rows["old"]["kind"], rows["old"]["date"]) == ("walk_forward", "2020-01-02T03:04:05")   # the registry's
    assert rows["r1/DEMO"]["kind"] == "paper" and rows["r1/DEMO"]["test_sharpe"] is None
    assert list_runs(tmp_path)[0]["name"] == "old"                               # oldest first


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A single run and a backtest of it under one root."""
    out = tmp_path_factory.mktemp("index")
    assert main(["single", "--stock", "DEMO", "--config", TINY, "--out", str(out), "-q", *NO_FORECAST,
                 "--steps", "3", "--set", "paths.run_name=first"]) == 0
    assert main(["backtest", "--model", str(out / "models" / "finetuned" / "DEMO" / "first"),
                 "--out", str(out)]) == 0
    return out


def test_the_index_page_is_rewritten_with_every_report(root):
    """Before any `runs list`: the single run's report and then the backtest's each rewrote reports/index.html."""
    page = (root / "reports" / "index.html").read_text()
    links = re.findall(r'href="([^"]+)"', page)
    assert len(links) == 2 and links[1] == "first/report.html" and links[0].startswith("backtest-")
    assert all((root / "reports" / link).is_file() for link in links)
    assert ">single<" in page and ">backtest<" in page and ">DEMO<" in page


def test_reports_written_within_one_second_keep_the_order_they_were_written(tmp_path):
    import os

    second = 1_700_000_000 * 10**9                              # both in this second: equal dates
    for name, offset in (("zz-written-first", 1_000), ("aa-written-second", 900_000_000)):
        path = write_metrics(tmp_path, name, {"kind": "single", "symbol": "AAA", "model": {"sharpe_ratio": 0.1}})
        os.utime(path, ns=(second + offset, second + offset))
    rows = list_runs(tmp_path)
    assert rows[0]["date"] == rows[1]["date"]
    assert [r["name"] for r in rows] == ["zz-written-first", "aa-written-second"]


def test_runs_list_prints_one_row_per_report(root, capsys):
    capsys.readouterr()
    assert main(["runs", "list", "--out", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "kind", "symbols", "date", "test_sharpe", "report"]
    first = next(line for line in out if line.startswith("first "))
    sharpe = json.loads((root / "reports" / "first" / "metrics.json").read_text())["model"]["sharpe_ratio"]
    assert first.split()[1:3] == ["single", "DEMO"] and f"{sharpe:+.2f}" in first
    assert first.endswith(str(root / "reports" / "first" / "report.html"))
    assert any(line.startswith("backtest-") and " backtest " in line for line in out)
    assert out[-1] == f"index: {root / 'reports' / 'index.html'}"


def test_runs_list_json_and_the_index_page(root, capsys):
    capsys.readouterr()
    assert main(["runs", "list", "--out", str(root), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    rows = json.loads(lines[0])["runs"]
    assert [r["kind"] for r in rows] == ["single", "backtest"]
    links = re.findall(r'href="([^"]+)"', (root / "reports" / "index.html").read_text())
    assert links == [f"{Path(r['report']).parent.name}/report.html" for r in reversed(rows)]   # newest first


def test_runs_list_of_a_missing_root_is_one_line(tmp_path, capsys):
    from conftest import refuse

    refuse(["runs", "list", "--out", str(tmp_path / "nowhere")], capsys, None, "no such output root")
    capsys.readouterr()                                  # refuse prints its MESSAGE line
    assert main(["runs", "list", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no reports under {tmp_path}"

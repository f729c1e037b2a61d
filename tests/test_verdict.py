"""The verdict against the best baseline: one sentence, the same on the terminal and in report.html."""

from __future__ import annotations

import html
import json
import re

from hftraining.html_report import baseline_comparison
from hftraining.verdict import against_best_baseline, best_baseline


def test_the_best_baseline_is_the_highest_net_sharpe_and_the_oracle_is_not_one():
    rows = {"model": {"sharpe_ratio": 0.41}, "buy_and_hold": {"sharpe_ratio": 0.84},
            "momentum": {"sharpe_ratio": 0.30}, "oracle": {"sharpe_ratio": 2.0}}
    assert best_baseline(rows) == ("buy_and_hold", 0.84)
    text = against_best_baseline(rows)
    assert text == ("Against the best baseline: Buy & hold has a net Sharpe of +0.84; the model's +0.41 is below "
                    "it. The oracle, who knows the planted drift, reaches +2.00: the model captured 0.20 of its "
                    "Sharpe.")
    rows["model"]["sharpe_ratio"] = 0.9
    assert "is above it" in against_best_baseline(rows)


def test_no_verdict_without_a_model_sharpe_or_a_baseline():
    assert against_best_baseline({"model": {"sharpe_ratio": None}, "buy_and_hold": {"sharpe_ratio": 1.0}}) is None
    assert against_best_baseline({"model": {"sharpe_ratio": 1.0}, "oracle": {"sharpe_ratio": 2.0}}) is None
    assert baseline_comparison({"model": {"sharpe_ratio": 1.0}}) == ""


def test_the_html_sentence_is_the_printed_one():
    rows = {"model": {"sharpe_ratio": -0.2}, "equal_weight": {"sharpe_ratio": 0.7},
            "min_variance": {"sharpe_ratio": 0.6}}
    text = against_best_baseline(rows)
    assert "1/N rebalanced" in text
    assert html.unescape(re.sub(r"<[^>]+>", "", baseline_comparison(rows))) == text


def test_a_written_report_says_what_the_run_printed(tiny_run, capsys):
    """The session's finished run: its report.html carries the verdict `hftrain single` prints for it."""
    summary = json.loads((tiny_run / "reports" / "fixture" / "metrics.json").read_text())
    text = against_best_baseline({"model": summary["model"], **summary["baselines"]})
    page = html.unescape(re.sub(r"<[^>]+>", "", (tiny_run / "reports" / "fixture" / "report.html").read_text()))
    assert text and text in page

"""A model started from a base run is judged only on bars the base never trained or selected on.

A fine-tune or a portfolio initialised from a base takes the base run's split dates (splits_by_dates), so its
test range is the base's test range. Any test range chosen otherwise (a walk-forward fold) must start
at least one embargo after the base's last training or validation bar, or the run is refused.
"""

from __future__ import annotations

import numpy as np

from hftraining import checkpoint as ckpt
from hftraining.data.panel import Panel, Splits
from hftraining.errors import UserError


def splits_by_dates(panel: Panel, spans: dict, context_length: int) -> Splits:
    """The base run's train/val/test date spans located in this panel's dates."""
    symbol = ", ".join(panel.symbols)
    dates = panel.dates
    ranges = {}
    for name in ("train", "val", "test"):
        start = np.searchsorted(dates, np.datetime64(spans[name]["start"]), side="left")
        stop = np.searchsorted(dates, np.datetime64(spans[name]["end"]) + np.timedelta64(1, "D"), side="left")
        if name == "train":
            start = max(int(start), context_length - 1)
        ranges[name] = range(int(start), int(stop))
        if len(ranges[name]) == 0:
            raise UserError(f"{symbol}: no bars in the base run's {name} dates "
                            f"{spans[name]['start']} .. {spans[name]['end']}; load data covering them")
    if ranges["test"].stop > panel.n_time - 1:
        raise UserError(f"{symbol}: data ends {panel.date_str(panel.n_time - 1)}, before the base run's test "
                        f"range ends ({spans['test']['end']}); load data covering it")
    return Splits(train=ranges["train"], val=ranges["val"], test=ranges["test"],
                  embargo=int(spans["embargo"]))


def base_spans(base: ckpt.RunFiles) -> dict:
    """The base run's recorded split dates; a base without them cannot be checked, so it is refused."""
    spans = base.metadata.get("splits")
    if not spans or any(name not in spans for name in ("train", "val", "test")):
        raise UserError(f"--base {base.path}: its metadata.json records no split dates, so its training and "
                        "validation bars cannot be kept out of the test range; use a base trained by hftrain base")
    return spans


def inherit_splits(panel: Panel, base: ckpt.RunFiles, context_length: int, embargo: int) -> Splits:
    """The base's train/val/test dates located in this panel, with at least `embargo` bars between them.

    The base's dates come from its own calendar; a group on its common dates may have fewer bars between
    two splits, so the embargo is enforced again in the group's own bars.
    """
    spans = base_spans(base)
    dated = splits_by_dates(panel, spans, context_length)
    embargo = max(embargo, dated.embargo)
    val = range(max(dated.val.start, dated.train.stop + embargo), dated.val.stop)
    test = range(max(dated.test.start, val.stop + embargo), dated.test.stop)
    if len(val) == 0 or len(test) == 0:
        raise UserError(f"{', '.join(panel.symbols)}: too few common bars in the base run's validation or test "
                        f"dates ({spans['val']['start']} .. {spans['test']['end']}) after a {embargo}-bar embargo")
    return Splits(train=dated.train, val=val, test=test, embargo=embargo)


def check_out_of_sample(panel: Panel, test: range, base: ckpt.RunFiles, embargo: int, what: str = "test") -> None:
    """UserError (one line) unless `test` starts at least `embargo` bars after the base's last train/val bar."""
    spans = base_spans(base)
    seen_end = max(spans["train"]["end"], spans["val"]["end"])
    last_seen = int(np.searchsorted(panel.dates, np.datetime64(seen_end), side="right")) - 1
    if test.start <= last_seen + embargo:
        raise UserError(
            f"--base {base.path}: the base trained and selected on {spans['train']['start']} .. {seen_end}, which "
            f"reaches into (or within {embargo} bars of) the {what} range starting {panel.date_str(test.start)}; "
            "train the base on earlier dates or test later")

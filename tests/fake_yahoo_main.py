"""`hftrain` with a fake yfinance.download: what a node sees in the multi-node test (no network anywhere).

Run as `python tests/fake_yahoo_main.py <hftrain args>` (or as torchrun's script). The fake serves
UNIVERSE (two tickers with different start dates, shaped exactly like yf.download's frames) and
appends one JSON line per download call to $HFTRAIN_FAKE_YAHOO_LOG, with the rank that made it, so a
test can count how often the data was downloaded.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date

from test_yahoo import FakeDownload, history

UNIVERSE = {"AAA": history("2019-01-01", 700, seed=1), "BBB": history("2020-01-01", 450, seed=2)}
TODAY = date(2022, 1, 10)


class LoggedDownload(FakeDownload):
    def __call__(self, tickers, *args, **kwargs):
        path = os.environ.get("HFTRAIN_FAKE_YAHOO_LOG")
        if path:
            with open(path, "a") as log:
                log.write(json.dumps({"rank": os.environ.get("RANK", "0"), "tickers": tickers}) + "\n")
        return super().__call__(tickers, *args, **kwargs)


def install(monkeypatch=None) -> LoggedDownload:
    """Point yfinance.download and the Yahoo clock at the fakes (through monkeypatch in a test)."""
    import yfinance

    from hftraining.data import yahoo

    fake = LoggedDownload(UNIVERSE)
    patches = [(yfinance, "download", fake), (yahoo, "yahoo_reachable", lambda timeout=3.0: True),
               (yahoo, "_today", lambda: TODAY)]
    for module, name, value in patches:
        if monkeypatch is not None:
            monkeypatch.setattr(module, name, value)
        else:
            setattr(module, name, value)
    return fake


if __name__ == "__main__":
    install()
    from hftraining.cli import main

    raise SystemExit(main(sys.argv[1:]))

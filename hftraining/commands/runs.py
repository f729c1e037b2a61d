"""`hftrain runs list`: every report under an output root, as a table (or --json), and reports/index.html."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hftraining.commands.common import Output
from hftraining.errors import UserError


def runs_list(out: Optional[Path] = None, json_: bool = False, quiet: bool = False) -> list[dict]:
    """Print one row per report (name, kind, symbols, date, test net Sharpe, report page), oldest first, and
    rewrite the root's reports/index.html so the page matches the table. (`quiet`: the vocabulary every writing
    command shares; there is no progress bar to silence.)"""
    from hftraining.layout import Layout
    from hftraining.run_index import format_runs, list_runs, write_index

    root = Layout.at(out or "runs").root
    if not root.is_dir():
        raise UserError(f"--out {out or 'runs'}: no such output root ({root}); give the --out your runs used")
    rows = list_runs(root)
    printed = Output(json_)
    if rows:
        printed.line(format_runs(rows))
        printed.paths(index=write_index(root))
    else:
        printed.line(f"no reports under {root}")
    printed.json_summary({"root": str(root), "runs": rows})
    return rows

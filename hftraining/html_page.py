"""The look of every page hftraining writes (report.html, a study's or seeds' page, reports/index.html).

One stylesheet and one wrapper, so the pages read alike and each stands alone (no external files).
"""

from __future__ import annotations

import html

CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#1d2733;background:#f4f6f9;margin:0;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:30px 0 10px;border-bottom:2px solid #dde3ea;
 padding-bottom:4px}h3{font-size:15px;margin:18px 0 8px}
.sub{color:#5b6876;margin:0 0 14px}.card{background:#fff;border:1px solid #dde3ea;border-radius:8px;
 padding:16px 18px;margin:12px 0;box-shadow:0 1px 2px rgba(0,0,0,.04);overflow-x:auto}
.banner{border-radius:8px;padding:12px 16px;margin:10px 0;font-weight:600}
.synthetic{background:#fde2e1;border:2px solid #c0392b;color:#8e1b10;font-size:17px}
.insample{background:#fff1d6;border:2px solid #e08e0b;color:#7a4a00;font-size:17px}
.note{background:#eef4fb;border:1px solid #b8cde6;color:#24476b;font-weight:500}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{padding:6px 9px;border-bottom:1px solid #e6eaef;text-align:right;white-space:nowrap}
th{background:#eef1f5;color:#33404d;font-weight:600;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafbfc}tr.model td{background:#e8f0fc;font-weight:600}
td.pos{color:#1e7b34}td.neg{color:#b42318}
table.narrow{width:auto;min-width:420px}.card h3{margin-top:0}
.kv td{text-align:left;white-space:normal}.kv td:first-child{color:#5b6876;width:230px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px}
.stat{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:10px 14px}
.stat .v{font-size:22px;font-weight:700}.stat .k{color:#5b6876;font-size:12px}
img{max-width:100%;display:block;margin:6px auto;border-radius:4px}
.small{font-size:12px;color:#5b6876}pre{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:6px;
 padding:10px;overflow:auto;font-size:12px;max-height:420px}details summary{cursor:pointer;font-weight:600}
"""


def page(title: str, body: str) -> str:
    """A whole self-contained page in the report style around `body`."""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f'<body><main>{body}</main></body></html>')

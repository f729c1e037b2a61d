"""Market bars for one symbol from Yahoo (cached), a CSV folder or the synthetic market, checked.

`load_bars(symbol, data_config, raw_cache)` is the one entry point the rest of the toolkit uses.
"""

from hftraining.data.bars import check_bars, summarize
from hftraining.data.sources import load_bars
from hftraining.data.synthetic import generate_bars

__all__ = ["check_bars", "generate_bars", "load_bars", "summarize"]

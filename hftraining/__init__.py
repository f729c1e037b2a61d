"""hftraining: train trading models on market bars, judged by out-of-sample net profit."""

__version__ = "0.1.0"

_LAZY = {"backtest_model": "hftraining.backtest",
         "train_single_stock_with_profit": "hftraining.train_with_profit",
         "BaseModelTrainer": "hftraining.base_model_trainer",
         "ProfitTracker": "hftraining.tracker",
         "Config": "hftraining.config",
         "PortfolioRLConfig": "hftraining.config",
         "load_config": "hftraining.config"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """`from hftraining import backtest_model` without importing torch on `import hftraining`."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hftraining' has no attribute {name!r}")

"""hftraining: train trading models on market bars, judged by out-of-sample net profit."""

__version__ = "0.1.0"

"""TensorBoard logging with the exact tags of DESIGN.md, and the rich progress bar of a run.

Tags: train/loss, train/learning_rate, eval/loss, profit/total_return, profit/sharpe_ratio,
profit/win_rate, profit/max_drawdown, profit/trade_count (validation, out of sample), plus
profit/period_win_rate for portfolios (a book has no closed trades: its win rate is another metric, so
another tag), profit/<SYMBOL>/<metric> when a run covers several symbols and an equity-curve image per
evaluation. An undefined metric (a win rate with no closed trade) is not logged at that step.
Only the main process writes (`enabled=False` on other ranks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

PROFIT_TAGS = ["total_return", "sharpe_ratio", "win_rate", "max_drawdown", "trade_count", "period_win_rate"]


class RunLogger:
    def __init__(self, logdir: Path, purge_step: Optional[int] = None, enabled: bool = True):
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            logdir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(logdir), purge_step=purge_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, float(value), step)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def evaluation(self, step: int, metrics: dict, per_symbol: dict[str, dict], loss: float,
                   simulations: Optional[dict] = None) -> None:
        if self.writer is None:
            return
        self.scalar("eval/loss", loss, step)
        for key in PROFIT_TAGS:
            if metrics.get(key) is not None:
                self.scalar(f"profit/{key}", metrics[key], step)
        if len(per_symbol) > 1:
            for symbol, values in per_symbol.items():
                for key in PROFIT_TAGS:
                    if values.get(key) is not None:
                        self.scalar(f"profit/{symbol}/{key}", values[key], step)
        if simulations:
            self.writer.add_figure("profit/equity_curve", equity_figure(simulations), step)

    def hparams(self, params: dict, metrics: dict) -> None:
        if self.writer is not None:
            clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
            self.writer.add_hparams(clean, {f"hparam/{k}": float(v) for k, v in metrics.items()}, run_name=".")

    def progress(self, total: int, enabled: bool, description: str) -> "Progress":
        return Progress(total, enabled and self.enabled, description)

    def flush(self) -> None:
        """Hand buffered events to the OS (a checkpoint must never claim steps the event file lacks)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def log_hparams(logdir: Path, config, params: dict, metrics: dict) -> None:
    """TensorBoard's hparams view of a finished run: its settings next to its validation and test Sharpe
    (`hparam/<name>`; an unknown Sharpe is logged as 0), so runs can be compared side by side."""
    hp = RunLogger(logdir)
    hp.hparams({"hidden_size": config.model.hidden_size, "num_layers": config.model.num_layers,
                "learning_rate": config.training.learning_rate, "context_length": config.data.context_length,
                "cost_bps": config.profit.transaction_cost_bps, **params},
               {name: value or 0.0 for name, value in metrics.items()})
    hp.close()


def equity_figure(simulations: dict):
    """Validation equity curves (net of costs), one line per symbol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=80)
    for symbol, sim in simulations.items():
        frame = sim.frame
        ax.plot(frame["date"], frame["equity"] / frame["equity"].iloc[0], label=symbol, linewidth=1)
    ax.set_ylabel("equity (net, start = 1)")
    ax.grid(alpha=0.3)
    if len(simulations) <= 8:
        ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


class Progress:
    """A rich progress bar showing the step, the training loss and the latest validation Sharpe."""

    def __init__(self, total: int, enabled: bool, description: str):
        self.total, self.enabled, self.description = total, enabled, description
        self.loss: Optional[float] = None
        self.sharpe: Optional[float] = None
        self._bar = None
        self._task = None

    def start(self, completed: int) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
        self._task = self._bar.add_task(self.description, total=self.total, completed=completed, info="")
        self._bar.start()

    def update(self, step: int, loss: Optional[float] = None, sharpe: Optional[float] = None) -> None:
        if self._bar is None:
            return
        if loss is not None:
            self.loss = loss
        if sharpe is not None:
            self.sharpe = sharpe
        info = []
        if self.loss is not None:
            info.append(f"loss {self.loss:.4f}")
        if self.sharpe is not None:
            info.append(f"val Sharpe {self.sharpe:+.2f}")
        self._bar.update(self._task, completed=step, info="  ".join(info))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

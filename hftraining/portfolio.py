"""`hftrain portfolio`: learn softmax weights over a group of assets, rebalanced every horizon, judged out of sample.

setup (aligned panel, splits, scaler, run folder) -> train by gradient through the drifted, cost-charged
horizon returns of short episodes -> keep the checkpoint with the best validation net Sharpe -> test
once against 1/N, buy-and-hold, each asset alone and a trailing minimum-variance book -> report.

Shapes are explicit: windows [N, L, A, F] -> weights [N, M] with M = A assets (+1 cash, last);
episodes [B, P] rebalance bars -> weights [B, P, M] and period growth [B, P, A] -> net [B, P-1].
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import nn

from hftraining import atomic
from hftraining import checkpoint as ckpt
from hftraining.config import Config, ModelConfig
from hftraining.data.panel import Scaler, Splits
from hftraining.errors import UserError
from hftraining.html_report import save_series
from hftraining.layout import Layout, claim_run_dir, new_run_id, normalize_symbol, parse_symbols
from hftraining.model import build_model
from hftraining.objective import pooled_sharpe
from hftraining.portfolio_sim import PortfolioSim, baselines, clean_metrics, rebalance_offsets, simulate_portfolio
from hftraining.report import format_table
from hftraining.sizing import VOL_SPAN, ex_ante_volatility
from hftraining.tensorboard_log import RunLogger
from hftraining.train_with_profit import Prepared, run_metadata
from hftraining.trainer import TrainingDiverged, learning_rate_at, resolve_device

log = logging.getLogger("hftraining")

CASH = "CASH"
CASH_PRIOR = 0.02   # share of cash in the untrained policy
PRIORS = ("equal", "inverse_vol")
OBJECTIVES = ("sharpe", "mean_variance", "episode_sharpe")
VAR_FLOOR = 1e-10   # keeps d sqrt(var) finite when an episode holds no risk (per-episode Sharpe form)
TABLE_KEYS = ["total_return", "sharpe_ratio", "max_drawdown", "period_win_rate", "trade_count", "rebal_turnover"]


# --- the policy ------------------------------------------------------------------------------------

class PortfolioPolicy(nn.Module):
    """Windows of every asset [N, L, A, F] (+ prior log-weights [N, A]) -> long-only weights [N, M] summing to 1.

    Each asset's window goes through the shared causal encoder (the same AllocationTransformer a
    base run trains, so its weights can be copied in); the last step's state of each asset is read
    next to the mean over assets, giving one logit per asset plus a learned per-asset bias, and a cash
    logit from the pooled state. The learned logits are tilts added to the prior's log-weights
    (`prior`: "equal" = 1/N, "inverse_vol" = risk parity from an ex-ante volatility, see prior_logits).
    The untrained policy is the prior's book with CASH_PRIOR in cash (asset heads at zero, the cash
    bias set to match), so training learns tilts away from it; `max_tilt` bounds each logit's tilt (and
    the cash logit's move) to +-max_tilt, so no weight moves beyond exp(+-2 max_tilt) times the prior's.
    """

    def __init__(self, n_features: int, n_assets: int, context_length: int, horizon: int,
                 model_cfg: ModelConfig, include_cash: bool, window: Optional[int] = None,
                 prior: str = "equal", vol_span: int = VOL_SPAN, max_tilt: Optional[float] = None):
        super().__init__()
        if prior not in PRIORS:
            raise ValueError(f"unknown portfolio prior {prior!r}; choose one of {', '.join(PRIORS)}")
        self.n_assets = n_assets
        self.include_cash = include_cash
        self.prior = prior
        self.vol_span = vol_span
        self.max_tilt = max_tilt
        self.cash_logit = math.log(n_assets * CASH_PRIOR / (1.0 - CASH_PRIOR))
        self.window = min(window or context_length, context_length)
        self.encoder = build_model(n_features, context_length, horizon, model_cfg)
        hidden = model_cfg.hidden_size
        self.asset_head = nn.Linear(2 * hidden, 1)
        self.asset_bias = nn.Parameter(torch.zeros(n_assets))
        self.cash_head = nn.Linear(hidden, 1) if include_cash else None
        for head in (self.asset_head, self.cash_head):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        if self.cash_head is not None:   # softmax weight of cash = CASH_PRIOR when every logit else is 0
            nn.init.constant_(self.cash_head.bias, self.cash_logit)

    def bounded(self, tilt: torch.Tensor) -> torch.Tensor:
        """max_tilt * tanh(tilt / max_tilt): the identity near 0, never beyond +-max_tilt (None = unbounded)."""
        return tilt if self.max_tilt is None else self.max_tilt * torch.tanh(tilt / self.max_tilt)

    @property
    def context_length(self) -> int:
        """Bars of each asset's window: the last `window` bars of the encoder's context."""
        return self.window

    def forward(self, x: torch.Tensor, prior: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Weights [N, M]; `prior` [N, A] are the prior's log-weights at each row's bar (None = equal)."""
        n, length, assets, features = x.shape
        if assets != self.n_assets:
            raise ValueError(f"windows hold {assets} assets, the policy was built for {self.n_assets}")
        flat = x.permute(0, 2, 1, 3).reshape(n * assets, length, features)        # [N*A, L, F]
        h = self.encoder.encode(flat)[:, -1].reshape(n, assets, -1)                # [N, A, H]
        pooled = h.mean(dim=1)                                                       # [N, H]
        paired = torch.cat([h, pooled[:, None, :].expand_as(h)], dim=-1)            # [N, A, 2H]
        logits = self.bounded(self.asset_head(paired).squeeze(-1) + self.asset_bias)  # [N, A] tilts
        if prior is not None:
            logits = logits + prior.to(logits.dtype)
        if self.cash_head is not None:
            cash = self.cash_logit + self.bounded(self.cash_head(pooled) - self.cash_logit)
            logits = torch.cat([logits, cash], dim=-1)                               # [N, A+1]
        return torch.softmax(logits.float(), dim=-1)


def build_policy(n_features: int, n_assets: int, config: Config) -> PortfolioPolicy:
    """The policy a config describes (training and `hftrain backtest` build it the same way)."""
    return PortfolioPolicy(n_features, n_assets, config.data.context_length, config.data.horizon, config.model,
                           config.portfolio.include_cash, config.portfolio.context_length, config.portfolio.prior,
                           config.profit.vol_span, config.portfolio.max_tilt)


def prior_logits(returns: np.ndarray, prior: str, vol_span: int = VOL_SPAN) -> np.ndarray:
    """The prior's log-weights [T, A] at every decision bar: log(A * pi_t), so 1/N gives zeros.

    "equal": pi = 1/N. "inverse_vol": pi_i proportional to 1 / sigma_i, the ex-ante EWMA volatility of
    asset i known at the close of t (hftraining.sizing.ex_ante_volatility: returns closed at bars <= t-1),
    i.e. naive risk parity; a bar where any asset has no estimate yet falls back to 1/N.
    `returns` [T, A] are the panel's next-bar returns (row t = close t -> t+1).
    """
    returns = np.asarray(returns, dtype=np.float64)
    n_time, assets = returns.shape
    if prior == "equal":
        return np.zeros((n_time, assets))
    if prior != "inverse_vol":
        raise ValueError(f"unknown portfolio prior {prior!r}; choose one of {', '.join(PRIORS)}")
    vol = ex_ante_volatility(returns, 252, vol_span)
    known = np.all(np.isfinite(vol) & (vol > 0), axis=1)
    inverse = np.where(known[:, None], 1.0 / np.where(known[:, None], vol, 1.0), 1.0)
    return np.log(assets * inverse / inverse.sum(axis=1, keepdims=True))


# --- the group's data --------------------------------------------------------------------------------

class PairStockDataset:
    """A group's scaled features and adjusted closes on the device; gathers windows and period growth by bar.

    A rebalance at bar t sees the window x[t-L+1..t] of every asset and holds until the next one,
    earning close[min(t+k, stop)] / close[t] per asset, where `stop` ends the split (never beyond).
    """

    def __init__(self, prepared: Prepared, every: int, episode_rebalances: int, device: torch.device,
                 prior: str = "equal", vol_span: int = VOL_SPAN):
        panel = prepared.panel
        self.symbols = list(panel.symbols)
        self.splits: Splits = prepared.splits
        self.every = every
        self.episode_rebalances = episode_rebalances
        self.n_assets = len(panel.symbols)
        self.x = torch.from_numpy(prepared.scaler.transform(panel)).to(device)     # [T, A, F]
        self.close = torch.from_numpy(panel.ohlc[..., 3].copy()).to(device)        # [T, A] float64
        self.returns = np.nan_to_num(panel.returns, nan=0.0)                       # [T, A] for the simulator
        self.prior = torch.from_numpy(prior_logits(self.returns, prior, vol_span)).float().to(device)  # [T, A]
        self.origins = dict(panel.data_origin)
        self.device = device
        train = self.splits.train
        self.first_start = train.start + every                     # the step-0 rebalance needs a full window
        self.last_start = train.stop - episode_rebalances * every  # the episode's last label is close train.stop
        if self.last_start < self.first_start:
            raise UserError(
                f"{', '.join(panel.symbols)}: the training range has {len(train)} bars, fewer than an episode of "
                f"(portfolio.episode_rebalances + 1) * rebalance_every = {(episode_rebalances + 1) * every}; "
                "load more history or lower portfolio.episode_rebalances")

    def windows(self, bars: torch.Tensor, context: int) -> torch.Tensor:
        """Windows [N, L, A, F] ending at each bar of bars [N]."""
        return windows(self.x, bars, context)

    def priors(self, bars: torch.Tensor) -> torch.Tensor:
        """The prior's log-weights [N, A] at each bar of bars [N] (known at that bar's close)."""
        return self.prior[bars]

    def growth(self, bars: torch.Tensor, stop: int) -> torch.Tensor:
        """Gross growth [N, A] of each asset from close t to close min(t + k, stop)."""
        end = torch.clamp(bars + self.every, max=stop)
        return (self.close[end] / self.close[bars]).float()

    def sample_episodes(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Rebalance bars [B, P] of random training episodes; column 0 only sets the drifted starting book."""
        starts = torch.randint(self.first_start, self.last_start + 1, (batch,), generator=generator)
        steps = torch.arange(-1, self.episode_rebalances, dtype=torch.int64) * self.every
        return (starts[:, None] + steps).to(self.device)

    def rebalance_bars(self, decisions: range) -> torch.Tensor:
        return torch.arange(decisions.start, decisions.stop, self.every, device=self.device)


def windows(x: torch.Tensor, bars: torch.Tensor, context: int) -> torch.Tensor:
    """Windows [N, L, A, F] of scaled features x [T, A, F] ending at each bar of bars [N] (bars <= t only)."""
    offsets = torch.arange(context - 1, -1, -1, device=x.device)
    return x[bars[:, None] - offsets]


def pooled_scaler(panel, train: range, context: Optional[int] = None) -> Scaler:
    """One mean/std per feature over the group's training rows, shared by every asset.

    Per-symbol scaling (what single-stock runs use) would erase exactly what an allocation needs to
    see: that one asset is calmer or trends more than another. Fitted on training rows only: the
    rows up to train.stop, starting where the first training window starts when `context` is given
    (a rolling walk-forward fold), else at the first bar. The rows are copied to one C-ordered
    float64 block, so the same rows give the same bits wherever the panel sits in memory.
    """
    lo = max(0, train.start - context + 1) if context is not None else 0
    rows = np.ascontiguousarray(panel.features[lo:train.stop], dtype=np.float64).reshape(-1, panel.features.shape[-1])
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    n = len(panel.symbols)
    return Scaler(list(panel.feature_names), list(panel.symbols), np.tile(mean, (n, 1)), np.tile(std, (n, 1)))


# --- the objective -------------------------------------------------------------------------------------

def horizon_net_returns(weights: torch.Tensor, growth: torch.Tensor, cost: float) -> torch.Tensor:
    """Net return [B, P-1] of each rebalance period after the first, with the drift between rebalances.

    weights [B, P, M] (cash last when M = A + 1), growth [B, P, A] of each asset over each period.
    Period p earns sum_i w_p,i (g_p,i - 1) and pays cost * sum_i |w_p,i - drifted_{p-1},i| on the risky
    assets, where drifted_{p-1} = w_{p-1} * g_{p-1} / sum(w_{p-1} * g_{p-1}) (cash grows by 1).
    """
    if weights.dim() != 3 or growth.dim() != 3 or weights.shape[:2] != growth.shape[:2]:
        raise ValueError(f"weights {tuple(weights.shape)} must be [B, P, M] and growth {tuple(growth.shape)} [B, P, A]")
    assets = growth.shape[-1]
    if weights.shape[-1] > assets:
        growth = torch.cat([growth, torch.ones_like(growth[..., :1])], dim=-1)     # cash grows by 1
    gross = (weights * (growth - 1.0)).sum(dim=-1)                                 # [B, P]
    value = weights * growth
    drifted = value / value.sum(dim=-1, keepdim=True)                              # [B, P, M]
    turnover = (weights[:, 1:, :assets] - drifted[:, :-1, :assets]).abs().sum(dim=-1)   # [B, P-1]
    return gross[:, 1:] - cost * turnover


def portfolio_loss(net: torch.Tensor, objective: str, risk_penalty: float,
                   periods_per_year: float = 252 / 5) -> torch.Tensor:
    """The training loss of period net returns [B, P-1].

    "sharpe" (Deep Momentum Networks, as profit.objective): minus the annualised Sharpe of every period
    of every episode pooled together, population std (`periods_per_year` = rebalance periods a year).
    "mean_variance": mean over episodes of -(mean - risk_penalty * var) of its periods.
    "episode_sharpe": mean over episodes of -mean/std of its own few periods (noisy; kept for comparison).
    """
    if objective == "sharpe":
        return -pooled_sharpe(net, periods_per_year)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown portfolio objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    mean = net.mean(dim=1)
    var = net.var(dim=1, unbiased=False) if net.shape[1] > 1 else torch.zeros_like(mean)
    if objective == "episode_sharpe":
        return (-mean / torch.sqrt(var + VAR_FLOOR)).mean()
    return (-mean + risk_penalty * var).mean()


def loss_from_config(net: torch.Tensor, config: Config) -> torch.Tensor:
    """portfolio_loss with the config's objective, risk penalty and rebalance periods per year."""
    pcfg = config.portfolio
    periods = config.data.periods_per_year / rebalance_every(config)
    return portfolio_loss(net, pcfg.objective, pcfg.risk_penalty, periods)


# --- training, selection, evaluation ---------------------------------------------------------------

def rebalance_every(config: Config) -> int:
    return config.portfolio.rebalance_every or config.data.horizon


@torch.no_grad()
def predict_weights(policy: PortfolioPolicy, x: torch.Tensor, bars: torch.Tensor, chunk: int = 256,
                    prior: Optional[torch.Tensor] = None) -> np.ndarray:
    """Target weights [R, M] at each rebalance bar, each from its own window of x (eval mode, no dropout).

    Every chunk is padded to `chunk` rows (repeating its last bar), so the kernels always see the same
    shapes and a bar's weights do not depend on how many bars follow it (a backtest on data ending at D
    reproduces the weights before D bit for bit). `prior` [T, A] are the prior's log-weights per bar.
    """
    was_training = policy.training
    policy.eval()
    out = []
    for i in range(0, len(bars), chunk):
        part = bars[i:i + chunk]
        padded = torch.cat([part, part[-1:].expand(chunk - len(part))]) if len(part) < chunk else part
        bias = prior[padded] if prior is not None else None
        out.append(policy(windows(x, padded, policy.context_length), bias)[:len(part)].cpu())
    policy.train(was_training)
    return torch.cat(out).double().numpy()


def simulate_policy(policy: PortfolioPolicy, x: torch.Tensor, returns: np.ndarray, decisions: range, every: int,
                    cost: float, periods_per_year: int) -> tuple[PortfolioSim, np.ndarray]:
    """The policy's book over decision bars: targets [R, M] at decisions.start, +every, ..., simulated net of cost.

    One function for a run's validation/test and for `hftrain backtest`, so a backtest trades as the run did.
    returns [T, A] is the whole panel's next-bar returns (finite), x [T, A, F] its scaled features.
    """
    bars = torch.arange(decisions.start, decisions.stop, every, device=x.device)
    prior = torch.from_numpy(prior_logits(returns, policy.prior, policy.vol_span)).float().to(x.device)
    weights = predict_weights(policy, x, bars, prior=prior)
    sim = simulate_portfolio(returns[decisions.start:decisions.stop], rebalance_offsets(len(decisions), every),
                             weights[:, :policy.n_assets], cost, periods_per_year)
    return sim, weights


@dataclass
class Evaluation:
    sim: PortfolioSim
    weights: np.ndarray      # [R, M] targets incl. cash
    loss: float


def evaluate_policy(policy: PortfolioPolicy, data: PairStockDataset, decisions: range, config: Config) -> Evaluation:
    """Simulate the policy over a split with the tracker's costs; the objective's loss on its periods."""
    sim, weights = simulate_policy(policy, data.x, data.returns, decisions, data.every,
                                   config.tracker.commission + config.tracker.slippage, config.data.periods_per_year)
    loss = 0.0
    if len(weights) > 1:
        bars = data.rebalance_bars(decisions)
        w = torch.from_numpy(weights).float()[None]
        g = data.growth(bars, decisions.stop).cpu()[None]
        net = horizon_net_returns(w, g, config.profit.transaction_cost_bps / 1e4)
        loss = loss_from_config(net, config).item()
    return Evaluation(sim, weights, loss)


@dataclass
class PolicyFit:
    best_step: int
    best_metrics: dict
    steps_done: int
    stopped_early: bool
    history: list = field(default_factory=list)


def fit_policy(policy: PortfolioPolicy, data: PairStockDataset, config: Config, best_path: Path,
               tensorboard_dir: Path, progress: bool = True) -> PolicyFit:
    """AdamW with warmup + cosine over portfolio.max_steps; evaluate on validation, keep the best weights.

    With portfolio.prior_candidate the untrained policy (the prior's book) is evaluated first, as step 0:
    training is kept only where a checkpoint beats it on validation, else the prior is (best_step 0).
    portfolio.turnover_penalty_bps is charged per unit of rebalance turnover in training only.
    """
    pcfg, tcfg = config.portfolio, config.training
    total = pcfg.max_steps
    warmup = min(tcfg.warmup_steps, total // 10)
    eval_every = max(1, min(tcfg.eval_every, total // 4))     # at least four validation points to choose from
    optimizer = torch.optim.AdamW(policy.parameters(), lr=pcfg.learning_rate, weight_decay=tcfg.weight_decay)
    generator = torch.Generator().manual_seed(tcfg.seed)
    cost = config.profit.transaction_cost_bps / 1e4
    train_cost = cost + pcfg.turnover_penalty_bps / 1e4
    logger = RunLogger(tensorboard_dir)
    logger.text("metadata/data", "; ".join(f"{s}: {o}" for s, o in data.origins.items()), 0)
    bar = logger.progress(total, enabled=progress, description=f"portfolio {'_'.join(data.symbols)}")
    bar.start(0)
    best_value, best_step, best_metrics, bad_evals, history = None, -1, {}, 0, []
    stopped_early = False
    step = 0

    def validate() -> bool:
        """Evaluate on validation, keep the weights if they are the best so far; True = stop early."""
        nonlocal best_value, best_step, best_metrics, bad_evals
        ev = evaluate_policy(policy, data, data.splits.val, config)
        metrics = ev.sim.metrics
        log_evaluation(logger, step, ev, data.symbols)
        bar.update(step, sharpe=metrics["sharpe_ratio"])
        value = ev.loss if tcfg.selection_metric == "loss" else metrics[tcfg.selection_metric]
        history.append({"step": step, "val_loss": ev.loss, **clean_metrics(metrics)})
        improved = best_value is None or (value < best_value if tcfg.selection_metric == "loss"
                                          else value > best_value)
        if improved:
            best_value, best_step, best_metrics, bad_evals = value, step, clean_metrics(metrics), 0
            ckpt.save_tensors(best_path, policy.state_dict())
        else:
            bad_evals += 1
        if tcfg.early_stopping_patience and bad_evals >= tcfg.early_stopping_patience:
            log.info("early stop at step %d: validation %s has not improved for %d evaluations",
                     step, tcfg.selection_metric, bad_evals)
            return True
        return False

    try:
        if pcfg.prior_candidate:
            validate()
        policy.train()
        while step < total:
            lr = learning_rate_at(step, pcfg.learning_rate, warmup, total, tcfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            bars = data.sample_episodes(pcfg.batch_size, generator)                  # [B, P]
            batch, periods = bars.shape
            flat = bars.reshape(-1)
            weights = policy(data.windows(flat, policy.context_length), data.priors(flat)).reshape(batch, periods, -1)
            growth = data.growth(flat, data.splits.train.stop).reshape(batch, periods, -1)
            loss = loss_from_config(horizon_net_returns(weights, growth, train_cost), config)
            if not bool(torch.isfinite(loss)):
                raise TrainingDiverged(f"portfolio loss became NaN/inf at step {step + 1}; lower "
                                       "portfolio.learning_rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), tcfg.grad_clip)
            optimizer.step()
            step += 1
            if step % tcfg.log_every == 0 or step == total:
                logger.scalar("train/loss", loss.item(), step)
                logger.scalar("train/learning_rate", lr, step)
                bar.update(step, loss=loss.item())
            else:
                bar.update(step)
            if (step % eval_every == 0 or step == total) and validate():
                stopped_early = True
                break
    finally:
        bar.stop()
        logger.close()
    ckpt.load_weights(policy, ckpt.load_tensors(best_path), best_path)
    policy.eval()
    return PolicyFit(best_step, best_metrics, step, stopped_early, history)


def log_evaluation(logger: RunLogger, step: int, ev: Evaluation, symbols: list[str]) -> None:
    """The DESIGN profit tags (validation, net of costs) plus the mean target weight per asset and turnover."""
    logger.evaluation(step, ev.sim.metrics, {}, ev.loss)
    for name, value in zip(symbols + [CASH], ev.weights.mean(axis=0), strict=False):
        logger.scalar(f"portfolio/weight/{name}", value, step)
    logger.scalar("portfolio/turnover", ev.sim.metrics["rebal_turnover"], step)


# --- base initialisation -----------------------------------------------------------------------------

def load_base_encoder(policy: PortfolioPolicy, base: ckpt.RunFiles, feature_names: list[str]) -> int:
    """Copy a base run's encoder weights into the policy; one line and no copy when anything does not fit."""
    where = f"--base {base.path}"
    if list(base.scaler.feature_names) != list(feature_names):
        differ = sorted(set(base.scaler.feature_names) ^ set(feature_names)) or ["order"]
        raise UserError(f"{where}: its features differ from this run's ({', '.join(differ[:4])}); use the same "
                        "data.forecast_backend and data.toto_horizon as the base run")
    expected = policy.encoder.state_dict()
    copied = {}
    for name, tensor in expected.items():
        if name not in base.weights:
            if name.startswith(("position_head.", "aux_head.")):
                continue
            raise UserError(f"{where}: the base weights have no {name}; not an AllocationTransformer run")
        if tuple(base.weights[name].shape) != tuple(tensor.shape):
            raise UserError(f"{where}: encoder weight {name} has shape {tuple(base.weights[name].shape)}, the "
                            f"portfolio encoder needs {tuple(tensor.shape)} (different data.context_length, "
                            "features or model size)")
        copied[name] = base.weights[name]
    policy.encoder.load_state_dict(copied, strict=False)
    return len(copied)


def open_base(base_run: Path) -> ckpt.RunFiles:
    path = Path(base_run)
    if not path.is_dir():
        raise UserError(f"--base {path}: no such folder; pass a run folder like runs/models/base/<run>")
    return ckpt.open_run(path)


# --- the whole job -------------------------------------------------------------------------------------

@dataclass
class PortfolioRun:
    model: PortfolioPolicy
    run_dir: Path
    report_dir: Path
    tensorboard_dir: Path
    fit: PolicyFit
    test: PortfolioSim
    baselines: dict[str, PortfolioSim]
    summary: dict


def run_portfolio(symbols: list[str], config: Config, base_run: Optional[Path] = None,
                  progress: bool = True) -> PortfolioRun:
    """Train, select on validation and test once a softmax allocation over one group of symbols."""
    symbols = [normalize_symbol(s) for s in symbols]
    if len(set(symbols)) < 2:
        raise UserError(f"portfolio {','.join(symbols)}: a group needs at least two different symbols")
    config = config.model_copy(deep=True)
    config.data.symbols = symbols
    base = open_base(base_run) if base_run is not None else None
    if base is not None:
        config.model = base.config.model.model_copy()      # the encoder must have the base run's shape
    Layout.at(config.paths.root).ensure_writable()
    resolve_device(config.training.device)
    prepared = prepare_aligned(symbols, config, progress)
    if base is not None:        # the base's dates: its training and validation bars never become test bars
        from hftraining.base_dates import inherit_splits

        splits = inherit_splits(prepared.panel, base, config.data.context_length, config.data.resolved_embargo)
        prepared = Prepared(prepared.panel, splits, prepared.scaler)
    pooled = pooled_scaler(prepared.panel, prepared.splits.train, config.data.context_length)
    run = run_prepared(Prepared(prepared.panel, prepared.splits, pooled), config, base, progress)
    from hftraining.trials import register_trial

    register_trial(config.paths.root, run.summary["run_id"], "portfolio", symbols,
                   run.summary["validation"].get("sharpe_ratio"), run.summary["test"].get("sharpe_ratio"),
                   run_dir=str(run.run_dir))
    return run


def prepare_aligned(symbols: list[str], config: Config, progress: bool = True) -> Prepared:
    """The group on its common dates (an allocation needs every asset on every bar) with make_splits' splits.

    `train_with_profit.prepare` gives several symbols a ragged panel, each on its own history; a portfolio
    cannot use that, so it builds the aligned panel itself. The scaler here is replaced by pooled_scaler.
    """
    from hftraining.data.panel import build_panel, make_splits
    from hftraining.train_with_profit import warn_on_cost_mismatch

    warn_on_cost_mismatch(config)
    panel = build_panel(symbols, config, Path(config.paths.root), progress=progress)
    splits = make_splits(panel.n_time, config)
    return Prepared(panel, splits, Scaler.fit(panel, splits.train))


def run_prepared(prepared: Prepared, config: Config, base: Optional[ckpt.RunFiles] = None,
                 progress: bool = True) -> PortfolioRun:
    """The job after the data is ready (tests and walk-forward folds hand in their own Prepared).

    The scaler is used as given; run_portfolio and each walk-forward fold pass pooled_scaler, fitted on
    their training rows.
    """
    panel = prepared.panel
    symbols = list(panel.symbols)
    layout = Layout.at(config.paths.root)
    run_id = config.paths.run_name or new_run_id()
    report_dir = layout.report(run_id)
    if (report_dir / "metrics.json").exists():
        raise UserError(f"{report_dir}: a report already exists for run {run_id}; pick another --set paths.run_name")
    device = resolve_device(config.training.device)
    every = rebalance_every(config)
    data = PairStockDataset(prepared, every, config.portfolio.episode_rebalances, device, config.portfolio.prior,
                            config.profit.vol_span)
    torch.manual_seed(config.training.seed)
    policy = build_policy(len(panel.feature_names), len(symbols), config)
    copied = 0
    if base is not None:
        from hftraining.base_dates import base_spans, check_out_of_sample

        check_out_of_sample(panel, prepared.splits.test, base, config.data.resolved_embargo)
        copied = load_base_encoder(policy, base, panel.feature_names)
    policy.to(device)

    run_dir = claim_run_dir(layout.portfolio_model(symbols, run_id))
    meta = run_metadata("portfolio", run_id, config, prepared, rebalance_every=every,
                        include_cash=config.portfolio.include_cash, window=policy.window,
                        base_run=str(base.path) if base is not None else None, base_tensors_copied=copied,
                        base_splits=base_spans(base) if base is not None else None)
    ckpt.save_run_files(run_dir, config, prepared.scaler, meta)
    tb_dir = layout.tensorboard("portfolio", run_id, symbols)
    result = fit_policy(policy, data, config, run_dir / ckpt.WEIGHTS, tb_dir, progress)

    test = evaluate_policy(policy, data, prepared.splits.test, config)
    cost = config.tracker.commission + config.tracker.slippage
    others = baselines(data.returns, prepared.splits.test, every, cost, symbols, config.data.periods_per_year)
    backend = {s: panel.forecast.get(s, {}).get("backend", "none") for s in symbols}
    info = {"run_id": run_id, "symbols": symbols, "run_dir": str(run_dir), "best_step": result.best_step,
            "rebalance_every": every, "include_cash": config.portfolio.include_cash, "cost_per_turnover": cost,
            "forecast_backend": backend, "synthetic": meta.get("synthetic", False),
            "base_run": meta["base_run"]}
    from hftraining.portfolio_backtest import significance_and_costs  # builds on this module: late import
    from hftraining.trials import TrialScope

    test_range = prepared.splits.test
    info.update(significance_and_costs(test.sim, others, data.returns[test_range.start:test_range.stop], cost,
                                       config.data.periods_per_year,
                                       TrialScope(config.paths.root, symbols, run_id=run_id), config.training.seed))
    report = write_portfolio_report(report_dir, panel, prepared.splits.test, symbols, test, others, info)
    ckpt.update_metadata(run_dir, status="completed", best_step=result.best_step, steps_done=result.steps_done,
                         stopped_early=result.stopped_early, device=str(device), report_dir=str(report_dir),
                         validation=result.best_metrics, test=report["model"])
    summary = {**info, "report_dir": str(report_dir), "tensorboard_dir": str(tb_dir),
               "checkpoint": str(run_dir / ckpt.WEIGHTS), "steps_done": result.steps_done,
               "test_start": report["test_start"], "test_end": report["test_end"], "test_bars": report["test_bars"],
               "validation": result.best_metrics, "test": report["model"], "mean_weights": report["mean_weights"],
               "baselines": report["baselines"]}
    from hftraining.train_with_profit import write_report_html

    summary["report_html"] = write_report_html(report_dir, run_dir)
    return PortfolioRun(policy, run_dir, report_dir, tb_dir, result, test.sim, others, summary)


# --- reports -------------------------------------------------------------------------------------------

def book_frame(dates, sim: PortfolioSim) -> pd.DataFrame:
    """date, position (invested share), net_return of one simulated book: a strategy's curve in report.html."""
    return pd.DataFrame({"date": dates, "position": sim.weights.sum(axis=1), "net_return": sim.net_returns})


def write_portfolio_report(report_dir: Path, panel, decisions: range, symbols: list[str], test: Evaluation,
                           others: dict[str, PortfolioSim], info: dict) -> dict:
    """metrics.json (policy vs baselines), test_returns.csv (held weights and net return per bar), weights.csv,
    and series.csv (every book's net returns, so report.html draws the baselines' curves next to the policy's)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    sim = test.sim
    dates = pd.to_datetime(panel.dates[decisions.start:decisions.stop]).strftime("%Y-%m-%d")
    names = symbols + [CASH]
    mean_weights = dict(zip(names, np.append(sim.targets.mean(axis=0), 1.0 - sim.targets.sum(axis=1).mean()),
                            strict=True))
    summary = {
        "test_start": dates[0], "test_end": dates[-1], "test_bars": len(dates),
        "model": clean_metrics(sim.metrics),
        "baselines": {name: clean_metrics(b.metrics) for name, b in others.items()},
        "mean_weights": {k: float(v) for k, v in mean_weights.items()},
        "definitions": {
            "period_win_rate": "share of rebalance periods with a positive compounded net return",
            "win_rate": "undefined (null): a book has no closed trades",
            "trade_count": "bars on which the book trades (turnover > 1e-6, i.e. rebalances that trade)",
            "rebal_turnover": "mean of sum_i |w_target_i - w_drifted_i| over rebalances (cash excluded)",
            "max_drawdown": "negative number: worst equity / running peak - 1",
        },
        **info,
    }
    held = pd.DataFrame(sim.weights, columns=[f"weight_{s}" for s in symbols])
    held.insert(0, "date", dates)
    held[f"weight_{CASH}"] = sim.cash
    held["turnover"] = sim.turnover
    held["net_return"] = sim.net_returns
    targets = pd.DataFrame(sim.targets, columns=[f"weight_{s}" for s in symbols])
    targets.insert(0, "date", dates[sim.rebalance])
    targets[f"weight_{CASH}"] = 1.0 - sim.targets.sum(axis=1)
    targets["turnover"] = sim.turnover[sim.rebalance]
    atomic.write_json(report_dir / "metrics.json", summary)
    atomic.write_text(report_dir / "test_returns.csv", held.to_csv(index=False, float_format="%.10g"))
    atomic.write_text(report_dir / "weights.csv", targets.to_csv(index=False, float_format="%.10g"))
    save_series(report_dir, {name: book_frame(dates, book) for name, book in {"model": sim, **others}.items()})
    return summary


def print_portfolio_summary(run: PortfolioRun, console=None) -> None:
    from rich.console import Console

    console = console or Console(stderr=True)
    s = run.summary
    label = " (SYNTHETIC market)" if s["synthetic"] else ""
    weights = ", ".join(f"{k} {v:.2f}" for k, v in s["mean_weights"].items())
    console.print(f"\n[bold]portfolio {'_'.join(s['symbols'])}{label}[/] test {s['test_start']} .. {s['test_end']} "
                  f"({s['test_bars']} bars, rebalance every {s['rebalance_every']}, net of "
                  f"{s['cost_per_turnover'] * 1e4:g} bps per unit turnover)")
    console.print(format_table({"policy": s["test"], **s["baselines"]}, TABLE_KEYS),
                  markup=False, highlight=False, soft_wrap=True)
    console.print(f"mean target weights: {weights}\nrun: {run.run_dir}\nreport: {run.report_dir}\n"
                  f"tensorboard: tensorboard --logdir {run.tensorboard_dir.parent.parent}")


def backtest_portfolio(model_dir, *args, **kwargs):
    """`hftrain backtest` of a portfolio run: hftraining.portfolio_backtest.backtest_portfolio (imported late:
    that module builds on this one)."""
    from hftraining.portfolio_backtest import backtest_portfolio as backtest

    return backtest(model_dir, *args, **kwargs)


# --- the CLI command ---------------------------------------------------------------------------------

def group_configs(pairs, config=None, set_=None, out=None, source=None, data_dir=None, start=None, end=None,
                  steps=None, device=None, seed=None, forecast_backend=None) -> list[tuple[list[str], Config]]:
    """`--pairs A,B --pairs C,D,E` -> (group, config) per group; --steps sets portfolio.max_steps and a
    run name is suffixed with the group when there are several, so groups never share a run folder."""
    from hftraining.cli import build_config

    groups = []
    for value in pairs:
        group = parse_symbols(value)
        if len(group) < 2:
            raise UserError(f"--pairs {value}: a group needs at least two different symbols, e.g. AAPL,MSFT")
        groups.append(group)
    cfg = build_config(config, set_, out, source, data_dir, start, end, None, device, seed, forecast_backend,
                       symbols=groups[0], extra={"portfolio.max_steps": steps})
    out_configs = []
    for group in groups:
        group_cfg = cfg.model_copy(deep=True)
        if cfg.paths.run_name and len(groups) > 1:
            group_cfg.paths.run_name = f"{cfg.paths.run_name}-{'_'.join(group)}"
        out_configs.append((group, group_cfg))
    return out_configs


def run_portfolio_command(pairs, base_run=None, config=None, set_=None, out=None, source=None, data_dir=None,
                          start=None, end=None, steps=None, device=None, seed=None, forecast_backend=None,
                          json_=False, quiet=False, **_) -> list[PortfolioRun]:
    """`hftrain portfolio --pairs A,B [--pairs C,D,E]`: one model per group."""
    from hftraining.cli import emit_json

    runs = []
    for group, group_cfg in group_configs(pairs, config, set_, out, source, data_dir, start, end, steps, device,
                                          seed, forecast_backend):
        start_time = time.time()
        run = run_portfolio(group, group_cfg, base_run=base_run, progress=not quiet)
        run.summary["seconds"] = round(time.time() - start_time, 1)
        print_portfolio_summary(run)
        runs.append(run)
    if json_:
        emit_json({"runs": [r.summary for r in runs]})
    return runs

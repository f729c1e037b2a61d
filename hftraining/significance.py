"""How much to believe a backtest's Sharpe: PSR, Deflated Sharpe, a bootstrap interval, cost sensitivity.

Why: a positive net Sharpe on a few hundred bars is often luck, the best of many tries, or an
artefact of cheap costs. Every report shows:

- Probabilistic Sharpe ratio (Bailey & López de Prado 2012): P(true Sharpe > benchmark) given the
  sample Sharpe SR (per bar), the number of bars T, skewness g3 and (Pearson) kurtosis g4:
      PSR = Phi( (SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2) ).
- Deflated Sharpe ratio (Bailey & López de Prado 2014): the PSR against the Sharpe the best of N
  worthless trials would reach by luck,
      SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e))),
  with N and V (variance of the trials' Sharpes) from the trial registry (hftraining.trials).
  Fallbacks: N <= 1 gives SR0 = 0 (DSR = PSR); N >= 2 with fewer than 2 registered Sharpes uses
  the sampling variance of a Sharpe estimate under the null, V = 1 / (T - 1) per bar.
- A stationary-bootstrap (Politis & Romano) percentile interval of the annualised net Sharpe,
  seeded and vectorised; blocks keep the serial dependence of daily returns.
- Net Sharpe at several costs and the break-even cost: where the mean net return per bar (and so
  the net Sharpe) crosses zero, by linear interpolation of the mean between grid costs. For fixed
  positions without stops the mean is linear in the cost, so the interpolation is exact.

Sharpes are annualised (x sqrt(P)) wherever they are reported; the formulas work per bar.
Degenerate input (fewer than 3 bars, constant returns) gives NaN, reported as "-".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from statistics import NormalDist

import numpy as np

from hftraining import metrics

EULER_GAMMA = 0.5772156649015329
DEFAULT_COSTS_BPS = (0.0, 5.0, 10.0, 20.0, 50.0)
_NORMAL = NormalDist()


def _returns(r) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    return r[np.isfinite(r)]


def _degenerate(r: np.ndarray) -> bool:
    return r.size < 3 or r.max() == r.min()


def moments(r) -> tuple[float, float]:
    """(skewness, Pearson kurtosis) with population moments: scipy.stats.skew / kurtosis(fisher=False)."""
    r = _returns(r)
    d = r - r.mean()
    m2 = np.mean(d ** 2)
    return float(np.mean(d ** 3) / m2 ** 1.5), float(np.mean(d ** 4) / m2 ** 2)


def probabilistic_sharpe_ratio(returns, benchmark: float = 0.0,
                               periods_per_year: int = metrics.PERIODS_PER_YEAR) -> float:
    """P(true Sharpe > benchmark), benchmark an annualised Sharpe; NaN on degenerate input."""
    r = _returns(returns)
    if _degenerate(r):
        return float("nan")
    sr = r.mean() / r.std(ddof=1)
    sr_star = benchmark / math.sqrt(periods_per_year)
    skew, kurt = moments(r)
    spread = max(1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr ** 2, 1e-12)   # >= 0 since kurt >= skew^2 + 1
    return float(_NORMAL.cdf((sr - sr_star) * math.sqrt(r.size - 1) / math.sqrt(spread)))


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """Expected best Sharpe of n_trials worthless strategies whose Sharpes have this variance."""
    if n_trials <= 1:
        return 0.0
    return math.sqrt(variance) * ((1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
                                  + EULER_GAMMA * _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e)))


def deflated_sharpe_ratio(returns, n_trials: int, trial_sharpes: Sequence[float] | None = None,
                          periods_per_year: int = metrics.PERIODS_PER_YEAR) -> dict:
    """PSR against the luck threshold SR0 of the best of n_trials (trial_sharpes annualised)."""
    r = _returns(returns)
    n_trials = max(1, int(n_trials))
    sharpes = [s for s in (trial_sharpes or []) if s is not None and math.isfinite(s)]
    if n_trials == 1:
        variance, source = 0.0, "one trial: SR0 = 0, so DSR = PSR"
    elif len(sharpes) >= 2:
        variance = float(np.var(sharpes, ddof=1)) / periods_per_year
        source = f"variance of {len(sharpes)} registered trial Sharpes"
    else:
        variance = 1.0 / max(r.size - 1, 1)
        source = "fewer than 2 registered Sharpes: null sampling variance 1/(T-1)"
    sr0 = expected_max_sharpe(n_trials, variance) * math.sqrt(periods_per_year)
    return {"dsr": probabilistic_sharpe_ratio(r, sr0, periods_per_year), "n_trials": n_trials,
            "sr0": sr0, "trial_sharpe_std": math.sqrt(variance * periods_per_year), "variance_source": source}


def stationary_bootstrap_indices(n: int, n_boot: int, mean_block: float, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n] indices: blocks start at random bars, continue (wrapping) with prob 1 - 1/mean_block."""
    new_block = rng.random((n_boot, n)) < 1.0 / mean_block
    new_block[:, 0] = True
    starts = rng.integers(0, n, size=(n_boot, n))
    steps = np.arange(n)
    block_begin = np.maximum.accumulate(np.where(new_block, steps, 0), axis=1)
    return (np.take_along_axis(starts, block_begin, axis=1) + steps - block_begin) % n


def bootstrap_sharpe_ci(returns, n_boot: int = 2000, confidence: float = 0.95, mean_block: float | None = None,
                        seed: int = 0, periods_per_year: int = metrics.PERIODS_PER_YEAR) -> dict:
    """Percentile interval of the annualised Sharpe over stationary-bootstrap resamples."""
    r = _returns(returns)
    point = metrics.sharpe_ratio(r, periods_per_year)
    if _degenerate(r):
        return {"low": float("nan"), "high": float("nan"), "point": point, "confidence": confidence,
                "n_boot": 0, "mean_block": None, "method": "stationary bootstrap"}
    block = float(mean_block or max(1.0, round(r.size ** (1 / 3))))
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // r.size)            # bounds memory to a few tens of MB
    sharpes = []
    for done in range(0, n_boot, chunk):
        x = r[stationary_bootstrap_indices(r.size, min(chunk, n_boot - done), block, rng)]
        std = x.std(axis=1, ddof=1)
        mean = x.mean(axis=1)
        sharpes.append(np.divide(mean, std, out=np.zeros_like(mean), where=std > 0))
    values = np.concatenate(sharpes) * math.sqrt(periods_per_year)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return {"low": float(low), "high": float(high), "point": point, "confidence": confidence,
            "n_boot": int(n_boot), "mean_block": block, "method": "stationary bootstrap"}


# --- cost sensitivity --------------------------------------------------------------------------

def break_even_cost(costs_bps: Sequence[float], mean_returns: Sequence[float]) -> tuple[float | None, str]:
    """Cost (bps) where the mean net return crosses 0, and how it was found."""
    c = np.asarray(costs_bps, dtype=np.float64)
    m = np.asarray(mean_returns, dtype=np.float64)
    order = np.argsort(c)
    c, m = c[order], m[order]
    if m[0] <= 0:
        return None, f"not profitable even at {c[0]:g} bps"
    for i in range(1, c.size):
        if m[i] <= 0:
            return float(c[i - 1] + m[i - 1] * (c[i] - c[i - 1]) / (m[i - 1] - m[i])), "interpolated"
    if c.size < 2 or m[-1] >= m[-2]:
        return None, "costs do not lower the mean return (no trading)"
    slope = (m[-1] - m[-2]) / (c[-1] - c[-2])
    return float(c[-1] - m[-1] / slope), f"extrapolated beyond {c[-1]:g} bps"


def cost_sensitivity(net_returns_at: Callable[[float], np.ndarray], costs_bps: Iterable[float] = DEFAULT_COSTS_BPS,
                     periods_per_year: int = metrics.PERIODS_PER_YEAR) -> dict:
    """Net Sharpe, total return and mean return at each cost; `net_returns_at(bps)` re-simulates."""
    rows = []
    for bps in costs_bps:
        r = np.asarray(net_returns_at(float(bps)), dtype=np.float64)
        rows.append({"cost_bps": float(bps), "sharpe_ratio": metrics.sharpe_ratio(r, periods_per_year),
                     "total_return": metrics.total_return(r), "mean_return": float(r.mean()) if r.size else 0.0})
    value, how = break_even_cost([row["cost_bps"] for row in rows], [row["mean_return"] for row in rows])
    return {"rows": rows, "break_even_bps": value, "break_even_how": how,
            "break_even_basis": "mean net return per bar = 0, i.e. net Sharpe = 0"}


def significance_summary(net_returns, n_trials: int = 1, trial_sharpes: Sequence[float] | None = None,
                         periods_per_year: int = metrics.PERIODS_PER_YEAR, seed: int = 0,
                         n_boot: int = 2000) -> dict:
    """PSR vs 0, DSR and the bootstrap interval of one net return series, JSON-ready (NaN -> None)."""
    out = {"sharpe_ratio": metrics.sharpe_ratio(_returns(net_returns), periods_per_year),
           "n_bars": int(_returns(net_returns).size),
           "psr": probabilistic_sharpe_ratio(net_returns, 0.0, periods_per_year),
           "deflated": deflated_sharpe_ratio(net_returns, n_trials, trial_sharpes, periods_per_year),
           "bootstrap": bootstrap_sharpe_ci(net_returns, n_boot=n_boot, seed=seed, periods_per_year=periods_per_year)}
    return finite_or_none(out)


def finite_or_none(value):
    """NaN/inf -> None throughout a nested structure (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value

"""The typed, strict configuration tree: YAML in, dotted overrides, one validation, YAML out.

Every stage receives its settings from here. Unknown keys are errors (with a did-you-mean hint)
because a misspelt key that is silently ignored is a run that trained on something else.
This module imports no torch so that `hftrain config validate` and the CLI start fast.
"""

from __future__ import annotations

import difflib
import io
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hftraining.errors import UserError


class Section(BaseModel):
    """Base of every config section: unknown keys are refused, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


ForecastBackend = Literal["auto", "toto", "chronos", "statistical", "none"]


class DataConfig(Section):
    source: Literal["auto", "yahoo", "csv", "synthetic"] = Field(
        "auto",
        description="Where bars come from: cache then Yahoo (auto), Yahoo, a CSV folder, or the synthetic market.")
    data_dir: Optional[str] = Field(None, description="Folder of <SYMBOL>.csv files for the csv source.")
    symbols: list[str] = Field(["AAPL"], description="Symbols to train on (single uses the first).")
    start: Optional[str] = Field(None, description="First date to load (YYYY-MM-DD); None = all history.")
    end: Optional[str] = Field(None, description="Last date to load (YYYY-MM-DD); None = up to the latest bar.")
    interval: str = Field("1d", description="Bar interval for Yahoo downloads (daily bars are the tested path).")
    periods_per_year: int = Field(252, gt=0, description="Bars per year, used to annualise Sharpe and CAGR.")
    refresh: bool = Field(False, description="Yahoo: download bars newer than the cached ones before using the cache.")
    context_length: int = Field(64, ge=2, description="Bars in one model window (the model sees bars t-L+1..t).")
    horizon: int = Field(5, ge=1, description="Bars ahead predicted by the auxiliary head and forecast features.")
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of usable bars in the validation range.")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of usable bars in the test range.")
    embargo: Optional[int] = Field(
        None, ge=0, description="Bars dropped between splits, at least context_length + horizon (the default).")
    synthetic_bars: int = Field(3000, ge=100, description="Length of each synthetic series, in bars.")
    synthetic_seed: int = Field(7, description="Seed of the synthetic market generator.")
    synthetic_edge: float = Field(
        1.0, ge=0, description="Strength of the synthetic market's hidden drift (oracle Sharpe; 0 = random walk).")
    use_toto_forecasts: bool = Field(
        True, description="Append forecast features to every bar (the forecaster: data.forecast_backend).")
    forecast_backend: Optional[ForecastBackend] = Field(
        None, description="Forecaster for features: auto = toto on a CUDA machine with toto-ts installed, else "
                          "statistical (chosen at run time, recorded in the metadata); None = auto if "
                          "use_toto_forecasts else none.")
    forecast_fallback: Literal["statistical", "error"] = Field(
        "statistical", description="When the requested forecaster is unavailable: warn and use statistical, or stop.")
    forecast_context_length: int = Field(
        256, ge=8, description="Bars of price history per forecast window (a multiple of the model's patch size).")
    forecast_batch_size: int = Field(256, ge=1, description="Forecast windows per model call.")
    toto_model_id: str = Field("Datadog/Toto-Open-Base-1.0", description="Toto hub id or local checkpoint folder.")
    toto_device: str = Field("cuda", description="Device for Toto (it requires CUDA).")
    toto_horizon: int = Field(5, ge=1, description="Forecast horizon in bars for the forecast features.")
    toto_num_samples: int = Field(2048, ge=1, description="Toto samples per window in samples mode.")
    toto_samples_per_batch: int = Field(256, ge=1, description="Toto samples drawn per pass (divides num_samples).")
    toto_mode: Literal["samples", "analytic"] = Field(
        "analytic", description="Toto: mean/std read off the predicted mixture in one pass, or Monte Carlo samples.")
    toto_dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="Toto compute dtype on CUDA.")
    chronos_model_id: str = Field("amazon/chronos-bolt-small", description="Chronos hub id or local folder.")
    chronos_device: str = Field("cpu", description="Device for Chronos (cpu or cuda; fp32 on CPU).")
    on_bad_symbol: Literal["error", "skip"] = Field(
        "error", description="A symbol that fails to load or fails the bar checks: stop the run, or skip it "
                             "(one line each, listed in the run metadata).")
    load_workers: int = Field(
        0, ge=0, description="Threads loading and featurising symbols in parallel (0 = one per CPU core, at most 8).")

    @property
    def resolved_forecast_backend(self) -> str:
        """The backend asked for, after applying the use_toto_forecasts default ("auto" is resolved at run time,
        by hftraining.forecasting.base.choose_auto, because it depends on the machine)."""
        if self.forecast_backend is not None:
            return self.forecast_backend
        return "auto" if self.use_toto_forecasts else "none"

    @property
    def resolved_embargo(self) -> int:
        """Embargo in bars: at least one window plus the horizon so no window straddles two splits."""
        return self.embargo if self.embargo is not None else self.context_length + self.horizon


class ModelConfig(Section):
    hidden_size: int = Field(16, ge=4, description="Transformer width.")
    num_layers: int = Field(1, ge=1, description="Transformer blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads per block (divides hidden_size).")
    ff_multiplier: int = Field(4, ge=1, description="Feed-forward width as a multiple of hidden_size.")
    dropout: float = Field(0.3, ge=0, lt=1, description="Dropout in attention and feed-forward layers.")
    max_position: float = Field(1.0, gt=0, le=1.0, description="Largest absolute position the allocation head emits.")
    aux_weight: float = Field(0.0, ge=0, description="Weight of the auxiliary next-horizon return loss (0 = off).")
    members: int = Field(1, ge=1, le=16, description="Independently initialised copies trained side by side, each on "
                                                     "its own loss; the position is their mean (a seed ensemble).")


class TrainingConfig(Section):
    learning_rate: float = Field(3e-4, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(64, ge=1, description="Windows per optimizer step (before accumulation).")
    grad_accum_steps: int = Field(1, ge=1, description="Micro-batches accumulated per optimizer step.")
    max_steps: int = Field(600, ge=1, description="Optimizer steps (the schedule counts these, not micro-batches).")
    warmup_steps: int = Field(50, ge=0, description="Linear warmup steps before the cosine decay.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a share of the peak.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient norm clip.")
    eval_every: int = Field(100, ge=1, description="Optimizer steps between validation evaluations.")
    log_every: int = Field(10, ge=1, description="Optimizer steps between train/loss logs.")
    early_stopping_patience: int = Field(
        5, ge=0, description="Evaluations without improvement before stopping (0 = never stop early).")
    selection_metric: Literal["sharpe_ratio", "total_return", "loss"] = Field(
        "sharpe_ratio", description="Validation metric that picks the best checkpoint and drives early stopping.")
    seed: int = Field(0, description="Seed for weights, batch order and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Training device (auto = cuda if available).")
    amp: bool = Field(True, description="bf16 autocast on CUDA (CPU always runs fp32).")
    compile: bool = Field(False, description="torch.compile the model.")
    nan_policy: Literal["stop", "skip"] = Field(
        "stop", description="On a NaN/inf loss: stop keeping the last good checkpoint, or skip the batch.")
    checkpoint_every: int = Field(100, ge=1, description="Optimizer steps between resumable 'last' checkpoints.")
    finetune_learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate when fine-tuning a base model.")
    finetune_epochs: int = Field(1, ge=1, description="Passes over one stock's training windows when fine-tuning.")
    prior_candidate: Union[Literal["auto"], bool] = Field(
        "auto", description="Models trained from scratch on one stock (single, study, walk-forward folds) must beat "
                            "the always-long prior (raw +1 in risk units, the vol_long baseline) on validation net "
                            "Sharpe, else the run holds that prior and says so. auto: on for real data, off on "
                            "synthetic markets (their drift has no premium to hold).")

    @field_validator("prior_candidate", mode="before")
    @classmethod
    def _auto_true_or_false(cls, value: Any) -> Any:
        """One clear refusal for anything but auto / true / false (a union would name only one of them)."""
        if value == "auto" or isinstance(value, bool):
            return value
        raise ValueError(f"{value!r}: must be auto, true or false")


class ProfitConfig(Section):
    transaction_cost_bps: float = Field(10.0, ge=0, description="Cost per unit of turnover, in basis points.")
    objective: Literal["sharpe", "mean", "mean_variance"] = Field(
        "sharpe", description="Training loss: pooled annualised Sharpe of the batch (DMN), mean net return, "
                              "or mean - risk_penalty * variance.")
    risk_penalty: float = Field(0.0, ge=0, description="Weight of the variance of net returns (mean_variance).")
    turnover_penalty_bps: float = Field(
        10.0, ge=0, description="Extra training-only cost per unit of turnover, in bps (regulariser).")
    position_sizing: Literal["risk", "fraction"] = Field(
        "risk", description="risk: traded = raw * min(cap, sigma_target / ex-ante vol); fraction: traded = raw.")
    sigma_target: float = Field(0.15, gt=0, description="Annual volatility a full raw position targets (risk sizing).")
    vol_span: int = Field(60, ge=2, description="EWMA span, in bars, of the ex-ante volatility estimate.")


class TrackerConfig(Section):
    initial_capital: float = Field(100_000.0, gt=0, description="Starting equity of the simulation.")
    commission: float = Field(0.0005, ge=0, description="Commission as a fraction of traded notional.")
    slippage: float = Field(0.0005, ge=0, description="Fill price offset from the close, as a fraction.")
    max_position_size: float = Field(
        1.0, gt=0, le=10.0, description="Largest position as a fraction of equity: the leverage cap "
                                         "(financing costs of leverage are not modelled).")
    stop_loss: Optional[float] = Field(
        None, gt=0, lt=1, description="Exit when price moves this fraction against entry.")
    take_profit: Optional[float] = Field(None, gt=0, description="Exit when price moves this fraction in favour.")

    @property
    def cost_per_turnover(self) -> float:
        """What one unit of turnover costs (commission + slippage), as a fraction of the traded notional."""
        return self.commission + self.slippage

    def with_cost_bps(self, bps: float) -> "TrackerConfig":
        """A copy whose commission + slippage total `bps`, split in the configured proportion."""
        total, rate = self.cost_per_turnover, bps / 1e4
        commission = self.commission * rate / total if total > 0 else rate
        return self.model_copy(update={"commission": commission, "slippage": rate - commission})


class PortfolioRLConfig(Section):
    include_cash: bool = Field(True, description="Add a cash asset the policy may hold.")
    rebalance_every: Optional[int] = Field(None, ge=1, description="Bars between rebalances; None = data.horizon.")
    risk_penalty: float = Field(1.0, ge=0, description="Weight of the variance of horizon returns in the objective.")
    objective: Literal["sharpe", "mean_variance", "episode_sharpe"] = Field(
        "mean_variance", description="Portfolio objective: sharpe = pooled over every rebalance period of the batch "
                                     "(DMN), mean_variance = per episode, episode_sharpe = per episode.")
    prior: Literal["equal", "inverse_vol"] = Field(
        "equal", description="Starting allocation the policy tilts from: equal = 1/N, inverse_vol = risk parity.")
    prior_candidate: bool = Field(
        True, description="Validate the untrained policy (the prior) too; training is kept only if it beats it.")
    turnover_penalty_bps: float = Field(
        10.0, ge=0, description="Extra cost per unit of rebalance turnover, charged in training only.")
    max_tilt: Optional[float] = Field(
        0.5, gt=0, description="Bound on each learned logit tilt away from the prior (tanh); None = unbounded.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate of the portfolio policy.")
    max_steps: int = Field(100, ge=1, description="Optimizer steps for the portfolio policy.")
    batch_size: int = Field(16, ge=1, description="Episodes per optimizer step.")
    episode_rebalances: int = Field(4, ge=1, description="Rebalances per training episode.")
    context_length: Optional[int] = Field(
        32, ge=2, description="Bars per asset window the policy reads, capped at data.context_length; None = that.")


class PathsConfig(Section):
    root: str = Field("runs", description="Output root: models, tensorboard, reports, data caches.")
    run_name: Optional[str] = Field(None, description="Run name; None = a timestamp plus a random suffix.")

    @field_validator("run_name")
    @classmethod
    def _run_name_is_one_folder(cls, value: Optional[str]) -> Optional[str]:
        """Refused at load time, before any data is fetched: a run name is one folder name, never a path."""
        from hftraining.layout import RUN_NAME_PATTERN

        if value is not None and (not RUN_NAME_PATTERN.fullmatch(value) or ".." in value):
            raise ValueError(f"paths.run_name {value!r} is not allowed: use letters, digits, '_', '.', '-' "
                             "(no '..' or '/')")
        return value


class Config(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    profit: ProfitConfig = Field(default_factory=ProfitConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    portfolio: PortfolioRLConfig = Field(default_factory=PortfolioRLConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "Config":
        if self.model.hidden_size % self.model.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.model.hidden_size}) must be divisible by "
                f"model.num_heads ({self.model.num_heads})")
        if self.training.warmup_steps >= self.training.max_steps:
            raise ValueError(
                f"training.warmup_steps ({self.training.warmup_steps}) must be below "
                f"training.max_steps ({self.training.max_steps})")
        if self.data.toto_num_samples % min(self.data.toto_samples_per_batch, self.data.toto_num_samples):
            raise ValueError("data.toto_samples_per_batch must divide data.toto_num_samples")
        if self.data.start and self.data.end and self.data.start > self.data.end:
            raise ValueError(f"data.start ({self.data.start}) is after data.end ({self.data.end}); swap them")
        for name in ("start", "end"):
            value = getattr(self.data, name)
            if value is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise ValueError(f"data.{name} must be a date YYYY-MM-DD, got {value!r}")
        if self.cost_mismatch():
            raise ValueError(self.cost_mismatch())
        return self

    def cost_mismatch(self) -> Optional[str]:
        """Why training and evaluation would charge different costs per unit of turnover (invariant 4), or None.

        Training charges profit.transaction_cost_bps, the tracker charges commission + slippage: one cost,
        written twice, so the two must agree.
        """
        evaluated = self.cost_per_turnover * 1e4
        if abs(evaluated - self.profit.transaction_cost_bps) <= 1e-6:
            return None
        return (f"profit.transaction_cost_bps ({self.profit.transaction_cost_bps:g}) must equal (tracker.commission + "
                f"tracker.slippage) * 1e4 = {evaluated:g} bps: training and evaluation charge one cost; set both")

    def check_costs(self) -> None:
        """The mismatch as one UserError line (fields assigned in Python are checked when a run starts)."""
        if self.cost_mismatch():
            raise UserError(self.cost_mismatch())

    def with_cost_bps(self, bps: float) -> "Config":
        """A copy charging `bps` per unit of turnover everywhere: profit.transaction_cost_bps and the tracker's
        commission + slippage (split in the configured proportion)."""
        cfg = self.model_copy(deep=True)
        cfg.profit.transaction_cost_bps = bps
        cfg.tracker = cfg.tracker.with_cost_bps(bps)
        return cfg

    def with_steps(self, steps: int, evaluations: Optional[int] = None) -> "Config":
        """A copy whose training schedule fits `steps` optimizer steps: the one rule every stage uses
        (`schedule_for`). Used by fine-tunes, the Python API, base runs and portfolios; `--steps N` and
        `--set training.max_steps=N` apply the same rule in `load_config`.
        """
        if steps < 1:
            raise UserError(f"steps = {steps}: must be at least 1")
        cfg = self.model_copy(deep=True)
        t = cfg.training
        fitted = schedule_for(steps, t.warmup_steps, t.eval_every, t.checkpoint_every, evaluations)
        t.warmup_steps = fitted["warmup_steps"]
        t.max_steps = steps
        t.eval_every = fitted["eval_every"]
        t.checkpoint_every = fitted["checkpoint_every"]
        return cfg

    @property
    def cost_per_turnover(self) -> float:
        """What one unit of turnover costs in evaluation (tracker commission + slippage), as a fraction."""
        return self.tracker.cost_per_turnover


def schedule_for(steps: int, warmup_steps: int, eval_every: int, checkpoint_every: int,
                 evaluations: Optional[int] = None) -> dict[str, int]:
    """The schedule of a stage given `steps` optimizer steps (README: "One schedule rule").

    max_steps = steps; warmup_steps = min(warmup_steps, steps // 10); eval_every = min(eval_every, steps,
    ceil(steps / evaluations)) (at least `evaluations` validations when given); checkpoint_every =
    min(checkpoint_every, steps). Why: a short run must still warm up briefly, validate and checkpoint.
    """
    return {"max_steps": steps, "warmup_steps": min(warmup_steps, steps // 10),
            "eval_every": min(eval_every, steps, -(-steps // evaluations) if evaluations else steps),
            "checkpoint_every": min(checkpoint_every, steps)}


SCHEDULE_KEYS = ("warmup_steps", "eval_every", "checkpoint_every")


# --- YAML loading -----------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` and `3E5` as floats (YAML 1.1 needs a dot and a sign) and keeps
    dates such as 2010-01-04 as strings (the config stores dates as text)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str, where: str = "<string>") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}:{at}: YAML syntax error: {problem}") from None


def _all_keys(model_cls: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model_cls.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_all_keys(annotation, path + "."))
    return keys


def did_you_mean(path: str) -> str:
    """A hint naming the closest valid dotted key, or '' when nothing is close."""
    candidates = _all_keys(Config)
    leaf_matches = [k for k in candidates if k.split(".")[-1] == path.split(".")[-1]]
    close = leaf_matches or difflib.get_close_matches(path, candidates, n=1, cutoff=0.5)
    return f" (did you mean {close[0]}?)" if close else ""


# Pydantic error types -> plain words; "{ge}" and the like are filled from the error's context.
PLAIN_WORDS = {
    "greater_than_equal": "must be at least {ge}", "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}", "less_than": "must be less than {lt}",
    "int_parsing": "must be a whole number", "int_from_float": "must be a whole number",
    "int_type": "must be a whole number", "float_parsing": "must be a number", "float_type": "must be a number",
    "bool_parsing": "must be true or false", "bool_type": "must be true or false", "string_type": "must be text",
    "list_type": "must be a list, e.g. [AAPL, MSFT]", "model_type": "must be a section (a mapping of keys)",
    "dict_type": "must be a section (a mapping of keys)",
}


def plain_words(error: dict) -> str:
    """Pydantic's message for a bad value, in plain words ("must be at least 1")."""
    ctx = {k: format(v, "g") if isinstance(v, float) else v for k, v in (error.get("ctx") or {}).items()}
    if error["type"] == "literal_error":
        return "must be one of " + ctx["expected"].replace("'", "").replace(" or ", ", ")
    if error["type"] in PLAIN_WORDS:
        return PLAIN_WORDS[error["type"]].format(**ctx)
    return error["msg"].removeprefix("Input should be ").removeprefix("Value error, ")


def _describe(error: dict, where: str, origins: Optional[dict[str, str]] = None) -> str:
    """One line naming where the bad value came from: the flag, the --set item, or the file and key."""
    origins = origins or {}
    path = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{origins.get(path, where)}: unknown config key '{path}'{did_you_mean(path)}"
    if error["type"] == "value_error":
        message = error["msg"].removeprefix("Value error, ")
        if path in origins:                                  # one field's own rule: the flag or --set item that set it
            return f"{origins[path]}: {message}"
        named = [key for key in origins if key in message]
        if named or not path:                                # a rule across fields names its keys itself
            return f"{origins[named[0]] if named else where}: {message}"
        return f"{where}: {path} = {message}"
    if path in origins:
        return f"{origins[path]}: {plain_words(error)}"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"{where}: {path or 'config'} = {shown}: {plain_words(error)}"


def _upgrade_legacy(raw: dict, where: str) -> None:
    """Read configs written before risk sizing (they carry profit.sharpe_weight) as what they trained.

    Those runs traded raw positions as fractions of equity and have no position_sizing key; the old
    per-window Sharpe weight no longer exists. One warning says so; nothing else changes.
    """
    profit = raw.get("profit")
    if isinstance(profit, dict) and "sharpe_weight" in profit:
        import logging

        profit.pop("sharpe_weight")
        profit.setdefault("position_sizing", "fraction")
        logging.getLogger("hftraining").warning(
            "%s: profit.sharpe_weight is from an older version (per-window Sharpe objective); read with "
            "profit.position_sizing=%s and the default objective", where, profit["position_sizing"])


def validate(raw: dict, where: str, origins: Optional[dict[str, str]] = None) -> Config:
    """Build a Config from plain data; the first problem becomes one UserError line naming its origin
    (`origins`: dotted key -> the flag or --set item that gave it, from apply_overrides)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: the config must be a mapping of sections, got {type(raw).__name__}")
    _upgrade_legacy(raw, where)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_describe(exc.errors()[0], where, origins)) from None


def _set_dotted(tree: dict, dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{where}: '{dotted}' goes through '{part}', which is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """`training.max_steps=100` -> ('training.max_steps', 100), values parsed as YAML scalars."""
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set training.max_steps=100")
    key, text = item.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", key):
        raise UserError(f"--set {item!r}: the key must be dotted like training.max_steps{did_you_mean(key)}")
    return key, parse_yaml(text, where=f"--set {key}") if text.strip() else None


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None,
                updates: Optional[dict[str, Any]] = None, flags: Optional[dict[str, str]] = None) -> Config:
    """Read a YAML file (or defaults), apply `--set` overrides then CLI-flag updates, validate once.

    `flags` names the flag behind each key of `updates` (`{"data.start": "--start"}`) so an error says
    `--start 2020-13-01: ...`, not where the defaults live.
    """
    raw: dict = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found{available_configs(path)}")
        raw = parse_yaml(path.read_text(), where=where) or {}
        if not isinstance(raw, dict):
            raise UserError(f"{where}: the config must be a mapping of sections")
    origins = apply_overrides(raw, overrides, updates, flags)
    return validate(raw, where, origins)


def available_configs(path: Path) -> str:
    """`; configs/ has default.yaml, tiny.yaml` for a --config that does not exist (the folder it names, else
    configs/ in the working directory, else the repository's configs/)."""
    named = [path.parent] if path.parent != Path(".") else []
    for folder in (*named, Path("configs"), Path(__file__).resolve().parents[1] / "configs"):
        names = sorted(p.name for p in folder.glob("*.yaml")) if folder.is_dir() else []
        if names:
            return f"; {folder}/ has {', '.join(names)}"
    return ""


def apply_overrides(raw: dict, overrides: Optional[list[str]] = None,
                    updates: Optional[dict[str, Any]] = None,
                    flags: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Apply `--set KEY=VALUE` items, then CLI-flag updates (None = not given), to a raw config tree.

    Returns where each given key came from (`--set key=value`, `--flag value`), for error lines. A given
    training.max_steps refits the schedule by `schedule_for` (the `--steps` rule), except the schedule
    keys given explicitly, which are kept as written.
    """
    origins: dict[str, str] = {}
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(raw, key, value, where=f"--set {key}")
        origins[key] = f"--set {item.strip()}"
    for key, value in (updates or {}).items():
        if value is not None:
            _set_dotted(raw, key, value, where=f"option for {key}")
            flag = (flags or {}).get(key)
            origins[key] = f"{flag} {value}" if flag else f"option for {key}"
    if "training.max_steps" in origins:
        _fit_schedule(raw, origins)
    return origins


def _fit_schedule(raw: dict, origins: dict[str, str]) -> None:
    """The --steps rule on a raw tree: training.max_steps was given; fit the schedule keys not given."""
    training = raw.get("training")
    if not isinstance(training, dict):
        return
    defaults = TrainingConfig.model_fields
    values = {k: training.get(k, defaults[k].default) for k in ("max_steps", *SCHEDULE_KEYS)}
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in
               (values["max_steps"], values["eval_every"], values["checkpoint_every"])) or \
            not isinstance(values["warmup_steps"], int):
        return                                          # validation names the bad value
    fitted = schedule_for(values["max_steps"], values["warmup_steps"], values["eval_every"],
                          values["checkpoint_every"])
    for key in SCHEDULE_KEYS:
        if f"training.{key}" not in origins:
            training[key] = fitted[key]


def to_yaml(config: Config) -> str:
    buffer = io.StringIO()
    yaml.safe_dump(config.model_dump(mode="json"), buffer, sort_keys=False)
    return buffer.getvalue()


def describe_fields() -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field: the README's config reference."""
    rows = []

    def walk(model_cls: type[BaseModel], prefix: str) -> None:
        for name, field in model_cls.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
            else:
                rows.append((f"{prefix}{name}", repr(field.get_default(call_default_factory=True)),
                             field.description or ""))

    walk(Config, "")
    return rows

"""The forecaster interface, the result type, and the policy for a forecaster that is unavailable.

Every backend maps contexts [windows, L] of float32 prices to the per-step mean and std of the next H
prices of each window, in price units. Nothing else: rolling, caching and the conversion to returns
live in rolling.py / cache.py so that every backend gets the same causal treatment.

`auto` (the default) is not a request for a model: it picks, at run time, what this machine can run
(Toto on CUDA with toto-ts installed, else statistical), says so in one info line and records the choice
and its reason in the run metadata (`forecast.<SYMBOL>.auto_choice`).

The policy (DESIGN.md invariant 6): a requested model that cannot run (no CUDA for Toto, package
missing, weights not fetchable) either stops the run with a one-line UserError or, when
`data.forecast_fallback == "statistical"`, logs ONE warning naming what was asked, why it cannot run
and what is used instead, and the result records both. Never zeros, never a random model. A model
path that does not exist is a typo, not an unavailable model: always a UserError.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hftraining.config import DataConfig
from hftraining.errors import UserError

log = logging.getLogger("hftraining")

CACHE_SCHEMA = 1  # bump when the meaning of cached rows changes


@dataclass
class ForecastFeatures:
    """Per-bar forecast features of one symbol: values[t] uses prices[:t+1] only (NaN without full context)."""

    values: np.ndarray  # float32 [T, 2H]: fc_mean_h = m_h/p_t - 1, fc_std_h = s_h/p_t
    names: list[str]
    backend: str  # what actually produced the numbers
    requested: str  # what the config asked for
    info: dict[str, Any] = field(default_factory=dict)


def feature_names(horizon: int) -> list[str]:
    return [f"fc_mean_{h}" for h in range(1, horizon + 1)] + [f"fc_std_{h}" for h in range(1, horizon + 1)]


class BackendUnavailable(Exception):
    """The requested forecaster cannot run here; the message is the reason, for the warning or the error."""


class Backend(ABC):
    """One forecaster, loaded once. Subclasses set the attributes below in __init__."""

    name: str  # "toto" | "chronos" | "statistical"
    horizon: int
    context_length: int  # the window length actually used (Toto rounds down to its patch size)
    batch_size: int  # windows per call
    uses_seeds: bool = False  # True when forecast() draws random numbers (needs a seed per window)
    # True when forecast() runs its windows as one batch through a network: rolling.py then pads every
    # call to batch_size windows, because BLAS kernels (MKL on AVX-512, for one) round differently for
    # different batch shapes, and a window's features must not depend on how many windows came with it.
    fixed_batch_shape: bool = False

    @abstractmethod
    def forecast(
        self, contexts: np.ndarray, seeds: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """contexts float32 [n, L] with no NaN -> (mean [n, H], std [n, H]) of the next H prices."""

    def forecast_series(self, prices: np.ndarray, first_end: int) -> tuple[np.ndarray, ...] | None:
        """Optional shortcut over a whole NaN-free series: (last price [m], mean [m, H], std [m, H]) for the
        windows ending at first_end..T-1. None (the default) means rolling.py calls forecast() per batch."""
        return None

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Everything the numbers depend on: model id, weights hash, mode, dtype, device, versions.

        It is both the cache key (with context and horizon) and what a run's metadata records.
        """


def describe_error(exc: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message`, short enough for a one-line warning or UserError."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit] if lines else ''}".rstrip(": ")


# --- model weights ---------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HASHES: dict[tuple, str] = {}


def check_model_id(model_id: str, what: str, key: str) -> None:
    """UserError unless `model_id` is an existing folder or could be a hub id `owner/name` (no download)."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise UserError(
            f"{key} = {model_id!r}: expected a checkpoint folder (config.json + model.safetensors), "
            "got a file"
        )
    if not _HUB_ID.fullmatch(model_id):
        raise UserError(f"{key} = {model_id!r}: no such {what} checkpoint folder")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set to a true value: use the local hub cache only."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_weights(model_id: str, what: str, key: str) -> Path:
    """A local checkpoint folder for `model_id`: the folder itself, or a hub snapshot.

    A path that does not exist (and cannot be a hub id `owner/name`) is a UserError naming `key`;
    a hub id that cannot be fetched (offline, unknown) is BackendUnavailable, so the policy applies.
    A local folder never touches the hub, and with HF_HUB_OFFLINE set only the local hub cache is
    looked at (no network attempts and retries before failing).
    """
    check_model_id(model_id, what, key)
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors"],
                                      local_files_only=hub_offline()))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, gated: all mean "the weights are not here"
        raise BackendUnavailable(
            f"{key} = {model_id!r} is not a local folder and could not be fetched from the Hugging Face hub "
            f"({describe_error(exc, 160)})"
        ) from None


def weights_hash(folder: Path) -> str:
    """sha256[:16] over the weight files and config.json (the config shapes the model as much as the weights)."""
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in {".safetensors", ".bin", ".pt"} or p.name == "config.json")
    )
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (str(folder.resolve()), stamp)
    if key not in _HASHES:
        digest = hashlib.sha256()
        for p in files:
            digest.update(p.name.encode())
            with open(p, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        _HASHES[key] = digest.hexdigest()[:16]
    return _HASHES[key]


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of the libraries the numbers depend on (part of the cache key)."""
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


# --- backend choice and fallback policy -----------------------------------------------------------

_LOADED: dict[tuple, Backend | BackendUnavailable] = {}
_WARNED: set[str] = set()


def _load_key(data: DataConfig, requested: str) -> tuple:
    return (
        requested,
        data.toto_horizon,
        data.forecast_context_length,
        data.forecast_batch_size,
        data.toto_model_id,
        data.toto_device,
        data.toto_mode,
        data.toto_dtype,
        data.toto_num_samples,
        data.toto_samples_per_batch,
        data.chronos_model_id,
        data.chronos_device,
        os.environ.get("HFTRAIN_TOTO_ALLOW_CPU", ""),
    )


def _build(data: DataConfig, requested: str) -> Backend:
    if requested == "statistical":
        from hftraining.forecasting.statistical import StatisticalBackend

        return StatisticalBackend(data)
    if requested == "chronos":
        from hftraining.forecasting.chronos_backend import ChronosBackend

        return ChronosBackend(data)
    if requested == "toto":
        from hftraining.forecasting.toto_backend import TotoBackend

        return TotoBackend(data)
    raise UserError(
        f"data.forecast_backend = {requested!r}: forecast features need toto, chronos or statistical"
    )


def log_once(message: str, level: int = logging.WARNING) -> None:
    """Log a message the first time this process sees it (one per cause, not one per symbol)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.log(level, message)


def warn_once(message: str) -> None:
    log_once(message, logging.WARNING)


_AUTO: dict[tuple, tuple[str, str]] = {}


def choose_auto(data: DataConfig) -> tuple[str, str]:
    """What `forecast_backend: auto` runs here, and why: Toto where it can run (CUDA, toto-ts installed,
    data.toto_device on cuda), else the statistical forecaster. Said once per process in an info line."""
    import importlib.util

    import torch

    key = (data.toto_device, torch.cuda.is_available())
    if key not in _AUTO:
        if not torch.cuda.is_available():
            choice = ("statistical", "no CUDA device; Toto runs on CUDA only")
        elif not data.toto_device.startswith("cuda"):
            choice = ("statistical", f"data.toto_device is {data.toto_device!r}; Toto runs on CUDA only")
        elif importlib.util.find_spec("toto") is None:
            choice = ("statistical", "toto-ts is not installed (make setup-toto)")
        else:
            choice = ("toto", "a CUDA device and toto-ts are available")
        _AUTO[key] = choice
    backend, why = _AUTO[key]
    log_once(f"forecaster: {backend} (data.forecast_backend auto: {why})", logging.INFO)
    return backend, why


def load_backend(data: DataConfig) -> tuple[Backend, str | None]:
    """The backend to use and, when it is not the requested one, the reason. Loaded once per process.

    `auto` resolves to a concrete backend first (choose_auto); a fallback from that choice is treated
    like one from an explicit request.
    """
    requested = data.resolved_forecast_backend
    if requested == "auto":
        requested = choose_auto(data)[0]
    key = _load_key(data, requested)
    if key not in _LOADED:
        try:
            _LOADED[key] = _build(data, requested)
        except BackendUnavailable as exc:
            _LOADED[key] = exc
    loaded = _LOADED[key]
    if isinstance(loaded, Backend):
        return loaded, None
    reason = f"{requested} forecaster unavailable: {loaded}"
    if data.forecast_fallback == "error":
        raise UserError(
            f"{reason} (data.forecast_fallback=error; set it to statistical to fall back, "
            "or data.forecast_backend=statistical|none)"
        )
    warn_once(
        f"{reason}; using the statistical forecaster (random walk with drift) instead, "
        "and recording backend=statistical in the run metadata"
    )
    from hftraining.forecasting.statistical import StatisticalBackend

    return StatisticalBackend(data), reason


def clear_loaded() -> None:
    """Forget loaded models and warnings already given (tests; a long-lived process after a config change)."""
    _LOADED.clear()
    _WARNED.clear()
    _AUTO.clear()

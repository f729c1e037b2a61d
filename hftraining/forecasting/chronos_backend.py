"""Chronos-Bolt and Chronos-2 forecasts (amazon/chronos-forecasting), batched and deterministic.

Both models return quantiles, not moments, so the moments are derived here:
* Bolt: 0.1/0.5/0.9 quantiles; mean ~ median (what the library calls "mean" is the median),
  std ~ (q90 - q10) / 2.5631, the 10-90 width of a normal distribution.
* Chronos-2: its 21 quantiles as a discrete distribution with trapezoid masses
  w_i = (q_{i+1} - q_{i-1}) / 2 (q_0 = 0, q_{n+1} = 1); mean = sum w x, std = sqrt(sum w (x - mean)^2).
  `cross_learning` stays False: with True, windows in one batch attend to each other, and rolling
  windows of one symbol would see the future.
fp32 on CPU (bf16 is emulated there and ~6x slower), bf16 on CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hftraining.config import DataConfig
from hftraining.errors import UserError
from hftraining.forecasting.base import (
    Backend,
    BackendUnavailable,
    describe_error,
    resolve_weights,
    versions,
    warn_once,
    weights_hash,
)

NORMAL_10_90_WIDTH = 2.5631  # Phi^-1(0.9) - Phi^-1(0.1)


def trapezoid_masses(levels: np.ndarray) -> np.ndarray:
    """Probability mass per quantile level: half the gap to each neighbour, 0 and 1 at the ends."""
    bounds = np.concatenate([[0.0], levels, [1.0]])
    mass = (bounds[2:] - bounds[:-2]) / 2
    return mass / mass.sum()


def _check_complete(model, folder: Path, key: str) -> None:
    """Refuse a checkpoint whose file lacks some of the model's parameters (they would stay random)."""
    import safetensors

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return  # .bin checkpoints: transformers reports missing keys itself
    stored: set[str] = set()
    for path in files:
        with safetensors.safe_open(str(path), "pt") as handle:
            stored.update(handle.keys())
    missing = sorted({name for name, _ in model.named_parameters()} - stored)
    if missing:
        raise UserError(
            f"{key}: checkpoint {folder} lacks {len(missing)} weight tensors (e.g. {missing[0]}); "
            "refusing to run with randomly initialised layers"
        )


class ChronosBackend(Backend):
    """A Chronos-Bolt or Chronos-2 pipeline loaded once from a local folder or a hub snapshot."""

    name = "chronos"

    def __init__(self, data: DataConfig):
        key = "data.chronos_model_id"
        try:
            import torch
            from chronos import BaseChronosPipeline, Chronos2Pipeline, ChronosBoltPipeline
        except ImportError as exc:
            raise BackendUnavailable(f"the chronos-forecasting package is not installed ({exc})") from None
        self.device = data.chronos_device
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(f"data.chronos_device = {self.device!r} but no CUDA device is available")
        self.model_id = data.chronos_model_id
        folder = resolve_weights(self.model_id, "Chronos", key)
        if not (folder / "config.json").is_file():
            raise UserError(
                f"{key} = {self.model_id!r}: {folder} has no config.json, so it is not a Chronos checkpoint"
            )
        self.torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        try:
            with torch.random.fork_rng(devices=[]):  # loading must not move the training seed
                pipe = BaseChronosPipeline.from_pretrained(
                    str(folder), device_map=self.device, dtype=self.torch_dtype
                )
        except Exception as exc:  # noqa: BLE001 - any load failure is one UserError line
            raise UserError(
                f"{key} = {self.model_id!r}: could not load a Chronos model from {folder} "
                f"({describe_error(exc)})"
            ) from None
        _check_complete(pipe.model, folder, key)
        if isinstance(pipe, Chronos2Pipeline):
            self.kind = "chronos-2"
            self.masses = trapezoid_masses(np.asarray(pipe.quantiles, dtype=np.float64))
        elif isinstance(pipe, ChronosBoltPipeline):
            self.kind = "chronos-bolt"
        else:
            raise UserError(
                f"{key} = {self.model_id!r}: {type(pipe).__name__} (sampling Chronos-T5) is not supported; "
                "use a Chronos-Bolt or Chronos-2 checkpoint"
            )
        self.pipe = pipe
        self.weights_hash = weights_hash(folder)
        self.horizon = data.toto_horizon
        self.batch_size = data.forecast_batch_size
        self.fixed_batch_shape = True
        self.context_length = data.forecast_context_length
        if self.context_length > pipe.model_context_length:
            warn_once(
                f"data.forecast_context_length={self.context_length} is longer than {self.model_id}'s context "
                f"({pipe.model_context_length}); using {pipe.model_context_length}"
            )
            self.context_length = pipe.model_context_length

    def forecast(
        self, contexts: np.ndarray, seeds: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        x = torch.from_numpy(np.array(contexts, dtype=np.float32))
        with torch.inference_mode():
            if self.kind == "chronos-bolt":
                q, _ = self.pipe.predict_quantiles(x, self.horizon, quantile_levels=[0.1, 0.5, 0.9])
                q = q.float().numpy()  # [n, H, 3]
                return q[..., 1], (q[..., 2] - q[..., 0]) / NORMAL_10_90_WIDTH
            out = self.pipe.predict(x[:, None, :], self.horizon, batch_size=len(x), cross_learning=False)
            q = torch.stack(out)[:, 0].float().numpy().astype(np.float64)  # [n, Q, H]
        w = self.masses[None, :, None]
        mean = (w * q).sum(axis=1)
        std = np.sqrt((w * (q - mean[:, None, :]) ** 2).sum(axis=1))
        return mean, std

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "weights_hash": self.weights_hash,
            "mode": self.kind,
            "device": "cuda" if self.device.startswith("cuda") else "cpu",
            "dtype": str(self.torch_dtype).removeprefix("torch."),
            "versions": versions("torch", "chronos-forecasting", "transformers"),
        }

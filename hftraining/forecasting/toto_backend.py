"""Toto (Datadog/Toto-Open-Base-1.0) forecasts: CUDA only, one window per batch row.

Toto needs a GPU to be practical (the 151M model costs ~20 ms per window analytically and ~0.3 s per
window with 16 samples on two CPU cores), so without CUDA it is "unavailable" and the fallback policy
in base.py applies. Tests opt in to CPU with the environment variable HFTRAIN_TOTO_ALLOW_CPU=1 (for
tiny models only; not a user setting).

Two modes (data.toto_mode):
* `analytic`: one forward pass per batch of windows; the per-step mean and std are read off the
  predicted Student-T mixture (exact, deterministic). Needs toto_horizon <= patch size (64).
* `samples`: toto_num_samples paths drawn by TotoForecaster.forecast in toto_samples_per_batch chunks;
  mean and std of the samples. Each window is its own call, seeded from (symbol, window end), so a
  window's samples do not depend on which other windows were computed with it.

Traps handled here: toto is imported lazily (it warns about xformers at import); the model is loaded
with Toto.load_from_checkpoint (from_pretrained is broken on huggingface_hub >= 1.0 and loads
non-strictly); contexts are a multiple of the patch size (the config value is rounded down, with a
warning); windows never share an id_mask (variates with one id attend to each other); inputs are
float32 prices without NaN (rolling.py forward-fills). bf16 on CUDA is autocast, so prices and the
causal scaler stay float32 and only the transformer runs in bf16.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import numpy as np

from hftraining.config import DataConfig
from hftraining.errors import UserError
from hftraining.forecasting.base import (
    Backend,
    BackendUnavailable,
    check_model_id,
    describe_error,
    resolve_weights,
    versions,
    warn_once,
    weights_hash,
)

ALLOW_CPU_ENV = "HFTRAIN_TOTO_ALLOW_CPU"  # "1" lets tests run tiny Toto models on CPU


class TotoBackend(Backend):
    name = "toto"

    def __init__(self, data: DataConfig):
        import torch

        key = "data.toto_model_id"
        self.model_id = data.toto_model_id
        check_model_id(self.model_id, "Toto", key)  # a typo is an error even where Toto cannot run

        # The device is checked before importing toto: that import (gluonts, lightning) takes
        # many seconds, wasted on a machine where Toto cannot run anyway.
        device = data.toto_device
        if device.startswith("cuda") and torch.cuda.is_available():
            self.device = device
        elif os.environ.get(ALLOW_CPU_ENV) == "1":
            self.device = "cpu"
        elif device.startswith("cuda"):
            raise BackendUnavailable("Toto requires CUDA and no CUDA device is available")
        else:
            raise BackendUnavailable(f"Toto requires CUDA (data.toto_device = {device!r})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from toto.data.util.dataset import MaskedTimeseries
                from toto.inference.forecaster import TotoForecaster
                from toto.model.toto import Toto
        except ImportError as exc:
            raise BackendUnavailable(
                f"the toto-ts package is not installed ({exc}); run `make setup-toto`"
            ) from None
        self._torch, self._masked, self._forecaster_cls = torch, MaskedTimeseries, TotoForecaster

        folder = resolve_weights(self.model_id, "Toto", key)
        if not (folder / "model.safetensors").is_file():
            raise UserError(f"{key} = {self.model_id!r}: {folder} has no model.safetensors")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.random.fork_rng(devices=[]):  # the throw-away init must not move the training seed
                    model = Toto.load_from_checkpoint(str(folder), map_location=self.device)  # strict=True
        except Exception as exc:  # noqa: BLE001 - any load failure is one UserError line
            raise UserError(
                f"{key} = {self.model_id!r}: could not load Toto from {folder} ({describe_error(exc)})"
            ) from None
        self.backbone = model.model.eval()
        self.weights_hash = weights_hash(folder)
        self.patch = int(self.backbone.patch_embed.stride)

        self.horizon = data.toto_horizon
        self.mode = data.toto_mode
        self.context_length = (data.forecast_context_length // self.patch) * self.patch
        if self.context_length == 0:
            raise UserError(
                f"data.forecast_context_length = {data.forecast_context_length} is shorter than Toto's "
                f"patch size {self.patch}"
            )
        if self.context_length != data.forecast_context_length:
            warn_once(
                f"data.forecast_context_length={data.forecast_context_length} is not a multiple of Toto's patch "
                f"size {self.patch}; using {self.context_length}"
            )
        if self.mode == "analytic" and self.horizon > self.patch:
            raise UserError(
                f"data.toto_mode = analytic needs data.toto_horizon <= {self.patch} (one patch); "
                f"got {self.horizon}: use toto_mode=samples"
            )
        self.num_samples = data.toto_num_samples
        self.samples_per_batch = min(data.toto_samples_per_batch, self.num_samples)
        if self.num_samples % self.samples_per_batch:
            raise UserError(
                f"data.toto_samples_per_batch ({data.toto_samples_per_batch}) must divide "
                f"data.toto_num_samples ({self.num_samples})"
            )
        self.bf16 = self.device.startswith("cuda") and data.toto_dtype == "bfloat16"
        self.uses_seeds = self.mode == "samples"
        self.fixed_batch_shape = self.mode == "analytic"  # samples mode runs each window on its own already
        # samples mode: one window per call, each call holds samples_per_batch sample paths
        self.batch_size = (
            data.forecast_batch_size
            if self.mode == "analytic"
            else max(1, data.forecast_batch_size // self.samples_per_batch)
        )

    def _autocast(self):
        if self.bf16:
            return self._torch.autocast(device_type="cuda", dtype=self._torch.bfloat16)
        return contextlib.nullcontext()

    def forecast(
        self, contexts: np.ndarray, seeds: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.array(contexts, dtype=np.float32)).to(self.device).unsqueeze(1)
        with torch.inference_mode(), self._autocast():
            if self.mode == "analytic":
                mean, std = self._analytic(x)
            else:
                mean, std = self._samples(x, seeds)
        return mean.float().cpu().numpy(), std.float().cpu().numpy()

    def _analytic(self, x):
        """Mean and std of the predicted mixture for the next patch, in one pass (notes §1.1)."""
        torch = self._torch
        base, loc, scale = self.backbone(
            inputs=x,
            input_padding_mask=torch.ones_like(x, dtype=torch.bool),
            id_mask=torch.zeros_like(x, dtype=torch.int),
            kv_cache=None,
            scaling_prefix_length=x.shape[-1],
        )
        dist = self._forecaster_cls.create_affine_transformed(base, loc, scale)
        mean = dist.mean[:, 0, -self.patch :]  # the last position predicts the next patch's P steps
        std = dist.stddev[:, 0, -self.patch :]
        return mean[:, : self.horizon], std[:, : self.horizon]

    def _samples(self, x, seeds):
        """num_samples paths per window via TotoForecaster.forecast, each window seeded on its own."""
        torch = self._torch
        if seeds is None or len(seeds) != len(x):
            raise ValueError("Toto samples mode needs one seed per window")
        forecaster = self._forecaster_cls(self.backbone)
        devices = [torch.device(self.device)] if self.device.startswith("cuda") else []
        means, stds = [], []
        for row, seed in zip(x, seeds, strict=True):
            series = row.unsqueeze(0)  # (1 window, 1 variate, L)
            inputs = self._masked(
                series=series,
                padding_mask=torch.ones_like(series, dtype=torch.bool),
                id_mask=torch.zeros_like(series, dtype=torch.int),
                timestamp_seconds=torch.zeros_like(series, dtype=torch.int),
                time_interval_seconds=torch.full((1, 1), 86400, dtype=torch.int, device=series.device),
                num_exogenous_variables=0,
            )
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(seed))
                fc = forecaster.forecast(
                    inputs,
                    prediction_length=self.horizon,
                    num_samples=self.num_samples,
                    samples_per_batch=self.samples_per_batch,
                )
            samples = fc.samples[0, 0].float()  # (H, S)
            means.append(samples.mean(-1))
            stds.append(samples.std(-1))
        return torch.stack(means), torch.stack(stds)

    def describe(self) -> dict[str, Any]:
        out = {
            "model_id": self.model_id,
            "weights_hash": self.weights_hash,
            "mode": self.mode,
            "device": "cuda" if self.device.startswith("cuda") else "cpu",
            "dtype": "bfloat16" if self.bf16 else "float32",
            "versions": versions("torch", "toto-ts", "gluonts"),
        }
        if self.mode == "samples":
            out.update(num_samples=self.num_samples, samples_per_batch=self.samples_per_batch)
        return out

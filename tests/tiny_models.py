"""Build tiny random-weight Toto / Chronos-Bolt / Chronos-2 checkpoints on disk, offline.

No weights can be downloaded in CI, so tests save a few-hundred-kB model in the same file layout a real
checkpoint has (config.json + model.safetensors) and pass the folder as `toto_model_id` /
`chronos_model_id`: everything after that goes through the same loading code real weights take.
Configs follow /work/shared/notes/forecasters.md §2.1-2.2. Each builder is seeded, so the same call
gives the same bytes (and the same weights hash).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TOTO_TINY = {
    "patch_size": 16,
    "stride": 16,
    "embed_dim": 64,
    "num_layers": 2,
    "num_heads": 4,
    "mlp_hidden_dim": 128,
    "dropout": 0.0,
    "spacewise_every_n_layers": 2,
    "spacewise_first": True,
    "scaler_cls": "<class 'model.scaler.CausalPatchStdMeanScaler'>",
    "output_distribution_classes": ["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
    "output_distribution_kwargs": {"k_components": 4},
    "use_memory_efficient_attention": False,
    "stabilize_with_global": True,
    "scale_factor_exponent": 10.0,
}

QUANTILES_9 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
QUANTILES_21 = [
    0.01,
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.45,
    0.5,
    0.55,
    0.6,
    0.65,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.95,
    0.99,
]  # the released Chronos-2 levels


def save_tiny_toto(folder: str | Path, seed: int = 0) -> Path:
    """A 152k-parameter Toto (patch 16) saved as model.safetensors + config.json."""
    import warnings

    import safetensors.torch

    with warnings.catch_warnings():  # toto warns about xformers and gluonts about orjson at import
        warnings.simplefilter("ignore")
        from toto.model.toto import Toto

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Toto(**TOTO_TINY)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(TOTO_TINY, indent=2))
    return folder


def save_tiny_chronos_bolt(folder: str | Path, seed: int = 0) -> Path:
    """A 250k-parameter Chronos-Bolt (patch 16, 9 quantiles) saved with save_pretrained."""
    import transformers
    from chronos.chronos_bolt import ChronosBoltModelForForecasting

    folder = Path(folder)
    cfg = transformers.T5Config(
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=1,
        num_heads=4,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        vocab_size=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        is_encoder_decoder=True,
        initializer_factor=0.05,
    )
    cfg.chronos_config = {
        "context_length": 2048,
        "prediction_length": 64,
        "input_patch_size": 16,
        "input_patch_stride": 16,
        "quantiles": QUANTILES_9,
        "use_reg_token": True,
    }
    cfg.chronos_pipeline_class = "ChronosBoltPipeline"
    cfg.architectures = ["ChronosBoltModelForForecasting"]
    torch.manual_seed(seed)
    ChronosBoltModelForForecasting(cfg).eval().save_pretrained(folder)
    return folder


def save_tiny_chronos2(folder: str | Path, seed: int = 0) -> Path:
    """A 190k-parameter Chronos-2 (patch 16, 21 quantiles) saved with save_pretrained."""
    from chronos.chronos2 import Chronos2Model
    from chronos.chronos2.config import Chronos2CoreConfig

    folder = Path(folder)
    cfg = Chronos2CoreConfig(
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        reg_token_id=1,
        chronos_config={
            "context_length": 8192,
            "input_patch_size": 16,
            "input_patch_stride": 16,
            "output_patch_size": 16,
            "max_output_patches": 64,
            "quantiles": QUANTILES_21,
            "use_reg_token": True,
            "use_arcsinh": True,
            "time_encoding_scale": 8192,
        },
    )
    cfg.chronos_pipeline_class = "Chronos2Pipeline"
    cfg.architectures = ["Chronos2Model"]
    torch.manual_seed(seed)
    Chronos2Model(cfg).eval().save_pretrained(folder)
    return folder


def save_all(root: str | Path) -> dict[str, Path]:
    """Save the three tiny models under root/{toto,bolt,chronos2}; returns their folders."""
    root = Path(root)
    return {
        "toto": save_tiny_toto(root / "toto"),
        "bolt": save_tiny_chronos_bolt(root / "bolt"),
        "chronos2": save_tiny_chronos2(root / "chronos2"),
    }


_BUILDERS = {"toto": save_tiny_toto, "bolt": save_tiny_chronos_bolt, "chronos2": save_tiny_chronos2}
_BUILT: dict[str, Path] = {}


def tiny_model_dir(kind: str) -> Path:
    """The folder of a tiny model ("toto", "bolt" or "chronos2"), built once per test process."""
    if kind not in _BUILT:
        import atexit
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp(prefix=f"hftrain-tiny-{kind}-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _BUILT[kind] = _BUILDERS[kind](root / kind)
    return _BUILT[kind]


def random_prices(n: int, seed: int = 0, vol: float = 0.01, start: float = 100.0):
    """A geometric random walk of n daily closes (float64), the test input for forecasters."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0003, vol, n)))

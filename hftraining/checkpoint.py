"""Run directories on disk: weights, resumable training state, config, scaler, metadata; and the one loader.

Everything is written atomically and read without unpickling: tensors live in safetensors files,
everything else in JSON or YAML (safe_load). `open_run` is the one way to open a trained run folder
(`--model`, `--base`): a folder that is not a run, a truncated file or a feature list that does not
match the data is refused with one line; `RunFiles.model()` rebuilds its model (the single-asset
transformer, or a portfolio run's policy) with its weights.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as serialize

from hftraining import atomic
from hftraining.config import Config, load_config, to_yaml
from hftraining.data.panel import Scaler
from hftraining.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
SCALER = "scaler.json"
FEATURES = "features.json"
METADATA = "metadata.json"
LAST = "last"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: Optional[dict[str, str]] = None) -> None:
    """One safetensors file, written atomically; serialised in memory so a full disk is a plain OSError."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic.write_bytes(path, serialize(flat, metadata=metadata))


def read_tensor_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header metadata) of a safetensors file; anything else (a pickle, a truncated file) is refused."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable safetensors checkpoint ({reason}); it may be truncated "
                        "or not a checkpoint (pickles are never loaded)") from None


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_tensor_file(path)[0]


def versions() -> dict[str, str]:
    import pandas

    from hftraining import __version__

    return {"hftraining": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pandas.__version__, "python": platform.python_version()}


def save_run_files(run_dir: Path, config: Config, scaler: Scaler, metadata: dict) -> None:
    atomic.write_text(run_dir / CONFIG, to_yaml(config))
    atomic.write_json(run_dir / SCALER, scaler.to_dict())
    atomic.write_json(run_dir / FEATURES, scaler.feature_names)
    atomic.write_json(run_dir / METADATA, metadata)


def update_metadata(run_dir: Path, **fields: Any) -> dict:
    meta = read_json(run_dir / METADATA)
    meta.update(fields)
    atomic.write_json(run_dir / METADATA, meta)
    return meta


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


@dataclass
class RunFiles:
    """A trained run loaded back: what `backtest`, `ensemble`, `paper`, `finetune` and `portfolio --base` start from."""

    path: Path
    config: Config
    scaler: Scaler
    metadata: dict
    weights: dict[str, torch.Tensor]

    def model(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The run's model holding its best weights, in eval mode, on `device` (strict load, one-line errors)."""
        portfolio = self.metadata.get("kind") == "portfolio"
        n_assets = len(self.metadata.get("symbols") or self.scaler.symbols) if portfolio else None
        return rebuild_model(self.config, len(self.scaler.feature_names), self.weights, self.path / WEIGHTS, device,
                             n_assets)


def rebuild_model(config: Config, n_features: int, weights: dict[str, torch.Tensor], where: Path,
                  device: torch.device | str = "cpu", n_assets: Optional[int] = None) -> torch.nn.Module:
    """The model a config describes (a PortfolioPolicy over `n_assets`, else an AllocationTransformer) holding
    `weights`, in eval mode, on `device`."""
    if n_assets is not None:
        from hftraining.portfolio_policy import build_policy

        model = build_policy(n_features, n_assets, config)
    else:
        from hftraining.model import build_model

        model = build_model(n_features, config.data.context_length, config.data.horizon, config.model)
    load_weights(model, weights, where)
    return model.to(device).eval()


def open_run(path: str | Path, weights: str = WEIGHTS, flag: str = "--model", what: str = "a run folder",
             example: str = "runs/models/...") -> RunFiles:
    """Open and check a trained run folder (or the run of a model.safetensors path); anything else is one line.

    `flag`, `what` and `example` word the refusal for the option that named the folder (`--base` asks
    for a trained base run, like runs/models/base/<run>).
    """
    run_dir = Path(path).expanduser()
    if run_dir.is_file() and run_dir.name == WEIGHTS:
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise UserError(f"{flag} {run_dir}: no such folder; pass a run folder like {example}")
    missing = [name for name in (CONFIG, SCALER, METADATA, weights) if not (run_dir / name).is_file()]
    if missing:
        raise UserError(f"{flag} {run_dir}: not {what} (missing {', '.join(missing)}); "
                        f"pass a folder like {example}")
    config = load_config(run_dir / CONFIG)
    scaler = Scaler.from_dict(read_json(run_dir / SCALER))
    metadata = read_json(run_dir / METADATA)
    return RunFiles(run_dir, config, scaler, metadata, load_tensors(run_dir / weights))


def open_base(path: str | Path) -> RunFiles:
    """A base run named by `--base` (its folder or its model.safetensors)."""
    return open_run(path, flag="--base", what="a trained run folder", example="runs/models/base/<run>")


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Strict load: a shape or key mismatch is one line naming the first difference."""
    expected = model.state_dict()
    for name, default in (("output_scale", torch.ones_like), ("holds_prior", torch.zeros_like)):
        if name in expected and name not in weights:      # saved before calibration / the prior existed
            weights = {**weights, name: default(expected[name])}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise UserError(f"{where}: weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for name, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise UserError(f"{where}: weight {name} has shape {tuple(tensor.shape)}, the model needs "
                            f"{tuple(expected[name].shape)} (different config or feature list)")
    model.load_state_dict(weights, strict=True)


# --- resumable training state -------------------------------------------------------------------

def save_training_state(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        generator: torch.Generator, state: dict) -> None:
    """Everything needed to continue bit-identically: weights, optimizer moments, RNG states, counters."""
    last = run_dir / LAST
    last.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    groups = opt_state["param_groups"]
    for param_id, param_state in opt_state["state"].items():
        for key, value in param_state.items():
            tensors[f"optim.{param_id}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.generator"] = generator.get_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    record = {**state, "param_groups": groups}
    # The counters travel inside the tensor file's header: one atomic rename commits the whole state,
    # so a kill between two writes can never pair step-N tensors with step-M counters.
    save_tensors(last / "state.safetensors", tensors, metadata={"state": json.dumps(record, default=str)})
    atomic.write_json(last / "state.json", record)       # the same record, readable by people


def load_training_state(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        generator: torch.Generator) -> dict:
    last = run_dir / LAST
    if not (last / "state.json").is_file() or not (last / "state.safetensors").is_file():
        raise UserError(f"--resume {run_dir}: no resumable checkpoint in {last}")
    tensors, header = read_tensor_file(last / "state.safetensors")
    try:
        state = json.loads(header["state"]) if "state" in header else read_json(last / "state.json")
    except json.JSONDecodeError as exc:
        raise UserError(f"{last / 'state.safetensors'}: unreadable training state ({exc})") from None
    needed = [k for k in ("rng.torch", "rng.generator") if k not in tensors] + \
        [k for k in ("step", "param_groups") if k not in state]
    if needed:
        raise UserError(f"--resume {run_dir}: {last} is not a training state (missing {', '.join(needed)})")
    load_weights(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, last)
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, name = key.split(".", 2)
            opt_state.setdefault(int(param_id), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    cuda_states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    return state

"""Data-parallel training over processes started by torchrun: one rank per GPU (or per CPU process).

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous; `session` joins the process group
(nccl on CUDA, gloo on CPU). Every rank draws the same global batch from the seeded generator and
trains on its own slice, and DDP averages the gradients; the objective is a mean of per-window
losses, so N ranks with batch B follow the trajectory of one process with batch N*B. Rank 0 alone
writes run folders, checkpoints, TensorBoard and reports; the other ranks agree with it through
`broadcast` and `on_main`. Without torchrun (WORLD_SIZE unset or 1) every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from hftraining.errors import UserError

log = logging.getLogger("hftraining")
T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """This process's place in the job; the default is the plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched() -> bool:
    """True in a process that torchrun started as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def context() -> Context:
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Context()


def require_session(command: str = "this command") -> Context:
    """The trainer's guard: under torchrun, only code that joined the group may train (else N duplicate runs)."""
    if launched() and not (dist.is_available() and dist.is_initialized()):
        raise UserError(f"{command} does not run under torchrun/--nproc yet; only `hftrain single`, `base`, "
                        "`finetune` and `portfolio` do (run it in one process)")
    return context()


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[Context]:
    """Join torchrun's process group for the duration of a job (and leave it); a no-op without torchrun.

    On CUDA each rank binds to its local GPU (LOCAL_RANK) and uses nccl; on CPU it uses gloo.
    """
    if not launched() or dist.is_initialized():
        yield context()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"rank with LOCAL_RANK={local_rank} has no GPU: this node has "
                            f"{torch.cuda.device_count()}; lower --nproc / --nproc_per_node")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ctx = context()
    if not ctx.is_main:                 # one voice: the other ranks only report problems
        logging.getLogger("hftraining").setLevel(logging.WARNING)
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device, ctx: Context) -> torch.device:
    """This rank's device: its local GPU under torchrun, else `device` unchanged."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def broadcast(obj: T) -> T:
    """Rank 0's value of a picklable object, on every rank."""
    if not context().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only (claim a run folder, write files) and hand its result to every rank.

    A UserError on rank 0 is raised on every rank, so no rank waits forever for a peer that stopped.
    """
    ctx = context()
    if not ctx.enabled:
        return fn()
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except UserError as exc:
            error = str(exc)
    result, error = broadcast((result, error))
    if error is not None:
        raise UserError(error)
    return result


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 first (it fills the data and forecast caches), then on the other ranks (cache hits)."""
    ctx = context()
    if not ctx.enabled:
        return fn()
    if ctx.is_main:
        try:
            result = fn()
        except UserError as exc:
            broadcast(str(exc))
            raise
        broadcast(None)
        return result
    error = broadcast(None)
    if error is not None:
        raise UserError(error)
    return fn()


def agree(value: str, what: str) -> None:
    """Stop every rank with one line when some rank's `value` (a data fingerprint, say) differs from rank 0's.

    Ranks that trained on different bars would average gradients of different problems, silently.
    """
    ctx = context()
    if not ctx.enabled:
        return
    values: list = [None] * ctx.world_size
    dist.all_gather_object(values, value)
    differ = [rank for rank, v in enumerate(values) if v != values[0]]
    if differ:
        raise UserError(f"rank{'s' if len(differ) > 1 else ''} {', '.join(map(str, differ))} built different {what} "
                        "than rank 0: give every node the same data (one shared --out, or the same --data-dir and "
                        "a forecast cache filled once and copied)")


def wrap(model: torch.nn.Module, device: torch.device, ctx: Context,
         find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around `model` when there are several ranks, else `model` itself.

    `find_unused_parameters`: the model holds parameters its forward never uses (a portfolio policy's encoder
    heads), which DDP must not wait for.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


def accumulating(module: torch.nn.Module, last_micro_batch: bool):
    """No gradient all-reduce on the micro-batches before the last one of an accumulated step."""
    if last_micro_batch or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over ranks (the logged training loss then covers the global batch)."""
    if not context().enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    """1.0 on every rank if `flag` (0/1 float) is 1 on any rank; stays on the device (no host sync)."""
    if context().enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's weights and buffers into `module` on every rank (the selected best checkpoint)."""
    if not context().enabled:
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


# --- re-executing `hftrain ... --nproc N` under torchrun ------------------------------------------

def strip_nproc(argv: list[str]) -> list[str]:
    """argv without `--nproc N` / `--nproc=N` (the relaunched ranks must not relaunch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_command(argv: list[str], nproc: int) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc_per_node N -m hftraining <argv>` (a free local port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "hftraining", *strip_nproc(argv)]


def relaunch(argv: list[str], nproc: int, device: str = "auto") -> int:
    """Run this same command line as `nproc` ranks on this machine; returns torchrun's exit code."""
    if nproc < 1:
        raise UserError(f"--nproc {nproc}: needs at least 1 process")
    if launched():
        raise UserError("--nproc: already running under torchrun; drop --nproc (torchrun sets the ranks)")
    if device in ("auto", "cuda") and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc}: this machine has {torch.cuda.device_count()} GPUs")
    command = torchrun_command(argv, nproc)
    log.info("launching %d ranks: %s", nproc, " ".join(command))
    return subprocess.run(command, check=False).returncode


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process (readable after the session has ended)."""
    return int(os.environ.get("RANK", "0")) == 0

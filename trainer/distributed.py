"""Data-parallel training under torchrun: the few calls the loop makes, each a no-op in one process.

torchrun (`python -m torch.distributed.run`) starts one process per GPU (or per CPU worker) and sets
RANK, WORLD_SIZE and LOCAL_RANK. `setup` sees them, joins the process group (NCCL for CUDA tensors,
gloo for CPU ones) and pins the process to cuda:LOCAL_RANK. From there:

- every rank draws the same global permutation (same seed, same generator) and keeps its contiguous
  share of each global batch (`shard`); DDP averages the gradients, so with a per-rank mean loss the
  update equals the single-process update on the global batch (BatchNorm excepted: its batch
  statistics are per rank). A class-weighted mean sum_i w_i l_i / sum_i w_i is not a per-rank mean:
  each rank divides its own sum by the weight sum of all ranks over the world size
  (`mean_divisor`), so that DDP's average of the ranks' gradients is the global weighted mean's;
- the per-class sums a step or an evaluation accumulates on the device are summed across ranks
  (`dist_sum_`, `reduce_stats_`) before they leave the device; per-sample rows are gathered
  (`dist_gather`), never summed;
- only rank 0 writes (`rank_sink`): the store gets one run, not one per rank.

Every collective here is called by all ranks at the same point of the loop, so the loop must decide
*when* to call them from values that agree across ranks (step counts, reduced sums), never from a
rank's own clock.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import torch
import torch.distributed as dist

from trainer.data import DataError
from trainer.sink import NullSink, Sink

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # what torchrun sets for every process it starts

_owned = False  # True when `setup` created the process group (and `teardown` must destroy it)


# ==== who am I ====================================================================================

def launched() -> bool:
    """True in a process started by torchrun (or any launcher that sets its variables)."""
    return all(k in os.environ for k in ENV)


def env_rank() -> int:
    """The launcher's RANK before any process group exists (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


# ==== process group ===============================================================================

def setup(device: torch.device) -> torch.device:
    """Under torchrun, join the process group and return this rank's device; else `device` as is.

    CUDA runs use NCCL on cuda:LOCAL_RANK; CPU runs use gloo. A group the caller made already is
    used as it is (and left for the caller to destroy).
    """
    global _owned
    if not (launched() or active()):
        return device
    if device.type == "cuda":
        device = _local_gpu()
    if not active():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        _owned = True
    return device


def _local_gpu() -> torch.device:
    n, lr = torch.cuda.device_count(), local_rank()
    # every rank of the node checks the node's process count, so all refuse alike (rank 0 speaks)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or lr + 1
    if max(per_node, lr + 1) > n:
        raise DataError(f"{max(per_node, lr + 1)} processes on this node but {n} GPU(s) visible: "
                        f"start at most {n} (torchrun --nproc-per-node={n}) or use --device cpu")
    torch.cuda.set_device(lr)
    return torch.device("cuda", lr)


def teardown() -> None:
    """Leave the process group if `setup` made it (a no-op otherwise)."""
    global _owned
    if _owned and active():
        dist.destroy_process_group()
    _owned = False


def leave(code: int) -> NoReturn:
    """End a torchrun worker process now, without Python's interpreter shutdown.

    Once a process has wrapped a model in DDP, `destroy_process_group` no longer ends gloo's worker
    threads (PyTorch keeps the group alive). A worker drops its last collective's tensors a moment
    after the caller has its result; if the interpreter has begun shutting down by then, releasing a
    tensor that Python knows waits for a GIL that will never come, the thread is unwound through C++
    that may not throw, and the process aborts: "terminate called without an active exception"
    (SIGABRT), seen on busy 2-core machines in about one two-rank run in fifty (core dump: gloo
    runLoop -> ~AsyncAllreduceWork -> THPVariable_dealloc -> take_gil -> pthread_exit). Skipping the
    shutdown skips the race; by the time the CLI calls this, the run's files are written, synced
    and closed, and only the standard streams need flushing.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken pipe: nothing more can be said on it
    os._exit(code)


def backend() -> str | None:
    return str(dist.get_backend()) if active() else None


# ==== model, batches, sink ========================================================================

def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP around the model when a process group exists (gradients averaged across ranks in
    backward); the model itself otherwise. The loop keeps the bare model for everything but the
    training forward pass (classifier rows, evaluation)."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def check_batch(batch_size: int) -> None:
    """The global batch must split into equal shares, or ranks would weigh samples unequally."""
    w = world_size()
    if batch_size % w:
        raise DataError(f"--batch-size {batch_size} does not split evenly over {w} processes: "
                        f"use a multiple of {w}")


def shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch (its length divides by the world size)."""
    w = world_size()
    if w == 1:
        return t
    k = len(t) // w
    return t[rank() * k:(rank() + 1) * k]


def eval_shard(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """This rank's contiguous slice of an evaluation set (any length; slices differ by <= 1)."""
    w = world_size()
    if w == 1:
        return ts
    n, r = len(ts[0]), rank()
    lo, hi = n * r // w, n * (r + 1) // w
    return tuple(t[lo:hi] for t in ts)


def rank_sink(sink: Sink) -> Sink:
    """Rank 0 writes the run; every other rank records into nothing."""
    return sink if is_main() else NullSink()


# ==== collectives on device tensors ===============================================================

def dist_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` across ranks in place, on its device (no host copy); a no-op without a group."""
    if not active():
        return t
    if t.is_contiguous():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    else:  # collectives need contiguous memory: reduce a copy, write it back
        c = t.contiguous()
        dist.all_reduce(c, op=dist.ReduceOp.SUM)
        t.copy_(c)
    return t


def mean_divisor(local: torch.Tensor) -> torch.Tensor:
    """What a rank divides its local sum_i w_i l_i by so that DDP's average over the ranks is the
    global weighted mean: the weight sum of all ranks over the world size. `local` is this rank's
    weight sum; it is reduced detached (weights depend on labels only) and on its device, with no
    host copy. One process (or a world of one) gets `local` back as it is, and no collective runs.
    """
    w = world_size()
    if w == 1:
        return local
    return dist_sum_(local.detach().clone()) / w


def reduce_stats_(buf: torch.Tensor, names: Sequence[str], same: Sequence[str] = ()) -> None:
    """Reduce a buffer whose last axis holds the statistics `names`: per-class sums are summed;
    the columns in `same` hold values every rank already shares (the norm of a DDP-averaged
    gradient) and keep that value."""
    if not active():
        return
    dist_sum_(buf)
    w = world_size()
    for name in same:
        buf[..., names.index(name)] /= w


def dist_gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (dim 0) in rank order; ranks may hold different numbers of
    rows. Per-sample records go this way: they are gathered, never summed."""
    if not active():
        return t
    w = world_size()
    n = torch.tensor([len(t)], device=t.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(w)]
    dist.all_gather(sizes, n)
    counts = [int(s) for s in sizes]  # one small host sync per gather, not per step
    pad = t.new_zeros((max(counts), *t.shape[1:]))
    pad[:len(t)] = t
    out = [torch.empty_like(pad) for _ in range(w)]
    dist.all_gather(out, pad.contiguous())
    return torch.cat([o[:c] for o, c in zip(out, counts)])

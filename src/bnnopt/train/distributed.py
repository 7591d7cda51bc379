"""Scale-out with PyTorch's own engine: ``torchrun`` + ``torch.distributed``.

bnnopt never launches processes or moves bytes itself. Under ``torchrun`` (which
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``)
:func:`init_from_env` joins the process group (NCCL for CUDA, gloo for CPU) with a
finite collective timeout; without those variables, or with ``WORLD_SIZE=1``,
everything stays a single process and nothing changes.

What each method family keeps identical on every rank, per step (docs/design.md):

=================  =================================================================
estimator          the model's gradients: DistributedDataParallel's all-reduce
loss-aware         both BLAQ passes run through the DDP model, so the gradient (and
                   from it D, alpha and the quantized weights) agree on every rank
learned gradient   DDP's all-reduce, plus :meth:`DistContext.average_` of the stored
                   g = dL/dQ (before it feeds the HGS and the meta-nets) and of the
                   meta-nets' and LRE's gradients (before their optimizer steps)
=================  =================================================================

Data: the global batch of size B (``--batch-size``) is split into ``world``
contiguous shards of B / world (:func:`shard_bounds`); each rank forwards its shard.
The loss each rank differentiates is ``sum over its shard / n_global * world``
(:func:`sharded_criterion`), so the averaged gradient equals the gradient of the
global batch's mean loss, also for a final batch that does not split evenly.

A final global batch of n < 2·world images is trained too: ranks 0..n mod world - 1
hold one image more than the others (:func:`shard_bounds`), so a rank may hold one
image or none. A rank with none contributes a loss of 0 with zero gradients to
every all-reduce (DDP's, :meth:`DistContext.average_` of the learned methods) and
zero sums to :class:`bnnopt.nn.sync_batchnorm.CPUSyncBatchNorm` (torch's
``SyncBatchNorm`` likewise accepts an empty shard); the sharded loss's scale
world / n_global already weights every image by 1 / n_global. So N processes train
on the same images as one process at every global batch size. Only a model with
a BatchNorm that normalises over its own rank's shard (no ``--sync-bn``) cannot
train a rank's single image: :func:`min_shard_images` then asks the loaders to drop
such a final batch on every rank (N processes differ from one process there anyway:
each rank normalises with its own shard's statistics), and the run records the
number of images dropped per epoch (``argv.json``: ``images_dropped_per_epoch``).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from bnnopt.collectives import all_reduce_mean_
from bnnopt.data.split import shard_bounds  # noqa: F401  (re-exported: the loop's sharding)

#: Seconds a collective may wait for a peer before the job fails (``--dist-timeout``).
DEFAULT_TIMEOUT_S = 300.0


@dataclass
class DistContext:
    """Who this process is in the job; ``world_size == 1`` is the plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops in a single process) -------------------------------------
    def average_(self, tensors: Sequence[Tensor | None]) -> None:
        """All-reduce the mean of ``tensors`` in place (one flat buffer per dtype/device)."""
        if not self.enabled:
            return
        all_reduce_mean_(tensors, self.world_size)

    def sum_(self, tensor: Tensor) -> Tensor:
        """All-reduce the sum of ``tensor`` in place and return it."""
        if self.enabled:
            torch.distributed.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = DistContext()
_current: DistContext = SINGLE


def current() -> DistContext:
    """The context :func:`init_from_env` joined (the Trainer's default), else :data:`SINGLE`."""
    return _current


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"invalid WORLD_SIZE {os.environ['WORLD_SIZE']!r}; expected an "
                         "integer >= 1 (set by torchrun)") from None


def init_from_env(device: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group that torchrun describes in the environment.

    Returns :data:`SINGLE` when not launched by torchrun (or with one process).
    ``device``: "cuda" or "auto" with CUDA available -> NCCL and ``cuda:LOCAL_RANK``;
    otherwise gloo on the CPU. Idempotent: a process group already initialised (e.g. by
    the user's own script) is reused.
    """
    global _current
    world = env_world_size()
    if world <= 1:
        return SINGLE
    if not timeout_s > 0:
        raise ValueError(f"invalid dist timeout {timeout_s!r}; must be > 0 seconds")
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    else:
        backend = dist.get_backend()
    _current = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                           local_rank=local_rank, backend=backend)
    return _current


def shutdown(ctx: DistContext) -> None:
    """Leave the process group after a finished run, in an order that is safe at exit.

    1. A barrier: every rank has finished its last collective (and rank 0 its writes)
       before any rank closes its connections, so no peer sees a closed pair mid-use.
    2. A garbage collection: objects that still refer to the group (a
       DistributedDataParallel reducer and its last bucket works, kept alive by
       reference cycles) are freed now, while the interpreter is fully alive. Left to
       interpreter finalisation, their release can run after the group's worker threads
       were torn down, and the C++ runtime aborts the process (``terminate called
       without an active exception``, SIGABRT) although the run had finished.
    3. ``destroy_process_group``, which then drops the last reference and joins the
       backend's threads.

    Callers drop their own references first (:meth:`bnnopt.train.Trainer.release_distributed`).
    """
    global _current
    if ctx.enabled and torch.distributed.is_initialized():
        import gc

        torch.distributed.barrier()
        gc.collect()
        torch.distributed.destroy_process_group()
        gc.collect()
    _current = SINGLE


def check_global_batch(batch_size: int, world_size: int) -> int:
    """The per-rank batch; refuses a global batch that does not split evenly."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        raise ValueError(f"invalid --batch-size {batch_size}: the global batch must divide by the "
                         f"{world_size} processes (e.g. {lower or world_size} or "
                         f"{lower + world_size})")
    return batch_size // world_size


def min_shard_images(model: torch.nn.Module, world_size: int) -> int:
    """Fewest images a rank may receive from a final, partial global batch
    (``Sharded.shard(..., min_shard=...)``): 2 when ``world_size > 1`` and ``model``
    has a BatchNorm that is not synchronised over the ranks (it cannot train on a
    single image), else 0 (every batch is trained, ranks may hold no image)."""
    if world_size <= 1:
        return 0
    from bnnopt.nn.sync_batchnorm import CPUSyncBatchNorm

    local = (m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and not isinstance(m, (torch.nn.SyncBatchNorm, CPUSyncBatchNorm)))
    return 2 if any(True for _ in local) else 0


def sharded_criterion(n_global: int, world_size: int) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy whose gradient, averaged over ranks, is that of the global mean.

    L_r = (world / n_global) * sum_{i in shard r} CE_i, so mean_r dL_r = d(mean_i CE_i).
    """
    scale = world_size / n_global

    def criterion(logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits, y, reduction="sum") * scale

    return criterion


def describe_failure(err: BaseException, ctx: DistContext) -> str:
    """One line for a collective that failed (usually: another rank died)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (f"rank {ctx.rank}/{ctx.world_size}: a collective failed ({text}); another rank "
            "has probably died: torchrun's summary names it. Resume with the same torchrun "
            "command and --resume RUN_DIR")

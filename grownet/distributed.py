"""Data-parallel search: several processes train one net with DistributedDataParallel.

Launch with ``torchrun --nproc_per_node N -m grownet search ...`` (any torchrun setup,
several machines included), or ``grownet search --ddp N`` to start N local processes.
NCCL is used on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU.

How the ranks stay one run:

- every rank builds the same loaders from the shared seed and takes a disjoint contiguous
  share of every batch (:class:`ShardedLoader`), so the ranks together see exactly the
  single-process batches; ``data.batch_size`` must be divisible by the number of ranks so
  the all-reduced (averaged) gradient is the gradient of the whole batch;
- gradients are all-reduced before the optimizer step, so DessiLBI's W, V and Γ, and the
  momentum buffers, stay identical on every rank;
- BatchNorm buffers are taken from rank 0 before every evaluation; validation and test
  passes are sharded and their sums all-reduced; a non-finite loss on any rank stops the
  epoch on every rank;
- decisions are taken on rank 0 and broadcast (:meth:`DistContext.share`): the growth plan
  (the time budget uses rank 0's clock), checkpoints to resume from, the configuration;
- only rank 0 writes the run folder (the others use a :class:`FollowerFolder`), holds its
  lock, and writes the log file; a resumed run is read by rank 0 and broadcast.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch import nn

from .errors import ConfigError, RunError, UsageError
from .runfolder import RunFolder

__all__ = [
    "DistContext",
    "LOCAL",
    "ShardedLoader",
    "FollowerFolder",
    "launched_by_torchrun",
    "init_distributed",
    "launch",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: Environment variables torchrun sets for every process.
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel group (``world_size == 1``: single process,
    every method a no-op).

    Attributes:
        rank: global rank (0 writes files). world_size: number of processes.
        local_rank: rank on this machine (its CUDA device). backend: "nccl", "gloo" or "".
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def share(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on rank 0 only and give its result to every rank. When it raises an
        Exception, every rank raises that same exception (so no rank waits forever)."""
        if not self.active:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank below
                box[0] = ("error", exc)
        torch.distributed.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def sync(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place; return it (the ``sync`` hook of
        :func:`grownet.train.train_epoch` / :func:`~grownet.train.evaluate`)."""
        if self.active:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    @property
    def sync_fn(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """:meth:`sync` for a data-parallel group, else None (the loops skip it)."""
        return self.sync if self.active else None

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (which broadcasts rank 0's parameters and
        buffers now and all-reduces gradients in every backward), or ``model`` itself."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)

    def sync_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics)."""
        if self.active:
            with torch.no_grad():
                for buf in model.buffers():
                    torch.distributed.broadcast(buf, src=0)

    def shard_data(self, data: Any) -> Any:
        """A copy of search's loaders with train/val/test replaced by this rank's shards.

        Raises:
            ConfigError: when the training batch size is not divisible by the world size.
        """
        if not self.active:
            return data
        batch = getattr(data.train, "batch_size", None)
        if isinstance(batch, int) and batch % self.world_size:
            raise ConfigError(f"data.batch_size: {batch} is not divisible by the {self.world_size} data-parallel "
                              f"processes; use a multiple of {self.world_size}")
        import dataclasses

        return dataclasses.replace(data, **{k: ShardedLoader(getattr(data, k), self.rank, self.world_size)
                                            for k in ("train", "val", "test")})

    def run_folder(self, run: RunFolder) -> RunFolder:
        """``run`` on rank 0; a :class:`FollowerFolder` (no writes) elsewhere."""
        return run if self.is_main else FollowerFolder(run.path)

    def close(self, *, wait: bool = False) -> None:
        """Leave the process group (if one was joined); ``wait``: first wait until every rank
        gets here (a run that ended well everywhere: no rank tears down its connections while
        another still uses them, and no rank exits while rank 0 writes the run's last files)."""
        if self.active and torch.distributed.is_initialized():
            if wait:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()


#: The single-process context.
LOCAL = DistContext()


class ShardedLoader:
    """Rank ``rank``'s share of every batch of ``loader``: the ``rank``-th of ``world_size``
    contiguous near-equal slices (``Tensor.tensor_split``). Every rank iterates the same
    global batches (same seed and epoch), so the shards are disjoint and together are the
    batch. ``len``, ``epoch``, ``set_epoch`` and the other attributes are the loader's."""

    def __init__(self, loader: Any, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise UsageError(f"rank {rank} is not in [0, {world_size})")
        self.loader, self.rank, self.world_size = loader, rank, world_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x.tensor_split(self.world_size)[self.rank], y.tensor_split(self.world_size)[self.rank]

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not yet set (unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


class FollowerFolder(RunFolder):
    """The run folder as seen by ranks other than 0: same paths, every write skipped,
    checkpoints come from rank 0 (through :meth:`DistContext.share`)."""

    def write_json(self, path: Any, obj: Any) -> None:
        return None

    def write_history(self, rows: Any) -> None:
        return None

    def save_checkpoint(self, payload: Any) -> Any:
        return None

    def load_checkpoint(self) -> dict[str, Any]:  # pragma: no cover - never called through share()
        raise RuntimeError("bug: only rank 0 reads checkpoints; use DistContext.share(run.load_checkpoint)")


# ---- process groups -----------------------------------------------------------------------------


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or :func:`launch`) with more than one
    process."""
    return all(k in os.environ for k in _TORCHRUN_ENV) and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto", *, timeout_s: float = 1800.0) -> tuple[DistContext, str]:
    """Join the process group torchrun described in the environment.

    Args:
        device: ``auto``, ``cpu`` or ``cuda``: ``auto`` uses CUDA when there is a GPU for
            every local rank. On CUDA each process takes ``cuda:LOCAL_RANK`` (NCCL);
            on the CPU the backend is gloo.
        timeout_s: seconds a collective may wait for the other ranks.

    Returns:
        ``(context, device)`` with the device string this rank should use.

    Raises:
        UsageError: not launched by torchrun / :func:`launch`, or CUDA asked for but missing.
    """
    if not launched_by_torchrun():
        raise UsageError("--ddp: start the processes with torchrun --nproc_per_node N -m grownet search ... "
                         "or with grownet search --ddp N")
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available() or torch.cuda.device_count() <= local:
            if device != "auto":
                raise UsageError(f"--device {device}: local rank {local} has no CUDA device "
                                 f"({torch.cuda.device_count()} visible); use fewer processes or --device cpu")
            backend, dev = "gloo", "cpu"
        else:
            torch.cuda.set_device(local)
            backend, dev = "nccl", f"cuda:{local}"
    elif device == "cpu" or device == "auto":
        backend, dev = "gloo", "cpu"
    else:
        raise UsageError(f"--device: unknown device {device!r}; use auto, cpu or cuda")
    if not torch.distributed.is_initialized():
        kwargs: dict[str, Any] = {}
        if backend == "nccl":
            kwargs["device_id"] = torch.device(dev)
        torch.distributed.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s),
                                             **kwargs)
    logger.debug("rank %d of %d (%s on %s)", rank, world, backend, dev)
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend), dev


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(local_rank: int, nproc: int, port: int, fn: Callable[..., Any], args: Sequence[Any]) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(nproc),
                       "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    result = fn(*args)
    if isinstance(result, int) and result != 0:
        raise SystemExit(result)


def launch(fn: Callable[..., Any], nproc: int, *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` new local processes set up as torchrun would set them
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free port); ``fn`` calls
    :func:`init_distributed`. ``fn`` must be importable (spawned processes re-import it).

    Raises:
        UsageError: ``nproc`` below 2.
        RuntimeError: when a process fails (after the others are stopped).
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 2:
        raise UsageError(f"--ddp: needs at least 2 processes, got {nproc!r}")
    import torch.multiprocessing as mp

    try:
        mp.start_processes(_entry, args=(nproc, _free_port(), fn, tuple(args)), nprocs=nproc, join=True,
                           start_method="spawn")
    except mp.ProcessExitedException as exc:
        raise RunError(f"data-parallel process {exc.error_index} exited with status {exc.exit_code}") from None

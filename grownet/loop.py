"""The one training loop: :func:`fit` trains one net for the epochs of a :class:`Phase`.

Every command's training is a configuration of it plus its own hooks:

- ``search``: one call per growing round (DessiLBI at a constant rate; the growth check runs
  in the hook of the round's last epoch), then one for the fine-tune (cosine rate, the best
  validation state kept); its last good state is its checkpoint on disk;
- ``baseline``: one call (the fine-tune's optimizer and cosine schedule over every epoch);
- ``ticket``: three calls (dense DessiLBI, the ticket's fine-tune, the fresh control).

An epoch: train (:func:`grownet.train.train_epoch`), evaluate on the validation loader, count
training FLOPs, append the history row (:data:`grownet.runfolder.HISTORY_COLUMNS`), keep the
best validation state if asked, call ``on_epoch_end(row)``, then commit the last good state.

One divergence policy for every command: a non-finite training loss restores the last good
state (:class:`LastGood`: model, optimizer, counters, RNGs, loader position) and retries the
epoch with the learning rate times ``run.retry_lr_factor``; the retries are counted over the
job and each is recorded in ``LoopState.events`` (``{"epoch", "event": "divergence", "phase",
"detail"}``, summary.json's ``events``). Past ``run.max_retries`` the job stops at its last good
state with :class:`~grownet.errors.DivergenceError`, after the last event is recorded.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from .cost import Cost
from .distributed import LOCAL, DistContext
from .errors import DivergenceError
from .job import rng_state, set_rng_state
from .progress import Reporter
from .train import EpochStats, evaluate, train_epoch

__all__ = ["Clock", "Divergence", "InMemory", "LastGood", "LoopState", "Phase", "Trainee", "cpu_state", "fit"]

logger = logging.getLogger(__name__)

#: (epoch index within the phase from 0, batch index within the epoch from 0) -> learning rate.
Schedule = Callable[[int, int], float]


@dataclass
class LoopState:
    """The loop's counters over one job (plain data: a search checkpoints them).

    Attributes:
        epoch: epochs finished (the history's ``epoch`` of the last row).
        train_flops: training FLOPs so far (forward + backward per sample x samples).
        lr_scale: product of the divergence retries' factors, applied to every rate.
        retries: divergence retries so far.
        best_val, best_epoch: best validation accuracy of a phase that keeps its best state,
            and its epoch (``-1.0`` and 0 before the first).
        history: the history rows. events: the incidents (divergence retries).
    """

    epoch: int = 0
    train_flops: int = 0
    lr_scale: float = 1.0
    retries: int = 0
    best_val: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Trainee:
    """What the loop trains. Hooks and restores may replace any field between epochs (growth
    gives a new model, optimizer and cost).

    Attributes:
        model: the net (evaluated, checkpointed, its best state copied).
        optimizer: the optimizer over ``model``'s parameters.
        cost: the net's :class:`~grownet.cost.Cost` (MACs, params, training FLOPs per sample).
        wrapped: what takes the training steps when it is not ``model`` itself
            (DistributedDataParallel around it).
        best: CPU copy of the best validation state (phases with ``keep_best``).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    cost: Cost
    wrapped: nn.Module | None = None
    best: dict[str, torch.Tensor] | None = None

    @property
    def trained(self) -> nn.Module:
        """The module the training steps run through."""
        return self.model if self.wrapped is None else self.wrapped


@dataclass(frozen=True)
class Phase:
    """The epochs one :func:`fit` call trains.

    Attributes:
        name: the history's ``phase`` (``"grow"``, ``"finetune"``, ``"control"``, ...).
        epochs: epochs of the phase (a call trains those from its ``start``).
        lr_at: the learning rate per (epoch in the phase, batch), before ``lr_scale``.
        label_smoothing: cross-entropy label smoothing.
        keep_best: keep the best validation state (``Trainee.best``, ``LoopState.best_*``).
        round: the history's ``round`` (a search's growing round; 0 or 1 elsewhere).
        label: what the log lines start with (default the name).
    """

    name: str
    epochs: int
    lr_at: Schedule
    label_smoothing: float = 0.0
    keep_best: bool = False
    round: int = 0
    label: str = ""


@dataclass(frozen=True)
class Divergence:
    """The divergence policy's settings: ``run.max_retries``, ``run.retry_lr_factor``, and the
    recipe keys the error message tells the user to lower."""

    max_retries: int
    factor: float
    lower: str = "optim.lr"

    @classmethod
    def from_recipe(cls, recipe: Any, *, lower: str) -> "Divergence":
        """The settings of ``recipe.run``; ``lower`` names the rate to lower in the message."""
        return cls(recipe.run.max_retries, recipe.run.retry_lr_factor, lower)


class LastGood(Protocol):
    """Where the loop's last good state is kept (a search: its checkpoints; else memory)."""

    def commit(self) -> None:
        """Keep the present state as the last good one (after every finished epoch)."""

    def restore(self) -> None:
        """Go back to the last committed state: model, optimizer, loop counters, RNGs and the
        training loader's epoch."""

    def where(self) -> str:
        """Where the last good state is, for the error message."""


class Clock:
    """Seconds since construction (a job's wall time)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s state dict (detached)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _cpu_copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Mapping):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return copy.deepcopy(value)


class InMemory:
    """The last good state kept in memory (controls and tickets): CPU copies of the model's
    and optimizer's state, the loop counters, the global RNGs and the loader's epoch.

    Args:
        trainee, state: what :func:`fit` trains and counts.
        loader: the training loader (``epoch`` / ``set_epoch``).
        device: the device whose RNG is kept besides the CPU's.
    """

    def __init__(self, trainee: Trainee, state: LoopState, loader: Any, device: torch.device) -> None:
        self.trainee, self.state, self.loader, self.device = trainee, state, loader, device
        self.commit()

    def commit(self) -> None:
        t = self.trainee
        self._saved = (cpu_state(t.model), _cpu_copy(t.optimizer.state_dict()), t.best, copy.deepcopy(self.state),
                       rng_state(self.device), self.loader.epoch)

    def restore(self) -> None:
        model, optimizer, best, state, rng, epoch = self._saved
        self.trainee.model.load_state_dict(model)
        self.trainee.optimizer.load_state_dict(_cpu_copy(optimizer))  # load_state_dict may alias what it is given
        self.trainee.best = best
        for f in fields(state):
            setattr(self.state, f.name, copy.deepcopy(getattr(state, f.name)))
        set_rng_state(rng, self.device)
        self.loader.set_epoch(epoch)

    def where(self) -> str:
        return f"it stopped at its last good state (epoch {self.state.epoch})"


def fit(
    trainee: Trainee,
    data: Any,
    state: LoopState,
    phase: Phase,
    *,
    last_good: LastGood,
    divergence: Divergence,
    clock: Callable[[], float],
    start: int = 0,
    reporter: Reporter | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    amp: torch.dtype | None = None,
    dist: DistContext = LOCAL,
) -> None:
    """Train ``trainee`` for epochs ``start .. phase.epochs - 1`` of ``phase``.

    Args:
        trainee: model, optimizer and cost (read afresh every epoch).
        data: ``data.train`` (training loader, ``len`` = batches) and ``data.val``.
        state: the job's counters; rows are appended to ``state.history``.
        phase: schedule, smoothing, whether to keep the best state, and the row's names.
        last_good: the divergence policy's store (see the module docstring).
        divergence: its settings.
        clock: the job's wall time in seconds (the rows' ``wall_time``).
        start: the first epoch of the phase to train (a resumed phase's epochs done).
        reporter: progress hooks: ``epoch_start``, ``batch`` and ``event`` are called here;
            ``epoch_end`` is the caller's (in ``on_epoch_end``, where its order suits it).
        on_epoch_end: called with each epoch's row, after the row is recorded and before the
            state is committed (history files, growth checks, progress).
        on_step: called as ``on_step(step_in_epoch, global_step)`` after every optimizer step:
            ``step_in_epoch`` counts this epoch's steps from 1, ``global_step`` the job's
            (``state.epoch`` finished epochs x batches per epoch + ``step_in_epoch``; a retried
            epoch counts its steps again from the same number). Keep it cheap; ``None`` costs
            nothing.
        amp: autocast dtype on CUDA (None: full precision).
        dist: the data-parallel context (statistics summed over ranks, rank 0's BatchNorm
            buffers before evaluation).

    Raises:
        DivergenceError: the loss stayed non-finite past ``divergence.max_retries`` retries.
    """
    reporter = reporter or Reporter()
    for e in range(start, phase.epochs):
        stats, lr_at = _train_epoch(trainee, data, state, phase, e, last_good=last_good, divergence=divergence,
                                    reporter=reporter, on_step=on_step, amp=amp, dist=dist)
        dist.sync_buffers(trainee.model)  # every rank evaluates (and keeps) rank 0's BatchNorm statistics
        val = evaluate(trainee.model, data.val, amp=amp, sync=dist.sync_fn)
        c = trainee.cost
        state.epoch += 1
        state.train_flops += c.train_flops_per_sample * stats.samples
        row = {
            "round": phase.round, "epoch": state.epoch, "phase": phase.name, "lr": lr_at(len(data.train) - 1),
            "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val.loss, "val_acc": val.acc,
            "macs": c.macs, "params": c.params, "train_flops": state.train_flops, "wall_time": round(clock(), 3),
        }
        state.history.append(row)
        if phase.keep_best and val.acc > state.best_val:
            state.best_val, state.best_epoch = val.acc, state.epoch
            trainee.best = cpu_state(trainee.model)
        logger.info("%s epoch %d (%s %d/%d): lr %.4g loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s",
                    phase.label or phase.name, state.epoch, phase.name, e + 1, phase.epochs, row["lr"], stats.loss,
                    stats.acc, val.loss, val.acc, stats.seconds)
        if on_epoch_end is not None:
            on_epoch_end(row)
        last_good.commit()


def _train_epoch(trainee: Trainee, data: Any, state: LoopState, phase: Phase, e: int, *, last_good: LastGood,
                 divergence: Divergence, reporter: Reporter, on_step: Callable[[int, int], None] | None,
                 amp: torch.dtype | None, dist: DistContext) -> tuple[EpochStats, Callable[[int], float]]:
    """One epoch's training pass, retried at a lower rate while its loss is non-finite;
    returns its statistics and the rate per batch it used."""
    batches = len(data.train)
    while True:
        reporter.epoch_start(phase=phase.name, round=phase.round, epoch=state.epoch + 1, index=e + 1,
                             total=phase.epochs, batches=batches)
        scale = state.lr_scale

        def lr_at(i: int) -> float:
            return phase.lr_at(e, i) * scale

        progress = _progress(reporter, on_step, state, batches)
        stats = train_epoch(trainee.trained, data.train, trainee.optimizer, lr_at=lr_at, amp=amp,
                            label_smoothing=phase.label_smoothing, progress=progress, sync=dist.sync_fn)
        if stats.finite:
            return stats, lr_at
        _diverged(state, stats, phase.name, last_good=last_good, divergence=divergence, reporter=reporter)


def _progress(reporter: Reporter, on_step: Callable[[int, int], None] | None, state: LoopState,
              batches: int) -> Callable[[int, int], None]:
    """The per-step callback of :func:`train_epoch`: the reporter's bar, then ``on_step``."""
    if on_step is None:
        return reporter.batch
    first = state.epoch * batches

    def step(done: int, total: int) -> None:
        reporter.batch(done, total)
        on_step(done, first + done)

    return step


def _diverged(state: LoopState, stats: EpochStats, phase: str, *, last_good: LastGood, divergence: Divergence,
              reporter: Reporter) -> None:
    """The divergence policy: record the event, restore the last good state, and lower the
    rate, or give up (:class:`DivergenceError`) past ``divergence.max_retries``."""
    retries = state.retries + 1
    scale = state.lr_scale * divergence.factor
    what = f"non-finite training loss after {stats.samples} samples"
    if retries > divergence.max_retries:
        detail = f"{what}; gave up after {divergence.max_retries} retries"
    else:
        detail = f"{what}; restored the last good state (epoch {state.epoch}) and retrying with lr x {scale:g}"
    events = [*state.events, {"epoch": state.epoch + 1, "event": "divergence", "phase": phase, "detail": detail}]
    logger.warning("epoch %d: %s", state.epoch + 1, detail)
    reporter.event(f"epoch {state.epoch + 1}: {detail}")
    last_good.restore()
    state.events, state.retries = events, retries
    if retries > divergence.max_retries:
        last_good.commit()  # the events stay with the last good state
        raise DivergenceError(
            f"training diverged: the loss was non-finite {retries} times (run.max_retries {divergence.max_retries}); "
            f"{last_good.where()}; lower {divergence.lower} and start again"
        )
    state.lr_scale = scale

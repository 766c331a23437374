"""The main job: grow a compact net with DessiLBI, fine-tune it, and write a run folder.

The loop (METHOD.md §2 with its defects fixed):

1. build the seed net (``model.seed_arch``);
2. train a round of ``grow.local_epochs`` epochs with DessiLBI at a constant learning rate;
3. read every layer's filter activity and decide the growth (:func:`grownet.policy.plan_growth`:
   widen saturated layers, deepen twice-saturated stages, clip to the MACs/params budget,
   hold at ``budget.max_rounds`` or when the time budget would be passed); record it;
4. grow without changing the function (:func:`grownet.grow.apply`), carrying the optimizer
   state, and go to 2; when nothing grows, go to 5;
5. fine-tune ``finetune.epochs`` epochs with a cosine-decayed learning rate, keep the epoch
   with the best validation accuracy, and evaluate the test set once, at the end.

Every epoch ends with a checkpoint (model, optimizer incl. V/Γ/momentum, architecture, loop
state, history, RNG and loader state), so a run killed at any point continues with
``resume=True`` and, on the CPU with the same seed, ends with the same architecture and
metrics. A non-finite loss restores the last checkpoint and retries with a lower learning
rate (``run.max_retries`` times over the run, then :class:`~grownet.errors.DivergenceError`).

The time budget (``budget.time_budget``, seconds for the whole run) only stops growth: a new
round starts only if the elapsed time plus the estimated round plus the estimated fine-tune
(both from the last round's seconds per epoch, scaled by the grown net's MACs) fit. The
fine-tune itself is never cut.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .arch import Architecture
from .cost import cost
from .distributed import LOCAL, DistContext, FollowerFolder
from .errors import ConfigError, DivergenceError, GrownetError, RunError, UsageError
from .grow import apply as grow_apply
from .job import (FILE_ONLY, log_to_file, make_data, make_dessilbi, provenance, rng_scope, rng_state, seed_all, seed_arch,
                  seed_arch_file, set_rng_state)
from .models import build_model
from .optim import filter_activity
from .policy import GrowthPlan, layer_activity, plan_growth, stage_taus
from .recipe import Recipe, resolve_recipe
from .runfolder import RunFolder, make_folder, remove_created
from .seeds import PRESETS
from .signal import ImportanceMeter
from .train import EpochStats, amp_dtype, cosine_lr, evaluate, prepare_model, resolve_device, train_epoch, wants_channels_last
from .weights import save_model

__all__ = ["search", "SearchResult", "Reporter", "SearchInterrupted", "default_out"]

logger = logging.getLogger(__name__)

_CKPT_FORMAT = "grownet.checkpoint"
_CKPT_VERSION = 1


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search; the message says where the checkpoint is and how to resume."""


@dataclass(frozen=True)
class SearchResult:
    """What a search produced.

    Attributes:
        run_dir: the run folder.
        arch: the final architecture (meta holds macs, params, val_acc, test_acc, ...).
        val_acc, test_acc: accuracies (fractions) of the chosen weights.
        macs, params: inference MACs per image and parameters of the final net.
        train_flops: cumulative training FLOPs of the whole run.
        wall_time: seconds spent training and evaluating (summed over resumes).
        rounds: growth checks made; epochs: epochs trained.
        events: divergence retries and other incidents, as recorded in summary.json.
        paths: ``{"architecture", "weights", "history", "rounds", "summary", "config", "log"}``.
    """

    run_dir: Path
    arch: Architecture
    val_acc: float
    test_acc: float
    macs: int
    params: int
    train_flops: int
    wall_time: float
    rounds: int
    epochs: int
    events: tuple = ()
    paths: Mapping[str, Path] = field(default_factory=dict)


class Reporter:
    """Progress hooks a search calls (all no-ops here; the CLI draws bars and tables).

    A hook must not raise, except to abort the run (the last checkpoint stays valid).
    """

    def start(self, *, run_dir: Path, arch: Architecture, recipe: Recipe, resumed: bool) -> None: ...

    def epoch_start(self, *, phase: str, round: int, epoch: int, index: int, total: int, batches: int) -> None: ...

    def batch(self, done: int, total: int) -> None: ...

    def epoch_end(self, row: Mapping[str, Any]) -> None: ...

    def round_end(self, record: Mapping[str, Any]) -> None: ...

    def event(self, message: str) -> None: ...

    def finish(self, result: SearchResult) -> None: ...

    def close(self) -> None: ...


def default_out(dataset: str) -> Path:
    """``runs/<dataset>-<YYYYmmdd-HHMMSS>`` (dataset name made file-safe)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(dataset.split(":", 1)[-1]).stem if ":" in dataset else dataset)
    return Path("runs") / f"{name.strip('-') or 'run'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ---- data-parallel hooks (grownet.distributed) ----------------------------------------------


def _data_parallel(fn: Callable[..., SearchResult]) -> Callable[..., SearchResult]:
    """Run :func:`search` on every rank of ``dist``: rank 0 as usual; the others follow it
    (:func:`_follow`). An error on rank 0 before it shares the configuration is raised on
    every rank, so none waits for it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, dist: DistContext | None = None, **kwargs: Any) -> SearchResult:
        if dist is None or not dist.active:
            return fn(*args, **kwargs)
        if not dist.is_main:
            return _follow(dist, device=kwargs.get("device", "auto"), resume=bool(kwargs.get("resume")),
                           reporter=kwargs.get("reporter"))
        shared = []
        try:
            return fn(*args, dist=_Sharing(dist, shared), **kwargs)
        except Exception as exc:
            if not shared:
                with contextlib.suppress(Exception):
                    dist.share(functools.partial(_reraise, exc))
            raise

    return wrapper


def _reraise(exc: BaseException) -> Any:
    raise exc


class _Sharing(DistContext):
    """Rank 0's context inside :func:`search`: records that the configuration was shared."""

    def __init__(self, dist: DistContext, shared: list) -> None:
        super().__init__(dist.rank, dist.world_size, dist.local_rank, dist.backend)
        object.__setattr__(self, "_shared", shared)

    def share(self, fn: Callable[[], Any]) -> Any:
        self._shared.append(True)
        return super().share(fn)


def _follow(dist: DistContext, *, device: str, resume: bool, reporter: Reporter | None) -> SearchResult:
    """A rank > 0: take rank 0's configuration and run folder path, then train alongside it."""
    config, path = dist.share(lambda: None)
    job = _Job(FollowerFolder(path), config, resolve_device(device), reporter or Reporter(), dist)
    try:
        with rng_scope(job.device):
            return job.run(resume=resume)
    except KeyboardInterrupt:
        raise SearchInterrupted(f"interrupted (rank {dist.rank}); rank 0 keeps the last checkpoint in {path}") from None


@_data_parallel
def search(
    dataset: str | None = None,
    *,
    recipe: Recipe | str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    overrides: Mapping[str, Any] | None = None,
    reporter: Reporter | None = None,
    command: str | None = None,
    dist: DistContext | None = None,
) -> SearchResult:
    """Grow a net on ``dataset`` and write the run folder ``out`` (see the module docstring).

    Args:
        dataset: a dataset name of grownet.data (``"cifar10"``, ``"npz:PATH"``, ...); ``None``:
            ``"cifar10"``, or on resume the run's own.
        recipe: a Recipe, or the path of a TOML recipe; ``None``: the defaults, or on resume
            the run's own recipe.
        out: run folder (default :func:`default_out`).
        data_dir: folder holding the dataset.
        seed: random seed (default 0; on resume the run's own).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        resume: continue the run in ``out`` from its last checkpoint.
        force: overwrite an existing run folder.
        overrides: ``{"grow.tau": 0.9, ...}`` applied on top of ``recipe``.
        reporter: progress hooks (default: logging only).
        command: the command line recorded in config.json.
        dist: data-parallel context (:func:`grownet.distributed.init_distributed`): call
            ``search`` with the same arguments on every rank; rank 0 writes the run folder.

    Returns:
        :class:`SearchResult`.

    Raises:
        RunError: the folder exists (without resume/force), is locked, has no or a corrupt
            checkpoint, or holds a run of another configuration.
        ConfigError, DataError, ArchitectureError: invalid inputs.
        DivergenceError: the loss stayed non-finite after ``run.max_retries`` retries.
        SearchInterrupted: Ctrl-C (the last checkpoint is kept; resume continues).
    """
    if resume and force:
        raise UsageError("--resume and --force contradict each other: resume keeps the run folder, force deletes it")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise UsageError(f"--seed: must be a non-negative integer, got {seed!r}")
    if out is None:
        if resume:
            raise UsageError("--resume needs --out: the run folder to continue")
        out = default_out(dataset or "cifar10")
    run = RunFolder(out)
    if resume and not run.path.is_dir():
        raise RunError(f"{run.path}: no such run folder to resume; check --out, or run without --resume to start it")
    # A new run's recipe is checked before anything is written.
    config = None if resume else _new_config(dataset, recipe=recipe, overrides=overrides, seed=seed, data_dir=data_dir,
                                             device=device, command=command)
    created = make_folder(run.path)
    reporter = reporter or Reporter()
    try:
        with run.lock():
            return _locked_search(run, config, dataset=dataset, recipe=recipe, overrides=overrides, seed=seed,
                                  data_dir=data_dir, device=device, resume=resume, force=force, reporter=reporter,
                                  command=command, dist=dist)
    except BaseException:
        remove_created(created)  # a refused start leaves no trace (only folders still empty go)
        raise


def _locked_search(run: RunFolder, config: dict[str, Any] | None, *, dataset: str | None, recipe: Any, overrides: Any,
                   seed: int | None, data_dir: Any, device: str, resume: bool, force: bool, reporter: Reporter,
                   command: str | None, dist: DistContext | None) -> SearchResult:
    """:func:`search` once the run folder exists and is locked."""
    run.prepare(resume=resume, force=force)
    if config is None:  # a refused resume leaves the folder as it was, its log included
        config = _resume_config(run, dataset, recipe=recipe, overrides=overrides, seed=seed, data_dir=data_dir, device=device)
        run.check_checkpoint()
    try:
        with log_to_file(run.log):
            try:
                config = (dist or LOCAL).share(lambda: (config, str(run.path)))[0]  # data-parallel ranks wait for it
                job = _Job(run, config, resolve_device(device), reporter, dist or LOCAL)
                with rng_scope(job.device):
                    return job.run(resume=resume)
            except KeyboardInterrupt:
                msg = f"interrupted; the last checkpoint is in {run.checkpoints}; continue with: {_resume_hint(command, run.path)}"
                if not resume and not run.has_checkpoint():
                    msg = "interrupted before the first checkpoint; nothing to resume"
                logger.warning(msg)
                raise SearchInterrupted(msg) from None
            except GrownetError as exc:
                logger.error("%s", exc, extra=FILE_ONLY)  # the caller shows it (cli: one line)
                raise
            finally:
                reporter.close()
    except BaseException:
        if not resume and not run.has_checkpoint():
            _discard_unstarted(run)  # a failed start leaves no folder that needs --force
        raise


def _discard_unstarted(run: RunFolder) -> None:
    """Remove the files of a run that failed before its first checkpoint, and put back the
    run that --force was replacing."""
    for path in (run.config, run.log, run.history, run.rounds):
        path.unlink(missing_ok=True)
    run.restore_replaced()


# ---- configuration ------------------------------------------------------------------------------


def _new_config(
    dataset: str | None,
    *,
    recipe: Recipe | str | os.PathLike | None,
    overrides: Mapping[str, Any] | None,
    seed: int | None,
    data_dir: Any,
    device: str,
    command: str | None,
) -> dict[str, Any]:
    """config.json of a new run (the recipe resolved and validated)."""
    resolved = resolve_recipe(recipe, overrides)
    if resolved.model.seed_arch not in PRESETS:
        seed_arch_file(resolved)  # a bad architecture JSON is refused before anything is written
    return {
        "recipe": resolved.to_dict(),
        "seed": 0 if seed is None else seed,
        "dataset": dataset or "cifar10",
        "data_dir": None if data_dir is None else str(data_dir),
        "device": device,
        **provenance(command or "grownet.search.search(...)"),
    }


def _resume_config(
    run: RunFolder,
    dataset: str | None,
    *,
    recipe: Recipe | str | os.PathLike | None,
    overrides: Mapping[str, Any] | None,
    seed: int | None,
    data_dir: Any,
    device: str,
) -> dict[str, Any]:
    """The stored config.json of a run to resume, after checking that what the caller asks
    for (recipe, overrides, seed, dataset) is the same; the data folder and device may change."""
    stored = _read_config(run)
    own = Recipe.from_dict(stored["recipe"])
    resolved = resolve_recipe(recipe, overrides, own)
    diff = own.diff(resolved)
    if diff:
        key = diff[0]
        raise RunError(
            f"{run.path} was started with another configuration ({key} = {own.get(key)!r}, now {resolved.get(key)!r}); "
            f"resume with the run's own recipe or start a new run"
        )
    if seed is not None and seed != stored["seed"]:
        raise RunError(f"{run.path} was started with --seed {stored['seed']}, not {seed}; resume without --seed")
    if dataset is not None and dataset != stored["dataset"]:
        raise RunError(f"{run.path} was started on dataset {stored['dataset']!r}, not {dataset!r}")
    config = dict(stored)
    config["data_dir"] = str(data_dir) if data_dir is not None else stored.get("data_dir")
    config["device"] = device
    return config


def _read_config(run: RunFolder) -> dict[str, Any]:
    try:
        config = json.loads(run.config.read_text(encoding="utf-8"))
        Recipe.from_dict(config["recipe"]), int(config["seed"]), str(config["dataset"])
    except FileNotFoundError:
        raise RunError(f"{run.config}: missing; the folder cannot be resumed (start again with --force)") from None
    except (ValueError, KeyError, TypeError, ConfigError) as exc:
        raise RunError(f"{run.config}: unreadable or invalid ({exc}); the folder cannot be resumed") from None
    return config


def _resume_hint(command: str | None, path: Path) -> str:
    if command and command.startswith("grownet "):
        parts = [p for p in command.split() if p not in ("--force", "--resume")]
        if "--out" not in parts and not any(p.startswith("--out=") for p in parts):
            parts += ["--out", str(path)]
        return " ".join(parts + ["--resume"])
    return f"grownet search --out {path} --resume (same options), or search(..., out={str(path)!r}, resume=True)"


# ---- the loop -----------------------------------------------------------------------------------


@dataclass
class _State:
    """Everything about the loop's progress that is not a tensor (checkpointed as plain data)."""

    phase: str = "grow"  # "grow" | "finetune" | "done"
    round: int = 1  # current growing round (1-based)
    round_epoch: int = 0  # epochs finished in the current round
    ft_epoch: int = 0  # fine-tune epochs finished
    epoch: int = 0  # epochs finished in all
    lr_scale: float = 1.0  # lowered after each divergence
    retries: int = 0
    train_flops: int = 0
    wall_time: float = 0.0
    best_val: float = -1.0
    best_epoch: int = 0
    prev_activity: dict[str, float] | None = None
    signal: dict[str, Any] | None = None  # the importance meter's state within the current round
    history: list[dict[str, Any]] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    seed_arch: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None


class _Job:
    """One search run: owns the model, optimizer and loaders while the loop runs."""

    def __init__(self, run: RunFolder, config: Mapping[str, Any], device: torch.device, reporter: Reporter,
                 dist: DistContext = LOCAL) -> None:
        self.dist = dist  # data-parallel hooks (no-ops for one process); see grownet.distributed
        self.run_folder = run
        self.config = config
        self.recipe = Recipe.from_dict(config["recipe"])
        self.device = device
        self.reporter = reporter
        self.channels_last = wants_channels_last(self.recipe.run.channels_last, device)
        self.amp = amp_dtype(self.recipe.run.amp, device)
        self.state = _State()
        self.model: nn.Module | None = None
        self.arch: Architecture | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.best_model: dict[str, torch.Tensor] | None = None
        self.meter: ImportanceMeter | None = None
        self._mark = time.perf_counter()

    # -- setup --------------------------------------------------------------------------------
    def run(self, *, resume: bool) -> SearchResult:
        r = self.recipe
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_all(int(self.config["seed"]))
        self.data = self.dist.shard_data(make_data(self.config, r, self.device, channels_last=self.channels_last))
        if resume:
            payload = self.dist.share(self.run_folder.load_checkpoint)
            self._restore(payload)
            logger.info("resumed %s at epoch %d (%s phase, round %d)", self.run_folder.path, self.state.epoch, self.state.phase, self.state.round)
            if self.state.phase == "done" and self.state.result is not None and self.dist.share(self.run_folder.summary.exists):
                return self._result(self.state.result)
        else:
            arch = seed_arch(r, self.data)
            stage_taus(r.grow.tau, arch.num_stages)  # a per-stage tau must match the seed
            _check_budget(arch, r)
            self.run_folder.write_json(self.run_folder.config, self.config)
            self.state.seed_arch = arch.to_dict()
            self._set_model(build_model(arch), arch)
            self.optimizer = self._grow_optimizer()
            logger.info("seed %s: %s (%.2fM MACs)", r.model.seed_arch, arch.layer_widths(), cost(arch).macs / 1e6)
            self._checkpoint()  # the first "last good state"
            if self.dist.is_main:
                self.run_folder.drop_replaced()  # the new run has started: --force's old run goes
        self.reporter.start(run_dir=self.run_folder.path, arch=self.arch, recipe=r, resumed=resume)
        self._mark = time.perf_counter()
        # One checkpoint per epoch, written after the epoch's growth check (if it ends a round).
        while self.state.phase == "grow":
            self._epoch("grow")
            if self.state.round_epoch >= r.grow.local_epochs:
                self._check()
            self._checkpoint()
        while self.state.ft_epoch < r.finetune.epochs:
            self._epoch("finetune")
            self._checkpoint()
        return self._finish()

    def _set_model(self, model: nn.Module, arch: Architecture) -> None:
        self.model = prepare_model(model, self.device, channels_last=self.channels_last)
        self.train_model = self.dist.wrap(self.model)  # DistributedDataParallel on several ranks
        self.arch = arch
        self.cost = cost(arch)
        self.meter = None
        g = self.recipe.grow
        if g.signal == "importance" and self.state.phase == "grow":  # a new meter for every round
            every = max(1, g.local_epochs * len(self.data.train) // 10)
            self.meter = ImportanceMeter(self.model, arch, rho=g.rho, trace_every=every)
            if self.state.signal is not None:
                self.meter.load_state_dict(self.state.signal)

    def _grow_optimizer(self) -> torch.optim.Optimizer:
        return make_dessilbi(self.model, self.recipe)

    def _finetune_optimizer(self) -> torch.optim.Optimizer:
        if self.recipe.finetune.optimizer == "dessilbi":
            return self.optimizer  # type: ignore[return-value]  # the growing optimizer, state kept
        return self._sgd()

    def _sgd(self) -> torch.optim.Optimizer:
        f = self.recipe.finetune
        return torch.optim.SGD(self.model.parameters(), lr=f.lr, momentum=f.momentum, nesterov=f.nesterov and f.momentum > 0,
                               weight_decay=f.weight_decay)

    # -- one epoch ------------------------------------------------------------------------------
    def _lr_fn(self, phase: str) -> Callable[[int], float]:
        r, s = self.recipe, self.state
        if phase == "grow":
            lr = r.optim.lr * s.lr_scale
            return lambda i: lr
        f = r.finetune
        steps = len(self.data.train)
        total = max(1, f.epochs * steps)
        warm = f.warmup_epochs * steps
        first = s.ft_epoch * steps

        def lr_at(i: int) -> float:
            return cosine_lr(first + i, total, lr=f.lr, min_lr=f.min_lr, warmup=warm) * s.lr_scale

        return lr_at

    def _epoch(self, phase: str) -> None:
        r = self.recipe
        smoothing = r.optim.label_smoothing if phase == "grow" else r.finetune.label_smoothing
        while True:
            s = self.state  # a divergence retry restores a new state object
            index = s.round_epoch if phase == "grow" else s.ft_epoch
            total = r.grow.local_epochs if phase == "grow" else r.finetune.epochs
            self.reporter.epoch_start(phase=phase, round=s.round, epoch=s.epoch + 1, index=index + 1, total=total,
                                      batches=len(self.data.train))
            lr_at = self._lr_fn(phase)
            progress = self.reporter.batch
            if phase == "grow" and self.meter is not None:
                meter, batch = self.meter, self.reporter.batch

                def progress(done: int, total: int) -> None:
                    meter.observe()  # the step's gradients are still on the parameters
                    batch(done, total)

            stats = train_epoch(self.train_model, self.data.train, self.optimizer, lr_at=lr_at, amp=self.amp,
                                label_smoothing=smoothing, progress=progress, sync=self.dist.sync_fn)
            if stats.finite:
                break
            self._diverged(stats, phase)
        self.dist.sync_buffers(self.model)  # every rank evaluates (and keeps) rank 0's BatchNorm statistics
        val = evaluate(self.model, self.data.val, amp=self.amp, sync=self.dist.sync_fn)
        s.epoch += 1
        if phase == "grow":
            s.round_epoch += 1
        else:
            s.ft_epoch += 1
        s.train_flops += self.cost.train_flops_per_sample * stats.samples
        self._tick()
        row = {
            "round": s.round, "epoch": s.epoch, "phase": phase, "lr": lr_at(len(self.data.train) - 1),
            "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val.loss, "val_acc": val.acc,
            "macs": self.cost.macs, "params": self.cost.params, "train_flops": s.train_flops, "wall_time": round(s.wall_time, 3),
        }
        s.history.append(row)
        if phase == "finetune" and val.acc > s.best_val:
            s.best_val, s.best_epoch = val.acc, s.epoch
            self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        logger.info(
            "round %d epoch %d (%s %d/%d): lr %.4g loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s",
            s.round, s.epoch, phase, (s.round_epoch if phase == "grow" else s.ft_epoch),
            (r.grow.local_epochs if phase == "grow" else r.finetune.epochs), row["lr"], stats.loss, stats.acc,
            val.loss, val.acc, stats.seconds,
        )
        self.run_folder.write_history(s.history)
        self.reporter.epoch_end(row)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.state.wall_time += now - self._mark
        self._mark = now

    def _diverged(self, stats: EpochStats, phase: str) -> None:
        """Restore the last checkpoint and lower the learning rate, or give up."""
        s, r = self.state, self.recipe
        self._tick()
        wall, events, retries = s.wall_time, list(s.events), s.retries + 1
        scale = s.lr_scale * r.run.retry_lr_factor
        detail = (f"non-finite training loss after {stats.samples} samples; restored the checkpoint of epoch "
                  f"{s.epoch} and retrying with lr x {scale:g}")
        if retries > r.run.max_retries:
            detail = f"non-finite training loss after {stats.samples} samples; gave up after {r.run.max_retries} retries"
        events.append({"epoch": s.epoch + 1, "event": "divergence", "phase": phase, "detail": detail})
        logger.warning("epoch %d: %s", s.epoch + 1, detail)
        self.reporter.event(f"epoch {s.epoch + 1}: {detail}")
        self._restore(self.dist.share(self.run_folder.load_checkpoint))
        s = self.state
        s.wall_time, s.events, s.retries = wall, events, retries
        if retries > r.run.max_retries:
            self._checkpoint()
            raise DivergenceError(
                f"training diverged: the loss was non-finite {retries} times (run.max_retries {r.run.max_retries}); "
                f"the last good state (epoch {s.epoch}) is in {self.run_folder.checkpoints}; lower optim.lr (or finetune.lr) and start again"
            )
        s.lr_scale = scale

    # -- growth check ---------------------------------------------------------------------------
    def _check(self) -> None:
        r, s = self.recipe, self.state
        importance, signal = None, None
        if self.meter is not None:
            activity, importance, signal = self.meter.activity(), self.meter.importance_share(), self.meter.record()
        else:
            activity = layer_activity(self.arch, filter_activity(self.model, self.optimizer))
        kwargs = dict(
            importance=importance, cost_exponent=r.grow.cost_exponent,
            tau=r.grow.tau, ratio=r.grow.ratio, min_add=r.grow.min_add, previous=s.prev_activity,
            deepen=r.grow.deepen, max_layers_per_stage=r.grow.max_layers_per_stage, max_width=r.grow.max_width,
            max_macs=r.budget.max_macs, max_params=r.budget.max_params, cost_fn=_macs_params,
        )
        hold = None
        if r.budget.max_rounds and s.round >= r.budget.max_rounds:
            hold = f"budget.max_rounds {r.budget.max_rounds} reached"
        plan = plan_growth(self.arch, activity, hold=hold, **kwargs)
        if plan.grew and r.budget.time_budget > 0:
            hold = self._time_hold(plan)
            if hold is not None:
                plan = plan_growth(self.arch, activity, hold=hold, **kwargs)
        plan, hold = self.dist.share(lambda: (plan, hold))  # every rank applies rank 0's decision
        last_val = s.history[-1]["val_acc"] if s.history else None
        record = {
            "round": s.round, "epoch": s.epoch, "macs": self.cost.macs, "params": self.cost.params, "val_acc": last_val,
            "layers": [d.to_dict() for d in plan.decisions], "deepened": list(plan.deepen), "grew": plan.grew,
            "new_macs": plan.macs, "new_params": plan.params, "hold": hold,
            "new_arch": plan.arch.to_dict() if plan.grew else None,
        }
        if signal is not None:
            record["signal"] = signal
        s.rounds.append(record)
        s.prev_activity = activity
        s.signal = None  # the next round measures afresh
        for d in plan.decisions:
            if d.decision != "keep":
                logger.info("check %d: %s %s (%s)", s.round, d.layer, d.decision, d.reason)
        if plan.grew:
            model, arch = grow_apply(self.model, self.arch, dict(plan.widen), plan.deepen, optimizer=self.optimizer)
            if arch != plan.arch:
                raise RuntimeError(f"bug: grow.apply built {arch.layer_widths()}, the plan was {plan.arch.layer_widths()}")
            self._set_model(model, arch)
            logger.info("check %d: grew to %s (%.2fM MACs, %d params)", s.round, arch.layer_widths(), self.cost.macs / 1e6, self.cost.params)
            s.round += 1
            s.round_epoch = 0
        else:
            why = hold or ("nothing saturates" if not plan.saturated else "no growth fits the budget")
            logger.info("check %d: stop growing (%s); fine-tuning %d epochs", s.round, why, r.finetune.epochs)
            s.phase = "finetune"
            self.meter = None
            self.optimizer = self._finetune_optimizer()
        self.run_folder.write_json(self.run_folder.rounds, s.rounds)
        self.reporter.round_end(record)

    def _time_hold(self, plan: GrowthPlan) -> str | None:
        """Why the time budget forbids another round (None when it fits): the elapsed time plus
        ``local_epochs + finetune.epochs`` epochs at this round's seconds per epoch, scaled by
        the grown net's MACs, must fit in ``budget.time_budget``."""
        r, s = self.recipe, self.state
        rows = [i for i, h in enumerate(s.history) if h["phase"] == "grow" and h["round"] == s.round]
        start = s.history[rows[0] - 1]["wall_time"] if rows[0] > 0 else 0.0
        per_epoch = (s.history[rows[-1]]["wall_time"] - start) / len(rows)
        need = per_epoch * (plan.macs or self.cost.macs) / self.cost.macs * (r.grow.local_epochs + r.finetune.epochs)
        self._tick()
        if s.wall_time + need <= r.budget.time_budget:
            return None
        return (f"budget.time_budget {r.budget.time_budget:g} s: {s.wall_time:.0f} s elapsed + about {need:.0f} s for "
                f"another round and the fine-tune would pass it")

    # -- checkpoints ----------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        self._tick()
        if not self.dist.is_main:  # only rank 0 writes; the others get its checkpoints through share()
            return
        self.state.signal = self.meter.state_dict() if self.meter is not None else None
        payload = {
            "format": _CKPT_FORMAT,
            "version": _CKPT_VERSION,
            "arch": self.arch.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_kind": "dessilbi" if self.optimizer is not None and not isinstance(self.optimizer, torch.optim.SGD) else "sgd",
            "best_model": self.best_model,
            "state": _plain(asdict(self.state)),
            "rng": rng_state(self.device),
            "loader": {"epoch": self.data.train.epoch},
        }
        self.run_folder.save_checkpoint(payload)

    def _restore(self, payload: Mapping[str, Any]) -> None:
        if payload.get("format") != _CKPT_FORMAT or payload.get("version") != _CKPT_VERSION:
            raise RunError(f"{self.run_folder.checkpoints}: not a grownet checkpoint of version {_CKPT_VERSION}")
        arch = Architecture.from_dict(payload["arch"])
        with torch.device("meta"):
            model = build_model(arch)
        model = model.to_empty(device="cpu")
        model.load_state_dict(payload["model"])
        self.state = _State(**payload["state"])  # before the model: a growing round's meter reads its state
        self._set_model(model, arch)
        self.optimizer = self._grow_optimizer() if payload["optimizer_kind"] == "dessilbi" else self._sgd()
        self.optimizer.load_state_dict(payload["optimizer"])
        self.best_model = payload.get("best_model")
        set_rng_state(payload["rng"], self.device)
        self.data.train.set_epoch(int(payload["loader"]["epoch"]))

    # -- the end --------------------------------------------------------------------------------
    def _finish(self) -> SearchResult:
        s, run = self.state, self.run_folder
        if self.best_model is not None:
            self.model.load_state_dict(self.best_model)
        val = evaluate(self.model, self.data.val, amp=self.amp, sync=self.dist.sync_fn)
        test = evaluate(self.model, self.data.test, amp=self.amp, sync=self.dist.sync_fn)
        self._tick()
        from . import __version__

        c = self.cost
        final = self.arch.with_meta(
            macs=c.macs, params=c.params, val_acc=val.acc, test_acc=test.acc, dataset=self.config["dataset"],
            grownet_version=__version__, train_flops=s.train_flops, seed=self.config["seed"],
        )
        if self.dist.is_main:
            final.save(run.architecture)
            save_model(self.model, run.weights)
        summary = {
            "dataset": self.config["dataset"], "classes": list(getattr(self.data, "classes", []) or []),
            "seed": self.config["seed"], "val_acc": val.acc, "test_acc": test.acc, "val_loss": val.loss,
            "test_loss": test.loss, "macs": c.macs, "params": c.params, "train_flops": s.train_flops,
            "wall_time": round(s.wall_time, 3), "rounds": len(s.rounds), "epochs": s.epoch,
            "best_epoch": s.best_epoch or s.epoch, "seed_arch": s.seed_arch, "final_arch": final.to_dict(),
            "events": s.events,
        }
        run.write_json(run.summary, summary)
        run.write_json(run.rounds, s.rounds)
        s.phase = "done"
        s.result = summary
        self._checkpoint()
        logger.info("done: val acc %.4f, test acc %.4f, %.2fM MACs, %d params, %.0f s -> %s",
                    val.acc, test.acc, c.macs / 1e6, c.params, s.wall_time, run.path)
        if self.dist.is_main:
            _write_report(run.path)
        result = self._result(summary)
        self.reporter.finish(result)
        return result

    def _result(self, summary: Mapping[str, Any]) -> SearchResult:
        run = self.run_folder
        return SearchResult(
            run_dir=run.path, arch=Architecture.from_dict(summary["final_arch"]), val_acc=summary["val_acc"],
            test_acc=summary["test_acc"], macs=summary["macs"], params=summary["params"],
            train_flops=summary["train_flops"], wall_time=summary["wall_time"], rounds=summary["rounds"],
            epochs=summary["epochs"], events=tuple(summary["events"]),
            paths={"architecture": run.architecture, "weights": run.weights, "history": run.history,
                   "rounds": run.rounds, "summary": run.summary, "config": run.config, "log": run.log},
        )


def _write_report(run_dir: Path) -> None:
    """Write ``run_dir/report.html`` from the run folder's files."""
    from .report import write_report

    write_report(run_dir)


# ---- adapters to the other modules -------------------------------------------------------------


def _macs_params(arch: Architecture) -> tuple[int, int]:
    c = cost(arch)
    return c.macs, c.params


def _check_budget(arch: Architecture, recipe: Recipe) -> None:
    """Refuse a seed that already exceeds ``budget.max_macs`` or ``budget.max_params``."""
    b, c = recipe.budget, cost(arch)
    for key, limit, value, unit in (("max_macs", b.max_macs, c.macs, "MACs"), ("max_params", b.max_params, c.params, "params")):
        if limit and value > limit:
            raise ConfigError(f"budget.{key}: {limit:,} is smaller than the seed net's {value:,} {unit}; "
                              f"raise budget.{key} or start from a smaller seed (model.seed_width)")


def _plain(value: Any) -> Any:
    """Dataclass state as checkpoint-safe plain types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

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

The epochs run through the one training loop (:func:`grownet.loop.fit`); the rounds, the
growth check (:func:`grownet._search_job.growth_check`) and the checkpoints are in
:mod:`grownet._search_job`; this module checks the inputs, opens the run folder
(:func:`grownet.runfolder.job_folder`) and handles resume and data parallelism.

Every epoch ends with a checkpoint (model, optimizer incl. V/Γ/momentum, architecture, loop
state, history, RNG and loader state), so a run killed at any point continues with
``resume=True`` and, on the CPU with the same seed, ends with the same architecture and
metrics. A non-finite loss restores the last checkpoint and retries with a lower learning
rate (the loop's divergence policy: ``run.max_retries`` times over the run, then
:class:`~grownet.errors.DivergenceError`).

The time budget (``budget.time_budget``, seconds for the whole run) only stops growth: a new
round starts only if the elapsed time plus the estimated round plus the estimated fine-tune
fit: both from the last round's median seconds per epoch, scaled by the grown net's seconds
per training step over the present net's, timed on copies of both for a few steps. The
fine-tune itself is never cut.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping

from ._search_job import SearchJob, SearchResult, check_payload
from .distributed import LOCAL, DistContext, FollowerFolder
from .errors import RunError, UsageError
from .files import stored_dir
from .job import provenance, rng_scope, seed_arch, seed_arch_file
from .models import check_memory
from .progress import Reporter
from .recipe import Recipe, resolve_recipe
from .runfolder import JobFolder, RunFolder, job_folder, read_config
from .seeds import PRESETS
from .train import resolve_device
from .validate import check_int, check_text

__all__ = ["search", "search_or_resume", "SearchResult", "Reporter", "SearchInterrupted", "default_out"]

logger = logging.getLogger(__name__)


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search; the message says where the checkpoint is and how to resume."""


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
    job = SearchJob(FollowerFolder(path), config, resolve_device(device), reporter or Reporter(), dist)
    try:
        with rng_scope(job.device):
            return job.run(resume=resume)
    except KeyboardInterrupt:
        raise SearchInterrupted(f"interrupted (rank {dist.rank}); rank 0 keeps the last checkpoint in {path}") from None


def search_or_resume(
    out: str | os.PathLike,
    *,
    dataset: str,
    recipe: Recipe,
    seed: int,
    data_dir: str | os.PathLike | None,
    device: str,
    restart: bool = False,
    reporter: Reporter | None = None,
    command: str | None = None,
) -> SearchResult:
    """Run a search into ``out``, or resume it where ``out`` holds a checkpoint (then
    ``dataset``, ``recipe`` and ``seed`` are the run's own; ``restart``: start it over, deleting
    what ``out`` holds). What a job that runs searches of its own (a study's arms, the
    ``fixed_uniform`` control) calls, so that an interrupted job continues where it stopped."""
    out = Path(out)
    started = not restart and RunFolder(out).has_checkpoint()
    return search(None if started else dataset, recipe=None if started else recipe, out=out, data_dir=data_dir,
                  seed=None if started else seed, device=device, resume=started, force=out.exists() and not started,
                  reporter=reporter, command=command)


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
    check_int(seed, "--seed", error=UsageError, optional=True)
    if out is not None:
        check_text(os.fspath(out), "--out")
    if out is None:
        if resume:
            raise UsageError("--resume needs --out: the run folder to continue")
        out = default_out(dataset or "cifar10")
    if resume and not Path(out).is_dir():
        raise RunError(f"{out}: no such run folder to resume; check --out, or run without --resume to start it")
    # A new run's recipe is checked before anything is written.
    config = None if resume else _new_config(dataset, recipe=recipe, overrides=overrides, seed=seed, data_dir=data_dir,
                                             device=device, command=command)
    dev = resolve_device(device)
    if config is not None:
        _check_seed_memory(Recipe.from_dict(config["recipe"]), dev)
    reporter = reporter or Reporter()
    stored: list[dict[str, Any]] = []  # on resume: the stored config, the checkpoint's payload

    def check(run: JobFolder) -> None:
        run.prepare(resume=resume, force=force)
        if resume:  # refused here, before the log opens, a resume leaves the folder as it was
            stored.append(_resume_config(run, dataset, recipe=recipe, overrides=overrides, seed=seed, data_dir=data_dir,
                                         device=device))
            payload = run.load_checkpoint()
            check_payload(payload, run.checkpoints)
            stored.append(payload)

    try:
        with job_folder(out, device=dev, check=check) as run:  # a resume starts once its checkpoint is restored
            config = (dist or LOCAL).share(lambda: (config or stored[0], str(run.path)))[0]  # data-parallel ranks wait
            try:
                job = SearchJob(run, config, dev, reporter, dist or LOCAL)
                return job.run(resume=resume, checkpoint=stored[1] if resume else None)
            except KeyboardInterrupt:
                msg = f"interrupted; the last checkpoint is in {run.checkpoints}; continue with: {_resume_hint(command, run.path)}"
                if not resume and not run.has_checkpoint():
                    msg = "interrupted before the first checkpoint; nothing to resume"
                logger.warning(msg)
                raise SearchInterrupted(msg) from None
    finally:
        reporter.close()


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
        "data_dir": stored_dir(data_dir),
        "device": device,
        **provenance(command or "grownet.search.search(...)"),
    }


#: The data's shape assumed for a preset seed before the data is read (CIFAR's): the job checks
#: the seed again at the dataset's own shape before it builds the net.
_PRESET_DIMS = SimpleNamespace(num_classes=10, in_channels=3, input_size=32)


def _check_seed_memory(recipe: Recipe, device: Any) -> None:
    """Refuse, before any folder is made, a seed net whose parameters or activations at
    ``data.batch_size`` would not fit ``device`` (:func:`grownet.models.check_memory`): an
    architecture JSON at its own input shape, a preset at :data:`_PRESET_DIMS`."""
    name = recipe.model.seed_arch
    arch = seed_arch(recipe, _PRESET_DIMS) if name in PRESETS else seed_arch_file(recipe)
    check_memory(arch, batch_size=recipe.data.batch_size, device=device)


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
    config["data_dir"] = stored_dir(data_dir) if data_dir is not None else stored.get("data_dir")
    config["device"] = device
    return config


def _read_config(run: RunFolder) -> dict[str, Any]:
    """The run's config.json, its stored recipe upgraded (:func:`grownet.recipe.upgrade_stored`)
    and checked (:func:`grownet.validate.check_config`)."""
    return read_config(run.config, missing="missing; the folder cannot be resumed (start again with --force)")


def _resume_hint(command: str | None, path: Path) -> str:
    if command and command.startswith("grownet "):
        parts = [p for p in command.split() if p not in ("--force", "--resume")]
        if "--out" not in parts and not any(p.startswith("--out=") for p in parts):
            parts += ["--out", str(path)]
        return " ".join(parts + ["--resume"])
    return f"grownet search --out {path} --resume (same options), or search(..., out={str(path)!r}, resume=True)"

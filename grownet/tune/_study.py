"""The study: :func:`tune` opens (or joins, or resumes) it, checks its configuration, and
runs a :class:`Worker` on it."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import GrownetError, RunError, UsageError
from ..recipe import Recipe, resolve_recipe
from ..runfolder import make_folder, remove_created
from ..validate import check_int, check_text
from ._results import CONFIG_ATTR, TrialRow, TuneResult, trial_rows, write_outputs
from ._sampler import SAMPLERS, make_sampler
from ._space import OBJECTIVES, SEARCHED, TuneSpace, load_space
from ._storage import (StudyLock, default_storage, dispose, is_storage_error, mask_url, one_line, open_storage,
                       scrub)
from ._worker import TuneReporter, Worker, retry_stale

if TYPE_CHECKING:  # pragma: no cover
    import optuna

#: Default seconds between heartbeats of a running trial.
HEARTBEAT = 30


def _check_arguments(trials: Any, sampler: Any, heartbeat: Any, seed: Any) -> None:
    def count(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if not count(trials) or trials < 0:
        raise UsageError(f"--trials: must be a non-negative integer (the study's total), got {trials!r}")
    if sampler is not None and sampler not in SAMPLERS:
        raise UsageError(f"--sampler: must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if not count(heartbeat) or heartbeat < 1:
        raise UsageError(f"heartbeat: must be a positive number of seconds, got {heartbeat!r}")
    check_int(seed, "--seed", error=UsageError, optional=True)


def tune(
    dataset: str | None = None,
    *,
    trials: int,
    recipe: Recipe | str | os.PathLike | None = None,
    space: TuneSpace | Mapping[str, Any] | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    out: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int | None = None,
    device: str = "auto",
    sampler: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    heartbeat: int = HEARTBEAT,
    reporter: TuneReporter | None = None,
    command: str | None = None,
) -> TuneResult:
    """Run (or join, or resume) a study until it holds ``trials`` finished trials.

    Args:
        dataset: dataset name (default: the study's, else ``"cifar10"``).
        trials: total finished trials the study should hold (0: only write the outputs).
        recipe: base recipe (Recipe or TOML path); its ``budget`` bounds every trial; a path's
            ``[tune]`` table gives the space. Default: the study's, else the defaults.
        space: search space (overrides the recipe's ``[tune]``).
        storage: optuna RDB URL (default ``sqlite:///OUT/study.db``).
        study_name: default ``grownet-<dataset>``.
        out: this worker's output folder (default ``runs/tune-<dataset>-<time>``; needed to
            resume with the default storage).
        data_dir, device: as for :func:`grownet.search.search`.
        seed: seed of the sampler and of every trial's search (default: the study's, else 0).
        sampler: ``tpe`` (multivariate multi-objective TPE; the default), ``nsga2`` or
            ``random`` (default: the study's).
        overrides: ``{"budget.max_macs": 4e7, ...}`` applied to the recipe.
        heartbeat: seconds between a running trial's heartbeats; a trial silent for
            4 x ``heartbeat`` is taken as dead and retried.
        reporter: progress hooks.
        command: command line recorded in each trial's config.json (the storage URL's
            password is scrubbed from it).

    Returns:
        :class:`TuneResult`.

    Raises:
        UsageError: bad arguments, or a storage URL that is not one. RunError: the storage
        cannot be opened, or the study was started with another configuration.
        ConfigError, DataError: from the trials' searches.
    """
    import optuna

    _check_arguments(trials, sampler, heartbeat, seed)
    if out is not None:
        check_text(os.fspath(out), "--out")
    out_path = Path(out) if out is not None else _default_out(dataset or "cifar10")
    created = make_folder(out_path)
    url = storage or default_storage(out_path)
    safe_url = mask_url(url)
    try:
        rdb = open_storage(url, heartbeat, retry_stale)
    except BaseException:
        remove_created(created)  # a storage that cannot be opened leaves no folder behind
        raise
    lock: StudyLock | None = None
    try:
        name = study_name or _default_study_name(rdb, dataset)
        lock = StudyLock(url, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study, config = _open_study(rdb, lock, name, url, dataset=dataset, recipe=recipe, space=space,
                                        overrides=overrides, seed=seed, sampler=sampler)
            worker = Worker(study, rdb, lock, config, out=out_path, data_dir=data_dir, device=device,
                            heartbeat=heartbeat, reporter=reporter or TuneReporter(),
                            command=None if command is None else scrub(command, url), safe_url=safe_url)
            ran = worker.run(trials)
            rows: list[TrialRow] = trial_rows(study)
            paths = write_outputs(study, out_path, storage_label=safe_url)
    except (GrownetError, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - storage/driver errors may quote the URL
        text = one_line(exc)
        if is_storage_error(exc) or scrub(text, url) != text:
            raise RunError(f"study storage {safe_url}: {scrub(text, url)}") from None
        raise
    finally:
        if lock is not None:
            lock.close()
        dispose(rdb)
    return TuneResult(out=out_path, storage=safe_url, study_name=name, trials=tuple(rows),
                      pareto=tuple(r for r in rows if r.pareto), ran=tuple(ran), paths=paths)


def _open_study(rdb: Any, lock: StudyLock, name: str, url: str, **given: Any) -> tuple["optuna.Study", dict[str, Any]]:
    """Load or create the study under the lock, agree on its configuration (``given``: the
    caller's dataset, recipe, space, overrides, seed and sampler), set its sampler."""
    with lock.hold():
        study = _load_study(rdb, name, url)
        config = _study_config(study, name=name, safe_url=mask_url(url), **given)
    study.sampler = make_sampler(config["sampler"], seed=config["seed"])
    return study, config


def _default_study_name(rdb: Any, dataset: str | None) -> str:
    """``grownet-<dataset>``; without a dataset, the storage's only study if it has one."""
    if dataset is None:
        names = [s.study_name for s in rdb.get_all_studies()]
        if len(names) == 1:
            return names[0]
    return f"grownet-{re.sub(r'[^A-Za-z0-9_.-]+', '-', dataset or 'cifar10').strip('-')}"


def _default_out(dataset: str) -> Path:
    from ..search import default_out

    d = default_out(dataset)
    return d.with_name(f"tune-{d.name}")


def _load_study(rdb: Any, name: str, url: str) -> "optuna.Study":
    import optuna

    study = optuna.create_study(storage=rdb, study_name=name, directions=[d for _, d in OBJECTIVES],
                                load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=0))
    if len(study.directions) != len(OBJECTIVES) or [d.name.lower() for d in study.directions] != [d for _, d in OBJECTIVES]:
        raise RunError(f"study {name!r} in {mask_url(url)} is not a grownet tune study (its objectives differ); "
                       f"pass another --study-name")
    if study.metric_names is None:
        study.set_metric_names([n for n, _ in OBJECTIVES])
    return study


def _study_config(study: "optuna.Study", *, dataset: str | None, recipe: Any, space: Any, overrides: Any,
                  seed: int | None, sampler: str | None, name: str, safe_url: str) -> dict[str, Any]:
    """The tune configuration: the study's own when it has one (what the caller gave must
    then agree), else the caller's, stored in the study (call while holding the lock)."""
    from .._version import __version__

    stored = study.user_attrs.get(CONFIG_ATTR)
    own = Recipe.from_dict(stored["recipe"]) if stored and recipe is None else None
    base = resolve_recipe(recipe, overrides, own)
    if isinstance(space, TuneSpace):
        tspace = space
    elif space is not None:
        tspace = TuneSpace.from_dict(space, recipe=base)
    elif recipe is not None and not isinstance(recipe, Recipe):
        tspace = load_space(recipe, recipe=base)
    elif stored:
        tspace = TuneSpace.from_stored(stored["space"])
    else:
        tspace = TuneSpace.from_dict(None, recipe=base)
    old = stored or {}
    mine = {
        "dataset": dataset or old.get("dataset") or "cifar10",
        "recipe": base.to_dict(),
        "space": tspace.to_dict(),
        "seed": seed if seed is not None else old.get("seed", 0),
        "sampler": sampler or old.get("sampler") or "tpe",
    }
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, {**mine, "grownet_version": __version__})
        return mine
    _check_same(stored, mine, where=f"study {name!r} in {safe_url}")
    return mine


def _check_same(stored: Mapping[str, Any], mine: Mapping[str, Any], *, where: str) -> None:
    """Raise RunError naming the first setting in which ``mine`` differs from the study's."""
    for key in ("dataset", "seed", "sampler"):
        if mine[key] != stored.get(key):
            raise RunError(f"{where} was started with {key} {stored.get(key)!r}, not {mine[key]!r}; "
                           f"use its settings or another --study-name")
    theirs, ours = Recipe.from_dict(stored["recipe"]), Recipe.from_dict(mine["recipe"])
    diff = theirs.diff(ours)
    if diff:
        k = diff[0]
        raise RunError(f"{where} was started with another recipe ({k} = {theirs.get(k)!r}, now {ours.get(k)!r}); "
                       f"use the study's recipe or another --study-name")
    if mine["space"] != stored["space"]:
        k = next(k for k in SEARCHED if mine["space"].get(k) != stored["space"].get(k))
        raise RunError(f"{where} was started with another search space (tune.{k} = "
                       f"{stored['space'].get(k)}, now {mine['space'].get(k)}); use the study's or another --study-name")

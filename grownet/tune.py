"""Hyperparameter tuning: an optuna study whose trials are grownet searches.

Each trial samples the growing hyperparameters of :data:`SEARCHED` from a :class:`TuneSpace`
(the recipe's ``[tune]`` table, or the defaults), runs :func:`grownet.search.search` under the
recipe's budget, and reports two objectives: validation accuracy (maximised) and inference
MACs (minimised). The result is the Pareto front.

Storage and workers
    The study lives in an optuna RDB storage given by URL: by default an SQLite file
    ``OUT/study.db``; any URL optuna accepts (``postgresql://...``, ``mysql://...``) works.
    Several :func:`tune` processes, on one or several machines, pointed at the same storage
    and study name share the work.

Every trial completes exactly once
    ``trials`` is the study's total, not a per-worker count. A worker repeats: take the study
    lock (an advisory lock of the database server for PostgreSQL / MySQL, a file lock beside
    an SQLite file), count the trials that are finished (complete, or pruned after a
    divergence) or running, and, while that count is below ``trials``, create one trial
    (``study.ask``) before releasing the lock. Counting and creating are therefore atomic
    across workers: two workers with ``trials=4`` run 4 trials in all. A running trial sends
    a heartbeat to the storage; a trial whose worker died (no heartbeat for the grace period,
    or its process is gone on this host) or was stopped with Ctrl-C is marked failed and
    re-enqueued with the same parameters and run name, and the next worker takes it first and
    resumes its run folder from the last checkpoint when that folder is on its machine.
    Failed trials do not count. A worker stops when the study holds ``trials`` finished
    trials; while the remaining ones run elsewhere it waits, so that it can take over a trial
    whose worker dies. Stopping and restarting ``grownet tune`` therefore resumes the study.

Outputs (``out``)
    ``trials/trial-NNNN/`` (each trial's run folder), ``trials.csv`` (one
    row per trial), ``pareto/trial-NNNN/architecture.json`` (each Pareto-optimal trial's net,
    taken from the storage, so any worker can write them), ``tune.html`` (Pareto plot and
    tables, linking each trial's run report). A storage URL's password never appears in
    logs, files or errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import logging
import math
import os
import re
import shutil
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .errors import ConfigError, DivergenceError, GrownetError, RunError, UsageError
from .files import atomic_write_text
from .runfolder import make_folder, remove_created
from .recipe import Recipe, load_recipe, resolve_recipe
from .validate import read_toml

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    import pandas as pd

__all__ = [
    "SEARCHED",
    "OBJECTIVES",
    "Param",
    "TuneSpace",
    "TrialRow",
    "TuneResult",
    "TuneReporter",
    "tune",
    "load_space",
    "tune_table",
    "make_sampler",
    "trial_rows",
    "trials_frame",
    "write_outputs",
    "mask_url",
]

logger = logging.getLogger(__name__)

#: Searched hyperparameters: ``[tune]`` key -> recipe key it sets.
SEARCHED: dict[str, str] = {
    "tau": "grow.tau",
    "ratio": "grow.ratio",
    "min_add": "grow.min_add",
    "local_epochs": "grow.local_epochs",
    "deepen": "grow.deepen",
    "kappa": "optim.kappa",
    "mu": "optim.mu",
    "lr": "optim.lr",
}
#: The study's objectives, in order: (name, direction).
OBJECTIVES = (("val_acc", "maximize"), ("macs", "minimize"))
_LOG_SCALE = frozenset({"kappa", "mu", "lr"})  # positive scale parameters: sampled uniformly in log
#: Default ranges: (low, high). local_epochs defaults to half to twice the recipe's value.
_DEFAULT_RANGES: dict[str, tuple[Any, Any]] = {
    "tau": (0.6, 0.95),
    "ratio": (1.05, 1.5),
    "min_add": (2, 16),
    "deepen": (True, False),
    "kappa": (0.5, 4.0),
    "mu": (10.0, 1000.0),
    "lr": (0.01, 0.2),
}
_ATTR = "grownet.tune"  # study user attribute holding the tune configuration
_RUN = "grownet.run"  # trial user attribute: run folder name (kept by retries)
_SAMPLERS = ("tpe", "nsga2", "random")
_HEARTBEAT = 30  # seconds between heartbeats of a running trial
_STATE_DONE = ("COMPLETE", "PRUNED")


# ---- the search space ------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: ``kind`` "float" / "int" sampled in ``[low, high]``
    (``log``: uniformly in log), or "bool" sampled from ``choices``. ``low == high`` or a
    single choice pins it."""

    name: str
    kind: str
    low: Any = None
    high: Any = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def path(self) -> str:
        """The recipe key it sets (``grow.tau``)."""
        return SEARCHED[self.name]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "bool":
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}

    def suggest(self, trial: "optuna.Trial") -> Any:
        if self.kind == "bool":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class TuneSpace:
    """The searched hyperparameters (one :class:`Param` per key of :data:`SEARCHED`)."""

    params: tuple[Param, ...]

    @classmethod
    def from_dict(cls, table: Mapping[str, Any] | None, *, recipe: Recipe) -> "TuneSpace":
        """Validate a ``[tune]`` table; keys left out take the defaults.

        A key's value is ``[low, high]`` (a range), a single value (pinned; not searched),
        or for ``deepen`` a list of booleans. Bounds must lie in the recipe key's own range.

        Raises:
            ConfigError: naming ``tune.<key>`` (and the bound's index) for an unknown key, a
                wrong type, ``low > high`` or a bound the recipe would reject.
        """
        if table is not None and not isinstance(table, Mapping):
            raise ConfigError(f"tune: must be a table of ranges, got {type(table).__name__}")
        table = dict(table or {})
        unknown = sorted(set(table) - set(SEARCHED))
        if unknown:
            raise ConfigError(f"tune.{unknown[0]}: unknown key (searched: {', '.join(SEARCHED)})")
        params = []
        for name in SEARCHED:
            value = table.get(name, _default_range(name, recipe))
            params.append(_param(name, value))
        return cls(tuple(params))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.to_dict() for p in self.params}

    def suggest(self, trial: "optuna.Trial") -> dict[str, Any]:
        """Sample every parameter; return ``{recipe key: value}`` overrides."""
        return {p.path: p.suggest(trial) for p in self.params}


def _default_range(name: str, recipe: Recipe) -> Any:
    if name == "local_epochs":
        e = recipe.grow.local_epochs
        return [max(1, math.ceil(e / 2)), 2 * e]
    return list(_DEFAULT_RANGES[name])


def _param(name: str, value: Any) -> Param:
    path = f"tune.{name}"
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError(f"{path}: must be a value or a non-empty list, got []")
    for i, v in enumerate(values):
        where = f"{path}[{i}]" if isinstance(value, (list, tuple)) else path
        section, key = SEARCHED[name].split(".")
        try:
            Recipe.from_dict({section: {key: v}})  # the recipe's own type and range check
        except ConfigError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise ConfigError(f"{where}: {reason}") from None
    kind = {"min_add": "int", "local_epochs": "int", "deepen": "bool"}.get(name, "float")
    if kind == "bool":
        return Param(name, "bool", choices=tuple(dict.fromkeys(bool(v) for v in values)))
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise ConfigError(f"{path}: must be [low, high] or a single value, got {len(values)} values")
    low, high = (int(v) if kind == "int" else float(v) for v in values)
    if low > high:
        raise ConfigError(f"{path}: low {low:g} is above high {high:g}")
    return Param(name, kind, low, high, log=name in _LOG_SCALE)


def tune_table(recipe_path: str | os.PathLike) -> dict[str, Any]:
    """The raw ``[tune]`` table of a recipe file (``{}`` when it has none).

    Raises:
        ConfigError: an unreadable file, invalid TOML, or a ``tune`` that is not a table.
    """
    path = Path(recipe_path)
    table = read_toml(path, error=ConfigError, what=" recipe", missing="recipe file not found").get("tune", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: tune: must be a table of ranges")
    return table


def load_space(recipe_path: str | os.PathLike | None, *, recipe: Recipe | None = None) -> TuneSpace:
    """The search space of a recipe file's ``[tune]`` table (defaults for missing keys, or
    when ``recipe_path`` is None). ``recipe`` is the resolved recipe (default: the file's)."""
    if recipe_path is None:
        return TuneSpace.from_dict(None, recipe=recipe or Recipe())
    table = tune_table(recipe_path)
    try:
        return TuneSpace.from_dict(table, recipe=recipe or load_recipe(recipe_path))
    except ConfigError as exc:
        raise ConfigError(f"{recipe_path}: {exc}") from None


# ---- storage URLs --------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (safe for logs, files and errors)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: mask anything between "user:" and "@"
        return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", str(url))


def _scrub(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with the URL and its password masked."""
    text = str(text).replace(url, mask_url(url))
    try:
        from urllib.parse import quote

        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:  # noqa: BLE001
        password = None
    if password:
        for form in {str(password), quote(str(password), safe="")}:
            text = text.replace(form, "***")
    return text


def _with_driver(url: str) -> str:
    """``postgresql://`` URLs name no driver; SQLAlchemy 2.1 then wants psycopg 3, 2.0
    psycopg2. Use whichever of the two is installed (psycopg 3 first)."""
    import importlib.util

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.drivername == "postgresql":
        for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return u.set(drivername=driver).render_as_string(hide_password=False)
    return url


def _default_storage(out: Path) -> str:
    return f"sqlite:///{out.resolve() / 'study.db'}"


class _StudyLock:
    """A lock shared by every worker of one study: ``pg_advisory_lock`` on PostgreSQL,
    ``GET_LOCK`` on MySQL, an ``fcntl`` lock on ``<db>.lock`` beside an SQLite file. Other
    storages get no lock (the trial total may then be passed by up to one trial per extra
    worker)."""

    def __init__(self, url: str, study_name: str) -> None:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        self.dialect = u.get_backend_name()
        digest = hashlib.sha256(f"grownet.tune:{study_name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self.name = "grownet:" + digest.hex()[:40]
        self.path: Path | None = None
        self.engine: Any = None
        if self.dialect == "sqlite":
            if u.database and u.database != ":memory:":
                self.path = Path(u.database + ".lock")
        elif self.dialect in ("postgresql", "mysql", "mariadb"):
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            self.engine = create_engine(_with_driver(url), poolclass=NullPool)
        else:
            logger.warning("storage %s: no study lock for this database; with several workers the trial total "
                           "may be passed by a few trials", mask_url(url))

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.path is not None:
            with open(self.path, "a+") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        elif self.engine is not None:
            from sqlalchemy import text

            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
                    unlock = text("SELECT pg_advisory_unlock(:k)"), {"k": self.key}
                else:
                    conn.execute(text("SELECT GET_LOCK(:n, -1)"), {"n": self.name})
                    unlock = text("SELECT RELEASE_LOCK(:n)"), {"n": self.name}
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(*unlock)
                    conn.commit()
        else:
            yield

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


# ---- samplers ------------------------------------------------------------------------------------


def make_sampler(kind: str = "tpe", *, seed: int = 0) -> "optuna.samplers.BaseSampler":
    """The study's sampler: ``tpe`` (multivariate, multi-objective TPE with the constant
    liar, so workers running at once spread out), ``nsga2`` or ``random``. A fresh sampler
    of that kind serves each trial, seeded from ``(seed, trial number)``."""
    import optuna

    if kind not in _SAMPLERS:
        raise UsageError(f"--sampler: must be one of {', '.join(_SAMPLERS)}, got {kind!r}")

    class _TrialSeeded(optuna.samplers.BaseSampler):
        """A fresh ``kind`` sampler per trial, seeded from (seed, trial number). Trial numbers
        are unique across workers, so workers sharing a study never draw the same random
        points, and one worker's study is reproducible."""

        def __init__(self) -> None:
            self._inner: dict[int, optuna.samplers.BaseSampler] = {}

        def _for(self, trial: Any) -> optuna.samplers.BaseSampler:
            if trial.number not in self._inner:
                import numpy as np

                s = int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    if kind == "tpe":
                        inner = optuna.samplers.TPESampler(seed=s, multivariate=True, constant_liar=True)
                    elif kind == "nsga2":
                        inner = optuna.samplers.NSGAIISampler(seed=s)
                    else:
                        inner = optuna.samplers.RandomSampler(seed=s)
                self._inner[trial.number] = inner
            return self._inner[trial.number]

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._for(trial).after_trial(study, trial, state, values)
            self._inner.pop(trial.number, None)

        def reseed_rng(self) -> None:  # seeds derive from trial numbers; nothing to reseed
            pass

    return _TrialSeeded()


# ---- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRow:
    """One trial as plain data (from the storage only).

    ``val_acc``/``test_acc`` are fractions; ``macs``/``n_params`` of the final net;
    ``wall_time`` in seconds; ``params`` the sampled hyperparameters by ``[tune]`` key.
    """

    number: int
    state: str
    pareto: bool
    val_acc: float | None
    macs: float | None
    test_acc: float | None
    n_params: float | None
    train_flops: float | None
    wall_time: float | None
    rounds: int | None
    epochs: int | None
    params: Mapping[str, Any]
    run: str | None
    host: str | None
    run_dir: str | None
    widths: str | None
    error: str | None
    architecture: Mapping[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TuneResult:
    """What :func:`tune` leaves: the output folder, the study's (masked) storage URL and
    name, every trial, the Pareto-optimal ones, and the written files."""

    out: Path
    storage: str
    study_name: str
    trials: tuple[TrialRow, ...]
    pareto: tuple[TrialRow, ...]
    ran: tuple[int, ...]
    paths: Mapping[str, Path]

    def frame(self) -> "pd.DataFrame":
        """The trials table (:func:`trials_frame`)."""
        return trials_frame(self.trials)


def trial_rows(study: "optuna.Study") -> list[TrialRow]:
    """Every trial of ``study`` as a :class:`TrialRow`, by trial number."""
    front = {t.number for t in study.best_trials}
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        values = t.values or [None, None]
        rows.append(TrialRow(
            number=t.number, state=t.state.name, pareto=t.number in front,
            val_acc=values[0], macs=values[1], test_acc=a.get("test_acc"), n_params=a.get("params"),
            train_flops=a.get("train_flops"), wall_time=a.get("wall_time"), rounds=a.get("rounds"), epochs=a.get("epochs"),
            params={k: t.params[k] for k in SEARCHED if k in t.params}, run=a.get(_RUN), host=a.get("host"),
            run_dir=a.get("run_dir"), widths=a.get("widths"), error=a.get("error"), architecture=a.get("architecture"),
        ))
    return rows


def trials_frame(rows: Sequence[TrialRow]) -> "pd.DataFrame":
    """The trials table: one row per trial; columns number, state, pareto, val_acc, macs,
    test_acc, n_params, train_flops, wall_time (s), rounds, epochs, one column per
    :data:`SEARCHED` key, widths, run, host, run_dir, error."""
    import pandas as pd

    cols = ["number", "state", "pareto", "val_acc", "macs", "test_acc", "n_params", "train_flops", "wall_time", "rounds",
            "epochs", *SEARCHED, "widths", "run", "host", "run_dir", "error"]
    data = [{**{c: getattr(r, c) for c in cols if c not in SEARCHED}, **{k: r.params.get(k) for k in SEARCHED}} for r in rows]
    return pd.DataFrame(data, columns=cols)


# ---- progress ------------------------------------------------------------------------------------


class TuneReporter:
    """Progress hooks of :func:`tune` (no-ops here; the CLI prints lines). A hook must not
    raise, except KeyboardInterrupt to stop the tune (the trial is then retried later)."""

    def trial_start(self, number: int, params: Mapping[str, Any], *, resumed: bool) -> None: ...

    def search_reporter(self, number: int) -> Any:
        """A :class:`grownet.search.Reporter` for trial ``number``'s search (None: logs only)."""
        return None

    def trial_end(self, row: TrialRow) -> None: ...

    def waiting(self, running: int) -> None: ...


# ---- the study -----------------------------------------------------------------------------------


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
    heartbeat: int = _HEARTBEAT,
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
        command: command line recorded in each trial's config.json (mask passwords first).

    Returns:
        :class:`TuneResult`.

    Raises:
        UsageError: bad arguments. RunError: the storage cannot be opened, or the study was
        started with another configuration. ConfigError, DataError: from the trials' searches.
    """
    import optuna

    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 0:
        raise UsageError(f"--trials: must be a non-negative integer (the study's total), got {trials!r}")
    if sampler is not None and sampler not in _SAMPLERS:
        raise UsageError(f"--sampler: must be one of {', '.join(_SAMPLERS)}, got {sampler!r}")
    if not isinstance(heartbeat, int) or isinstance(heartbeat, bool) or heartbeat < 1:
        raise UsageError(f"heartbeat: must be a positive number of seconds, got {heartbeat!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise UsageError(f"--seed: must be a non-negative integer, got {seed!r}")
    out_path = Path(out) if out is not None else _default_out(dataset or "cifar10")
    created = make_folder(out_path)
    url = storage or _default_storage(out_path)
    safe_url = mask_url(url)
    reporter = reporter or TuneReporter()

    try:
        rdb = _open_storage(url, heartbeat)
    except BaseException:
        remove_created(created)  # a storage that cannot be opened leaves no folder behind
        raise
    lock: _StudyLock | None = None
    try:
        name = study_name or _default_study_name(rdb, dataset)
        lock = _StudyLock(url, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            with lock.hold():
                study = _load_study(rdb, name, url)
                config = _study_config(study, dataset=dataset, recipe=recipe, space=space, overrides=overrides, seed=seed,
                                       sampler=sampler, name=name, safe_url=safe_url)
            study.sampler = make_sampler(config["sampler"], seed=config["seed"])
            worker = _Worker(study, rdb, lock, config, out=out_path, data_dir=data_dir, device=device, heartbeat=heartbeat,
                             reporter=reporter, command=command, safe_url=safe_url)
            ran = worker.run(trials)
            rows = trial_rows(study)
            paths = write_outputs(study, out_path, storage_label=safe_url)
    except GrownetError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - storage/driver errors may quote the URL
        if _is_storage_error(exc):
            raise RunError(f"study storage {safe_url}: {_scrub(_one_line(exc), url)}") from None
        raise
    finally:
        if lock is not None:
            lock.close()
        _dispose(rdb)
    return TuneResult(out=out_path, storage=safe_url, study_name=name, trials=tuple(rows),
                      pareto=tuple(r for r in rows if r.pareto), ran=tuple(ran), paths=paths)


def _default_study_name(rdb: Any, dataset: str | None) -> str:
    """``grownet-<dataset>``; without a dataset, the storage's only study if it has one."""
    if dataset is None:
        names = [s.study_name for s in rdb.get_all_studies()]
        if len(names) == 1:
            return names[0]
    return f"grownet-{re.sub(r'[^A-Za-z0-9_.-]+', '-', dataset or 'cifar10').strip('-')}"


def _default_out(dataset: str) -> Path:
    from .search import default_out

    d = default_out(dataset)
    return d.with_name(f"tune-{d.name}")


def _is_storage_error(exc: BaseException) -> bool:
    mod = type(exc).__module__ or ""
    return mod.startswith(("sqlalchemy", "psycopg", "pymysql", "MySQLdb", "sqlite3", "optuna.exceptions", "alembic"))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _open_storage(url: str, heartbeat: int) -> "optuna.storages.RDBStorage":
    """An RDBStorage with heartbeats. Workers starting together on a new database create
    its tables one at a time (under a database-wide lock). Failures become RunError with
    the URL masked."""
    import optuna

    safe = mask_url(url)
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        dialect = parsed.get_backend_name()
    except Exception:  # noqa: BLE001
        raise UsageError(f"--storage: {safe} is not a database URL (e.g. sqlite:///study.db or "
                         f"postgresql://user@host/db)") from None
    try:
        parsed.get_dialect()
    except Exception:  # noqa: BLE001 - sqlalchemy's NoSuchModuleError
        raise UsageError(f"--storage: {safe}: unknown database {parsed.drivername!r}; use sqlite:///FILE.db, or "
                         f"postgresql://user@host/db with psycopg2-binary installed") from None
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if dialect == "sqlite":
        kwargs = {"connect_args": {"timeout": 60}}
    schema: _StudyLock | None = None
    try:
        schema = _StudyLock(url, "")
        with schema.hold(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                _with_driver(url), engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=4 * heartbeat,
                heartbeat_stale_trial_callback=_retry_stale,
            )
    except GrownetError:
        raise
    except Exception as exc:  # noqa: BLE001 - driver errors (ImportError for a missing driver too)
        text = f"{type(exc).__name__} {exc}"
        hint = ""
        if isinstance(exc, ImportError) or "No module named" in text or "Can't load plugin" in text:
            hint = " (install its driver, e.g. pip install psycopg2-binary for postgresql)"
        raise RunError(f"cannot open study storage {safe}: {_scrub(_one_line(exc), url)}{hint}") from None
    finally:
        if schema is not None:
            schema.close()


def _dispose(rdb: Any) -> None:
    with contextlib.suppress(Exception):
        rdb.remove_session()
        rdb.engine.dispose()


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
    from . import __version__

    stored = study.user_attrs.get(_ATTR)
    own = Recipe.from_dict(stored["recipe"]) if stored and recipe is None else None
    base = resolve_recipe(recipe, overrides, own)
    if isinstance(space, TuneSpace):
        tspace = space
    elif space is not None:
        tspace = TuneSpace.from_dict(space, recipe=base)
    elif recipe is not None and not isinstance(recipe, Recipe):
        tspace = load_space(recipe, recipe=base)
    elif stored:
        tspace = _space_from_stored(stored["space"])
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
        study.set_user_attr(_ATTR, {**mine, "grownet_version": __version__})
        return mine
    for key in ("dataset", "seed", "sampler"):
        if mine[key] != stored.get(key):
            raise RunError(f"study {name!r} in {safe_url} was started with {key} {stored.get(key)!r}, not {mine[key]!r}; "
                           f"use its settings or another --study-name")
    diff = Recipe.from_dict(stored["recipe"]).diff(Recipe.from_dict(mine["recipe"]))
    if diff:
        k = diff[0]
        raise RunError(f"study {name!r} in {safe_url} was started with another recipe ({k} = "
                       f"{Recipe.from_dict(stored['recipe']).get(k)!r}, now {Recipe.from_dict(mine['recipe']).get(k)!r}); "
                       f"use the study's recipe or another --study-name")
    if mine["space"] != stored["space"]:
        k = next(k for k in SEARCHED if mine["space"].get(k) != stored["space"].get(k))
        raise RunError(f"study {name!r} in {safe_url} was started with another search space (tune.{k} = "
                       f"{stored['space'].get(k)}, now {mine['space'].get(k)}); use the study's or another --study-name")
    return mine


def _space_from_stored(data: Mapping[str, Any]) -> TuneSpace:
    params = []
    for name in SEARCHED:
        d = data[name]
        if "choices" in d:
            params.append(Param(name, "bool", choices=tuple(d["choices"])))
        else:
            kind = "int" if isinstance(d["low"], int) and name in ("min_add", "local_epochs") else "float"
            params.append(Param(name, kind, d["low"], d["high"], log=bool(d["log"])))
    return TuneSpace(tuple(params))


# ---- the worker ----------------------------------------------------------------------------------


def _retry(study: "optuna.Study", trial: Any, *, why: str) -> None:
    """Re-enqueue a failed trial: same parameters, same run folder name (so a worker that
    has that folder resumes it from its last checkpoint)."""
    run = trial.user_attrs.get(_RUN) or f"trial-{trial.number:04d}"
    study.enqueue_trial(dict(trial.params), user_attrs={_RUN: run, "retry_of": trial.number}, skip_if_exists=False)
    logger.warning("trial %d %s; enqueued again (run %s)", trial.number, why, run)


def _retry_stale(study: "optuna.Study", trial: Any) -> None:
    _retry(study, trial, why="lost its worker (no heartbeat)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Heartbeat:
    """A thread that records a trial's heartbeat every ``interval`` seconds."""

    def __init__(self, rdb: Any, trial_id: int, interval: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(rdb, trial_id, interval), daemon=True,
                                        name="grownet-tune-heartbeat")

    def _beat(self, rdb: Any, trial_id: int, interval: int) -> None:
        while True:
            try:
                rdb.record_heartbeat(trial_id)
            except Exception as exc:  # noqa: BLE001 - keep beating; the storage may come back
                logger.warning("heartbeat failed: %s", type(exc).__name__)
            if self._stop.wait(interval):
                return

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class _Worker:
    def __init__(self, study: "optuna.Study", rdb: Any, lock: _StudyLock, config: Mapping[str, Any], *, out: Path,
                 data_dir: Any, device: str, heartbeat: int, reporter: TuneReporter, command: str | None,
                 safe_url: str) -> None:
        self.study, self.rdb, self.lock, self.config = study, rdb, lock, config
        self.out, self.data_dir, self.device, self.heartbeat = out, data_dir, device, heartbeat
        self.reporter, self.command, self.safe_url = reporter, command, safe_url
        self.recipe = Recipe.from_dict(config["recipe"])
        self.space = _space_from_stored(config["space"])
        self.host = socket.gethostname()

    def run(self, total: int) -> list[int]:
        """Claim and run trials until the study holds ``total`` finished ones; return the
        numbers this worker finished."""
        ran: list[int] = []
        waited = False
        while True:
            trial, done, running = self._claim(total)
            if trial is None:
                if done >= total or running == 0:
                    return ran
                if not waited:
                    logger.info("%d of %d trials finished; waiting for %d running on other workers", done, total, running)
                    self.reporter.waiting(running)
                    waited = True
                time.sleep(max(1.0, min(self.heartbeat, 10)))
                continue
            waited = False
            if self._run_trial(trial):
                ran.append(trial.number)
            write_outputs(self.study, self.out, storage_label=self.safe_url)

    def _claim(self, total: int) -> tuple[Any, int, int]:
        """Under the study lock: fail dead trials (re-enqueued), count, ask one trial if the
        total is not reached. Returns (trial or None, finished, running)."""
        import optuna
        from optuna.trial import TrialState

        with self.lock.hold():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            self._fail_local_dead()
            trials = self.study.get_trials(deepcopy=False)
            done = sum(t.state.name in _STATE_DONE for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if done + running >= total:
                return None, done, running
            with warnings.catch_warnings():  # heartbeats are sent by _Heartbeat, not by Study.optimize
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = self.study.ask()
            trial.set_user_attr("host", self.host)
            trial.set_user_attr("pid", os.getpid())
            if _RUN not in trial.user_attrs:
                trial.set_user_attr(_RUN, f"trial-{trial.number:04d}")
            return trial, done, running + 1

    def _fail_local_dead(self) -> None:
        """Trials running on this host under a process that no longer exists: fail and retry
        them now instead of waiting for their heartbeat to go stale."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            pid = t.user_attrs.get("pid")
            if t.user_attrs.get("host") == self.host and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid):
                try:
                    self.study.tell(t.number, state=TrialState.FAIL)
                except Exception:  # noqa: BLE001 - another worker got there first
                    continue
                _retry(self.study, t, why=f"lost its worker (process {pid} on {self.host} is gone)")

    def _run_trial(self, trial: "optuna.Trial") -> bool:
        """Run one claimed trial to its end; tell the study. Returns whether it finished."""
        from optuna.trial import TrialState

        from .search import SearchInterrupted, search

        overrides = self.space.suggest(trial)
        run_name = trial.user_attrs[_RUN]
        run_dir = self.out / "trials" / run_name
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        resume = _has_checkpoint(run_dir)
        force = run_dir.exists() and not resume
        params = {k: trial.params[k] for k in SEARCHED if k in trial.params}
        logger.info("trial %d (%s): %s%s", trial.number, run_name, _params_text(params), " (resuming)" if resume else "")
        self.reporter.trial_start(trial.number, params, resumed=resume)
        trial_id = self.rdb.get_trial_id_from_study_id_trial_number(self.rdb.get_study_id_from_name(self.study.study_name),
                                                                   trial.number)
        try:
            with _Heartbeat(self.rdb, trial_id, self.heartbeat):
                result = search(
                    self.config["dataset"], recipe=self.recipe, overrides=overrides, out=run_dir, data_dir=self.data_dir,
                    seed=int(self.config["seed"]), device=self.device, resume=resume, force=force,
                    reporter=self.reporter.search_reporter(trial.number),
                    command=self.command or f"grownet.tune.tune(..., storage={self.safe_url!r})",
                )
        except DivergenceError as exc:
            trial.set_user_attr("error", str(exc))
            return self._tell(trial, state=TrialState.PRUNED)
        except (SearchInterrupted, KeyboardInterrupt):
            self._fail(trial, "was interrupted", retry=True)
            raise
        except GrownetError as exc:  # a problem every trial would hit (data, config): stop the tune
            trial.set_user_attr("error", str(exc))
            self._fail(trial, "failed", retry=False)
            raise
        except BaseException as exc:
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", f"{type(exc).__name__}: {_one_line(exc)}")
            self._fail(trial, f"crashed ({type(exc).__name__})", retry=True)
            raise
        for key, value in (("test_acc", result.test_acc), ("params", result.params), ("train_flops", result.train_flops),
                           ("wall_time", result.wall_time), ("rounds", result.rounds), ("epochs", result.epochs),
                           ("architecture", _arch_dict(result.arch)), ("widths", _widths_text(result.arch))):
            trial.set_user_attr(key, value)
        return self._tell(trial, values=[float(result.val_acc), float(result.macs)])

    def _tell(self, trial: Any, **kw: Any) -> bool:
        import optuna

        try:
            frozen = self.study.tell(trial, **kw)
        except optuna.exceptions.UpdateFinishedTrialError:
            logger.warning("trial %d was taken over by another worker while it ran (its heartbeat went stale); "
                           "this result is discarded", trial.number)
            return False
        row = next(r for r in trial_rows(self.study) if r.number == frozen.number)
        logger.info("trial %d %s: val acc %s, %s MACs", frozen.number, frozen.state.name.lower(),
                    "-" if row.val_acc is None else f"{row.val_acc:.4f}", "-" if row.macs is None else f"{row.macs / 1e6:.3f}M")
        self.reporter.trial_end(row)
        return True

    def _fail(self, trial: Any, why: str, *, retry: bool) -> None:
        import optuna
        from optuna.trial import TrialState

        with contextlib.suppress(Exception), self.lock.hold():
            try:
                frozen = self.study.tell(trial, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                return
            if retry:
                _retry(self.study, frozen, why=why)
            else:
                logger.error("trial %d %s; not retried", frozen.number, why)


def _has_checkpoint(run_dir: Path) -> bool:
    from .runfolder import RunFolder

    return RunFolder(run_dir).has_checkpoint()


def _arch_dict(arch: Any) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(arch.to_dict(), default=str))


def _widths_text(arch: Any) -> str:
    return " | ".join(" ".join(str(w) for w in ws) for ws in _stage_widths(arch))


def _stage_widths(arch: Any) -> list[list[int]]:
    widths = arch.layer_widths()
    out: list[list[int]] = []
    for s in range(arch.num_stages):
        out.append([widths[layer] for layer in arch.stage_layers(s) if layer in widths])
    return out


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


# ---- outputs -------------------------------------------------------------------------------------


def write_outputs(study: "optuna.Study", out: str | os.PathLike, *, storage_label: str = "") -> dict[str, Path]:
    """Write ``trials.csv``, ``pareto/trial-NNNN/architecture.json`` and ``tune.html`` for
    ``study`` into ``out``; return their paths (``{"csv", "html", "pareto"}``).
    ``storage_label`` is shown on the page (pass a masked URL)."""
    from .arch import Architecture

    out = Path(out)
    rows = trial_rows(study)
    buf = io.StringIO()
    trials_frame(rows).to_csv(buf, index=False)
    csv_path = out / "trials.csv"
    atomic_write_text(csv_path, buf.getvalue())
    pareto_dir = out / "pareto"
    keep = set()
    for r in rows:
        if r.pareto and r.architecture:
            name = f"trial-{r.number:04d}"
            keep.add(name)
            (pareto_dir / name).mkdir(parents=True, exist_ok=True)
            Architecture.from_dict(r.architecture).save(pareto_dir / name / "architecture.json")
    if pareto_dir.is_dir():
        for old in pareto_dir.iterdir():
            if re.fullmatch(r"trial-\d{4,}", old.name) and old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
    html_path = out / "tune.html"
    atomic_write_text(html_path, render_page(rows, out=out, study_name=study.study_name, storage_label=storage_label,
                                             config=study.user_attrs.get(_ATTR) or {}))
    return {"csv": csv_path, "html": html_path, "pareto": pareto_dir}


def render_page(rows: Sequence[TrialRow], *, out: Path, study_name: str, storage_label: str,
                config: Mapping[str, Any]) -> str:
    """The study page: Pareto plot (validation accuracy against MACs), the Pareto table
    linking each trial's run report and architecture, every trial, the search space."""
    from . import __version__
    from .report import ModelPoint
    from .report._format import duration, pct, si
    from .report._html import esc, figure, join, page, render, section, table
    from .report._plots import accuracy_macs_figure

    done = [r for r in rows if r.state == "COMPLETE"]
    points = [ModelPoint(name="grown" if r.pareto else "trial", label=f"#{r.number}" if r.pareto else "",
                         val_acc=r.val_acc, test_acc=r.test_acc, macs=r.macs, params=r.n_params,
                         train_flops=r.train_flops, wall_time=r.wall_time, epochs=r.epochs) for r in done]
    fig = figure(accuracy_macs_figure(points, metric="val_acc", front=[r.pareto for r in done],
                                      title="Validation accuracy vs inference MACs"),
                 alt="Validation accuracy against MACs of every finished trial; stars mark the Pareto front", css="half")

    def link(r: TrialRow, text: str) -> Any:
        """The trial's run report; its run folder when there is no report; where it ran when
        the folder is on another worker's machine."""
        if not r.run:
            return esc(None)
        folder = out / "trials" / r.run
        if (folder / "report.html").is_file():
            return render('<a href="$h">$t</a>', h=f"trials/{r.run}/report.html", t=text)
        if folder.is_dir():
            return render('<a href="$h">$t</a>', h=f"trials/{r.run}/", t=r.run)
        return esc(f"{r.run} on {r.host}" if r.host else r.run)

    def arch_link(r: TrialRow) -> Any:
        if (out / "pareto" / f"trial-{r.number:04d}" / "architecture.json").is_file():
            return render('<a href="$h">$t</a>', h=f"pareto/trial-{r.number:04d}/architecture.json", t="architecture.json")
        return esc(None)

    names = list(SEARCHED)
    front = sorted((r for r in rows if r.pareto), key=lambda r: (r.macs or 0))
    pareto_table = table(
        ["trial", "val acc", "MACs", "test acc", "params", "widths", "report", "architecture", *names],
        [[r.number, pct(r.val_acc), si(r.macs), pct(r.test_acc), si(r.n_params), r.widths, link(r, "report"),
          arch_link(r), *(_fmt(r.params.get(k)) for k in names)] for r in front],
        numeric=(0, 1, 2, 3, 4),
    )
    all_table = table(
        ["trial", "state", "Pareto", "val acc", "MACs", "test acc", "time", "rounds", *names, "run", "note"],
        [[r.number, r.state.lower(), "yes" if r.pareto else "", pct(r.val_acc), si(r.macs), pct(r.test_acc),
          duration(r.wall_time), r.rounds, *(_fmt(r.params.get(k)) for k in names), link(r, r.run or ""),
          r.error] for r in rows],
        numeric=(0, 3, 4, 5, 6, 7),
    )
    space = config.get("space") or {}
    space_rows = []
    for k in names:
        d = space.get(k) or {}
        rng = ", ".join(map(str, d["choices"])) if "choices" in d else (
            f"[{d.get('low')}, {d.get('high')}]" + (" (log)" if d.get("log") else "") if d else None)
        space_rows.append([k, SEARCHED[k], rng])
    counts = {s: sum(r.state == s for r in rows) for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")}
    subtitle = (f"{config.get('dataset', '?')}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned (diverged), "
                f"{counts['RUNNING']} running, {counts['FAIL']} failed (retried); storage {storage_label}")
    body = join([
        section("pareto", "Pareto front", join([fig, pareto_table]),
                intro="Objectives: validation accuracy (maximised) and inference MACs per image (minimised). Stars: "
                      "Pareto-optimal trials (no other trial is at least as accurate with at most as many MACs)."),
        section("trials", "All trials", all_table),
        section("space", "Search space", table(["key", "recipe key", "range"], space_rows),
                intro=f"Sampler {config.get('sampler', '?')} seeded with {config.get('seed', '?')} (per trial number)."),
    ])
    return page(f"grownet tune: {study_name}", subtitle=subtitle,
                nav=[("pareto", "Pareto front"), ("trials", "All trials"), ("space", "Search space")],
                body=body, footer=f"grownet {__version__}; regenerate with grownet tune --trials 0 (same --storage, "
                                  f"--study-name and --out)")


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


"""A worker: claim a trial under the study lock, run its search, tell the study; retry
trials whose worker died or was stopped.

Retries use optuna's own :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (the
trial is re-created as waiting with the same parameters; optuna records the trial it
retries), for trials with a stale heartbeat (through the storage's callback), trials whose
process is gone on this host, and trials stopped with Ctrl-C or a crash. Of the failed
trial's user attributes only its run folder name is kept, so the retry resumes that folder.

The heartbeat of a running trial is a thread of this module, not optuna's: optuna starts its
heartbeat thread only inside ``Study.optimize`` (its ``_heartbeat`` module is private), which
claims trials without the study lock, and its thread ends at the first storage error; this
one logs the error and keeps beating, so a database that is away for less than the grace
period does not cost a running trial.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import DivergenceError, GrownetError
from ..recipe import Recipe
from ._results import RUN_ATTR, TrialRow, trial_rows, write_outputs
from ._space import SEARCHED, TuneSpace
from ._storage import StudyLock, one_line

if TYPE_CHECKING:  # pragma: no cover
    import optuna

logger = logging.getLogger("grownet.tune")

#: Trial states that count as finished (pruned: the search diverged).
_STATE_DONE = ("COMPLETE", "PRUNED")


class TuneReporter:
    """Progress hooks of :func:`grownet.tune.tune` (no-ops here; the CLI prints lines). A
    hook must not raise, except KeyboardInterrupt to stop the tune (the trial is then
    retried later)."""

    def trial_start(self, number: int, params: Mapping[str, Any], *, resumed: bool) -> None: ...

    def search_reporter(self, number: int) -> Any:
        """A :class:`grownet.search.Reporter` for trial ``number``'s search (None: logs only)."""
        return None

    def trial_end(self, row: TrialRow) -> None: ...

    def waiting(self, running: int) -> None: ...


# ---- retries -----------------------------------------------------------------------------------------


def retry(study: "optuna.Study", trial: Any, *, why: str) -> None:
    """Re-enqueue the failed ``trial`` with optuna's RetryHeartbeatStaleTrialCallback: same
    parameters, same run folder name (a worker that has that folder resumes it from its last
    checkpoint); ``why`` is logged."""
    import optuna

    run = trial.user_attrs.get(RUN_ATTR) or f"trial-{trial.number:04d}"
    kept = copy.copy(trial)
    kept.user_attrs = {RUN_ATTR: run}  # not its host, pid, error or run_dir: the retry sets its own
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, kept)
    logger.warning("trial %d %s; enqueued again (run %s)", trial.number, why, run)


def retry_stale(study: "optuna.Study", trial: Any) -> None:
    """The storage's callback for a trial whose heartbeat went stale."""
    retry(study, trial, why="lost its worker (no heartbeat)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Heartbeat:
    """A thread that records a trial's heartbeat every ``interval`` seconds, through storage
    errors (see the module's docstring)."""

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


# ---- the worker --------------------------------------------------------------------------------------


class Worker:
    """Claims and runs trials of one study until it holds a given number of finished ones."""

    def __init__(self, study: "optuna.Study", rdb: Any, lock: StudyLock, config: Mapping[str, Any], *, out: Path,
                 data_dir: Any, device: str, heartbeat: int, reporter: TuneReporter, command: str | None,
                 safe_url: str) -> None:
        self.study, self.rdb, self.lock, self.config = study, rdb, lock, config
        self.out, self.data_dir, self.device, self.heartbeat = out, data_dir, device, heartbeat
        self.reporter, self.command, self.safe_url = reporter, command, safe_url
        self.recipe = Recipe.from_dict(config["recipe"])
        self.space = TuneSpace.from_stored(config["space"])
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
            if RUN_ATTR not in trial.user_attrs:
                trial.set_user_attr(RUN_ATTR, f"trial-{trial.number:04d}")
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
                retry(self.study, t, why=f"lost its worker (process {pid} on {self.host} is gone)")

    def _run_trial(self, trial: "optuna.Trial") -> bool:
        """Run one claimed trial to its end; tell the study. Returns whether it finished."""
        from optuna.trial import TrialState

        from ..search import SearchInterrupted, search

        overrides = self.space.suggest(trial)
        run_name = trial.user_attrs[RUN_ATTR]
        run_dir = self.out / "trials" / run_name
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        resume = _has_checkpoint(run_dir)
        force = run_dir.exists() and not resume
        params = {k: trial.params[k] for k in SEARCHED if k in trial.params}
        logger.info("trial %d (%s): %s%s", trial.number, run_name, _params_text(params), " (resuming)" if resume else "")
        self.reporter.trial_start(trial.number, params, resumed=resume)
        study_id = self.rdb.get_study_id_from_name(self.study.study_name)
        trial_id = self.rdb.get_trial_id_from_study_id_trial_number(study_id, trial.number)
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
            self._fail(trial, "was interrupted", retry_it=True)
            raise
        except GrownetError as exc:  # a problem every trial would hit (data, config): stop the tune
            trial.set_user_attr("error", str(exc))
            self._fail(trial, "failed", retry_it=False)
            raise
        except BaseException as exc:
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", f"{type(exc).__name__}: {one_line(exc)}")
            self._fail(trial, f"crashed ({type(exc).__name__})", retry_it=True)
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

    def _fail(self, trial: Any, why: str, *, retry_it: bool) -> None:
        import optuna
        from optuna.trial import TrialState

        with contextlib.suppress(Exception), self.lock.hold():
            try:
                frozen = self.study.tell(trial, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                return
            if retry_it:
                retry(self.study, frozen, why=why)
            else:
                logger.error("trial %d %s; not retried", frozen.number, why)


def _has_checkpoint(run_dir: Path) -> bool:
    from ..runfolder import RunFolder

    return RunFolder(run_dir).has_checkpoint()


def _arch_dict(arch: Any) -> dict[str, Any]:
    return json.loads(json.dumps(arch.to_dict(), default=str))


def _widths_text(arch: Any) -> str:
    widths = arch.layer_widths()
    stages = [[widths[layer] for layer in arch.stage_layers(s) if layer in widths] for s in range(arch.num_stages)]
    return " | ".join(" ".join(str(w) for w in ws) for ws in stages)


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())

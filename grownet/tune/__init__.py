"""Hyperparameter tuning: an optuna study whose trials are grownet searches.

Each trial samples the growing hyperparameters of :data:`SEARCHED` from a :class:`TuneSpace`
(the recipe's ``[tune]`` table, or the defaults; the keys of :data:`OPTIONAL` only where the
table names them), runs :func:`grownet.search.search` under the
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
    re-enqueued by optuna's ``RetryHeartbeatStaleTrialCallback`` with the same parameters and
    run name, and the next worker takes it first and resumes its run folder from the last
    checkpoint when that folder is on its machine. Failed trials do not count. A worker stops
    when the study holds ``trials`` finished trials; while the remaining ones run elsewhere it
    waits, so that it can take over a trial whose worker dies. Stopping and restarting
    ``grownet tune`` therefore resumes the study.

Outputs (``out``)
    ``trials/trial-NNNN/`` (each trial's run folder), ``trials.csv`` (one
    row per trial), ``pareto/trial-NNNN/architecture.json`` (each Pareto-optimal trial's net,
    taken from the storage, so any worker can write them), ``tune.html`` (Pareto plot and
    tables, linking each trial's run report). A storage URL's password never appears in
    logs, files or errors (:func:`mask_url`).

Modules: ``_space`` (the search space), ``_sampler`` (per-trial seeded samplers),
``_storage`` (URL masking, opening the storage, the study lock), ``_worker`` (claiming,
running and retrying trials), ``_results`` (trial records and the written files),
``_page`` (``tune.html``), ``_study`` (:func:`tune`).
"""

from __future__ import annotations

from ._results import TrialRow, TuneResult, trial_rows, trials_frame, write_outputs
from ._sampler import make_sampler
from ._space import OBJECTIVES, OPTIONAL, SEARCHED, Param, TuneSpace, load_space, tune_table
from ._storage import mask_url
from ._study import tune
from ._worker import TuneReporter

__all__ = [
    "OPTIONAL",
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

"""Run folders: the one layout every job writes and every reader reads.

Layout::

    config.json  architecture.json  weights.pt  history.csv  rounds.json  summary.json
    grownet.log  report.html  checkpoints/  controls/<name>/  .lock (while a process writes it)

- writing: :class:`RunFolder` (paths, atomic JSON/CSV writers, checkpoints with a SHA-256
  manifest, ``--force`` replacement) and :class:`RunLock` (one writer at a time);
- a job's folder: :func:`job_folder` (create, lock, check, log, RNG scope, clean up after a
  refused start), used by search, baseline and ticket;
- reading: :func:`load_run` / :func:`load_control` into :class:`RunRecord` /
  :class:`ControlRecord` (what the report, the controls and compare read), with
  :func:`read_config`, :func:`read_json` and :func:`read_history` (every file through
  :mod:`grownet.validate`).
"""

from __future__ import annotations

from ._folder import HISTORY_COLUMNS, RunFolder, RunLock, make_folder, remove_created, to_jsonable
from ._job import JobFolder, job_folder
from ._read import (CONTROL_NAMES, RESERVED_CONTROL_NAMES, ControlRecord, RunRecord, check_control_name, load_control,
                    load_run, read_config, read_history, read_json)

__all__ = [
    "CONTROL_NAMES",
    "ControlRecord",
    "RESERVED_CONTROL_NAMES",
    "HISTORY_COLUMNS",
    "JobFolder",
    "RunFolder",
    "RunLock",
    "RunRecord",
    "check_control_name",
    "job_folder",
    "load_control",
    "load_run",
    "make_folder",
    "read_config",
    "read_history",
    "read_json",
    "remove_created",
    "to_jsonable",
]

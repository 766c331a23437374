"""One context manager for a job's folder: create, lock, check, log, RNG scope, and clean up
after a refused or failed start. Used by search, baseline and ticket."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Iterator

import torch

from ..errors import GrownetError
from ..job import FILE_ONLY, log_to_file, rng_scope
from ._folder import RunFolder, make_folder, remove_created

__all__ = ["JobFolder", "job_folder"]

logger = logging.getLogger("grownet.runfolder")


class JobFolder(RunFolder):
    """The folder of a running job: a :class:`RunFolder` that knows whether the job has started.

    Before :meth:`start` a failure leaves the folder as it was (the files the job wrote go, the
    run ``--force`` replaced comes back); after it, what the job wrote stays (a search resumes
    from it).
    """

    def __init__(self, path: str | os.PathLike, *, started: bool = False) -> None:
        super().__init__(path)
        self.started = started

    def start(self) -> None:
        """The job's inputs are good and its first output is written (or, resuming, its
        checkpoint is restored): keep the files from now on, delete the run that ``--force``
        replaced and the temporary files that writes killed mid-way left
        (:meth:`RunFolder.remove_stale`)."""
        self.started = True
        self.drop_replaced()
        stale = self.remove_stale()
        if stale:
            logger.info("removed %d temporary file(s) left by writes killed mid-way: %s", len(stale),
                        ", ".join(str(p.relative_to(self.path)) for p in stale))


@contextlib.contextmanager
def job_folder(
    path: str | os.PathLike,
    *,
    device: torch.device,
    check: Callable[[JobFolder], None] | None = None,
    started: bool = False,
    flag: str = "--out",
) -> Iterator[JobFolder]:
    """Open the folder of one job for the ``with`` body.

    In order: create ``path`` and its missing parents (``flag`` names the option to fix when
    that fails); take the writer lock; call ``check(folder)``, the job's refusals (existing
    folder, resume checks), before anything is written; send the package's log to
    ``grownet.log``; scope the global RNGs (:func:`grownet.job.rng_scope`). A
    :class:`~grownet.errors.GrownetError` from the body is written to the log (the caller shows
    it). When the body fails before :meth:`JobFolder.start` (``started`` sets it from the
    outset), the run files it created (config.json, grownet.log, history.csv, rounds.json)
    are removed, a log that was there is cut back to its old length (a refused resume
    changes nothing), a run replaced with ``--force`` is put back, and the folders this call
    created are removed if empty.

    Raises:
        RunError: the folder cannot be written or is locked by another process; whatever
            ``check`` or the body raise.
    """
    folder = JobFolder(path, started=started)
    created = make_folder(folder.path, flag=flag)
    try:
        with folder.lock():
            if check is not None:
                check(folder)
            fresh = [p for p in (folder.config, folder.log, folder.history, folder.rounds) if not p.exists()]
            log_size = folder.log.stat().st_size if folder.log.exists() else None  # a resume appends to it
            try:
                with log_to_file(folder.log), rng_scope(device):
                    try:
                        yield folder
                    except GrownetError as exc:
                        logger.error("%s", exc, extra=FILE_ONLY)
                        raise
            except BaseException:
                if not folder.started:  # a refused start leaves the folder as it was, its log included
                    for p in fresh:
                        p.unlink(missing_ok=True)
                    if log_size is not None:
                        os.truncate(folder.log, log_size)
                    folder.restore_replaced()
                raise
    except BaseException:
        remove_created(created)  # only folders still empty
        raise

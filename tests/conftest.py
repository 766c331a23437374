"""Suite-wide settings.

The suite runs in pytest-xdist workers (pyproject's ``addopts``). Each worker gets an equal share
of the CPUs as torch's intra-op threads, and so do the processes its tests start (through
``OMP_NUM_THREADS``): with torch's default, every worker would start one thread per core, and on
the 2-core CI machine the workers' threads would wait for each other.
"""

from __future__ import annotations

import os


def _share_the_cpus() -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = str(max(1, cpus // workers))
    os.environ["OMP_NUM_THREADS"] = threads  # read by torch at import, here and in spawned processes

    import torch

    torch.set_num_threads(int(threads))


_share_the_cpus()


def pytest_xdist_auto_num_workers(config) -> int | None:
    """``-n auto`` (pyproject's ``addopts``) starts no workers when the command line names tests
    of one file only: ``--dist loadfile`` would run them all in one worker anyway, after
    starting every worker (each imports torch). Otherwise xdist's own choice (None)."""
    files = {str(arg).split("::")[0] for arg in config.args}
    return 0 if len(files) == 1 and os.path.isfile(next(iter(files))) else None

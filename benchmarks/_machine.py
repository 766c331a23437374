"""The machine line every benchmark prints first, so its figures carry their context."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor name elsewhere.
    Float32 results depend on it too: torch's CPU kernels take other code paths on another
    vendor's chip (tests/test_refactor_equivalence.py keys its recorded values by it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def last_level_cache() -> str:
    """The CPU's largest cache as ``"L3 32 MiB"`` (Linux sysfs, CPU 0), or ``""`` where it cannot
    be read. Step ratios depend on it: a step whose tensors fit in it reads them from cache."""
    best = (0, 0)
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()  # e.g. "32768K"
            kib = int(size[:-1]) * {"K": 1, "M": 1024}[size[-1]] if size[-1] in "KM" else int(size) // 1024
        except (OSError, ValueError):
            continue
        best = max(best, (level, kib))
    level, kib = best
    if not kib:
        return ""
    return f"L{level} {kib // 1024} MiB" if kib % 1024 == 0 else f"L{level} {kib} KiB"


def machine() -> str:
    """CPU model, cores, last-level cache, the GPU where CUDA is available, OS, Python and torch
    versions, torch threads and the load average."""
    cpu = cpu_model()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    cache = last_level_cache()
    cache = f", {cache}" if cache else ""
    gpu = f"; GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"machine: {cpu}, {os.cpu_count()} cores{cache}{gpu}, {platform.system()} {platform.release()}; "
        f"python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads); load average {load}"
    )

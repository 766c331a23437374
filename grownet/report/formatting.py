"""Number formatting for reports: accuracies, SI counts, durations. ``None`` stays ``None``
(the HTML layer shows it as a dash)."""

from __future__ import annotations

import math

__all__ = ["pct", "si", "duration", "ratio"]

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def pct(fraction: float | None, digits: int = 2) -> str | None:
    """A fraction in [0, 1] as a percentage: ``0.9312 -> "93.12 %"``."""
    return f"{100.0 * fraction:.{digits}f} %" if _finite(fraction) else None


def si(count: float | None, digits: int = 3) -> str | None:
    """A count with an SI prefix and ``digits`` significant digits: ``40_960_000 -> "41.0 M"``."""
    if not _finite(count):
        return None
    for scale, prefix in _PREFIXES:
        if abs(count) >= scale:
            return f"{count / scale:.{digits}g} {prefix}"
    return f"{count:.{digits}g}"


def duration(seconds: float | None) -> str | None:
    """Seconds as ``"42.0 s"``, ``"3 min 05 s"`` or ``"2 h 07 min"``."""
    if not _finite(seconds):
        return None
    if seconds < 60:
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {(total % 3600) // 60:02d} min"


def ratio(value: float | None, reference: float | None) -> str | None:
    """``value / reference`` as ``"0.42×"`` (``None`` when either is missing or reference is 0)."""
    if not (_finite(value) and _finite(reference)) or reference == 0:
        return None
    return f"{value / reference:.2f}×"

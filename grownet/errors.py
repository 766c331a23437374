"""grownet's error hierarchy.

Every error a user can cause derives from :class:`GrownetError`; the CLI prints such an
error as one line on stderr and exits with status 2. Anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "GrownetError",
    "UsageError",
    "ConfigError",
    "ArchitectureError",
    "WeightsError",
    "DataError",
    "RunError",
    "DivergenceError",
]


class GrownetError(Exception):
    """Root of grownet's errors: a problem with the user's input or environment."""


class UsageError(GrownetError):
    """Bad arguments to a command or a public function."""


class ConfigError(GrownetError):
    """A recipe or configuration value is unknown, of the wrong type, or out of range."""


class ArchitectureError(GrownetError):
    """An architecture JSON or dict is malformed; the message names the field path."""


class WeightsError(GrownetError):
    """A weights file is unreadable or does not fit its architecture."""


class DataError(GrownetError):
    """A dataset is missing, corrupt, or has the wrong shape, dtype or labels."""


class RunError(GrownetError):
    """A run folder cannot be used: it exists, is locked, or does not match for resume."""


class DivergenceError(GrownetError):
    """Training kept producing non-finite losses after the allowed retries."""

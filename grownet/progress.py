"""Progress hooks of a training job (search, ticket): what the console shows while it runs.

:class:`Reporter` is the interface with every hook a no-op; the CLI's ``RichReporter`` draws
bars and tables. It lives here, below both the jobs and the CLI, so either imports it downward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

__all__ = ["Reporter"]


class Reporter:
    """Progress hooks a job calls (all no-ops here; the CLI draws bars and tables).

    A hook must not raise, except to abort the run (a search's last checkpoint stays valid).
    """

    def start(self, *, run_dir: Path | None, arch: Any, recipe: Any, resumed: bool) -> None:
        """The job begins: its folder (None when it writes none), first architecture and recipe."""

    def epoch_start(self, *, phase: str, round: int, epoch: int, index: int, total: int, batches: int) -> None:
        """An epoch begins: ``epoch`` counts over the job (from 1), ``index`` of ``total``
        within its phase; ``batches`` optimizer steps follow."""

    def batch(self, done: int, total: int) -> None:
        """``done`` of ``total`` optimizer steps of this epoch are taken."""

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        """An epoch ended; ``row`` is its history row (:data:`grownet.runfolder.HISTORY_COLUMNS`)."""

    def round_end(self, record: Mapping[str, Any]) -> None:
        """A search's growth check ended; ``record`` is its rounds.json entry."""

    def event(self, message: str) -> None:
        """An incident (a divergence retry), one line."""

    def finish(self, result: Any) -> None:
        """The job ended with ``result`` (a SearchResult or a TicketResult)."""

    def close(self) -> None:
        """The job is over, finished or not: release the display."""

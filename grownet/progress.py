"""Progress hooks of a training job (search, ticket): what the console shows while it runs.

:class:`Reporter` is the interface with every hook a no-op; :class:`RichReporter` (a search)
and :class:`TicketReporter` draw with rich for the CLI. They live here, below both the jobs
and the CLI, so either imports them downward.

A search's console (:class:`RichReporter`): the plan (:class:`grownet.plan.RunPlan`) before
training; one live line for the whole run while it trains (round k of at most K, epoch,
step, elapsed, the run's ETA, current MACs and validation accuracy) over a line per epoch
and a table per growth check; a summary at the end. On a console that is not a terminal
the live line is left out and every epoch line carries the round, elapsed time and ETA.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from .job import FILE_ONLY
from .plan import Forecast, RunPlan, duration
from .recipe import Recipe

__all__ = ["Reporter", "RichReporter", "TicketReporter"]


logger = logging.getLogger("grownet.search")


class Reporter:
    """Progress hooks a job calls (all no-ops here; the CLI draws bars and tables).

    A hook must not raise, except to abort the run (a search's last checkpoint stays valid).

    Attributes:
        wants_plan: a search calls :meth:`plan` before training only when this is true (the
            plan's probe costs a few seconds; False here).
    """

    wants_plan: bool = False

    def plan(self, plan: RunPlan) -> None:
        """A search's plan, before its first epoch (only when ``wants_plan``)."""

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


def _epoch_line(row: Mapping[str, Any]) -> str:
    return (f"epoch {row['epoch']:>3} ({row['phase']}) lr {row['lr']:.4g}  loss {row['train_loss']:.4f}  "
            f"acc {row['train_acc']:.4f}  val {row['val_acc']:.4f}  {row['macs'] / 1e6:.2f}M MACs")


def _clock(seconds: float) -> str:
    """``"4:05"``, ``"1:02:03"``."""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RichReporter(Reporter):
    """A search's console with rich (see the module docstring).

    Args:
        console: a ``rich.console.Console``.
        recipe: the line saying which recipe runs and why (shown in the plan).
        live: draw the live line (default: when the console is a terminal).
    """

    wants_plan = True
    _STYLE = {"widen": "green", "deepen": "bold green", "clipped": "yellow", "skipped": "red", "keep": "dim"}

    def __init__(self, console: Any, *, recipe: str = "", live: bool | None = None) -> None:
        self.console = console
        self.recipe_line = recipe
        self.live = console.is_terminal if live is None else live
        self.progress: Any = None
        self._task: Any = None
        self._plan: RunPlan | None = None
        self._forecast: Forecast | None = None
        self._recipe: Recipe | None = None
        self._phase, self._round, self._epoch, self._index, self._total = "grow", 1, 0, 1, 1
        self._done, self._steps = 0, 1
        self._macs: int | None = None
        self._val: float | None = None
        self._wall, self._mark = 0.0, time.monotonic()

    # -- what the live line and the epoch lines say ---------------------------------------------
    def elapsed(self) -> float:
        """The run's seconds so far (its last epoch's wall time plus the time since)."""
        return self._wall + time.monotonic() - self._mark

    def remaining(self) -> float | None:
        """The run's estimated seconds left (None without a plan)."""
        if self._forecast is None or self._macs is None:
            return None
        left = self._total - self._index + 1 - self._done / max(1, self._steps)
        return self._forecast.remaining(phase=self._phase, round=self._round, epochs_left=max(0.0, left), macs=self._macs)

    def stage(self) -> str:
        """``"round 2 of at most 3"`` (``"of about K"`` with no round limit), or ``"fine-tune"``."""
        if self._phase != "grow":
            return "fine-tune"
        limit = self._recipe.budget.max_rounds if self._recipe is not None else 0
        if limit:
            return f"round {self._round} of at most {limit}"
        return f"round {self._round} of about {max(self._round, self._plan.rounds)}" if self._plan else f"round {self._round}"

    def status(self) -> str:
        """The live line: stage, epoch, step, MACs, validation accuracy, elapsed, ETA."""
        left = self.remaining()
        parts = [self.stage(), f"epoch {self._epoch} ({self._index}/{self._total})" if self._epoch else "epoch -",
                 f"step {self._done}/{self._steps}"]
        if self._macs is not None:
            parts.append(f"{self._macs / 1e6:.2f}M MACs")
        parts.append("val -" if self._val is None else f"val {self._val:.4f}")
        parts.append(f"{_clock(self.elapsed())} elapsed")
        parts.append("ETA -" if left is None else f"ETA {_clock(left)}")
        return " · ".join(parts)

    def _refresh(self) -> None:
        if self.progress is None:
            return
        left, spent = self.remaining(), self.elapsed()
        share = spent / (spent + left) if left is not None and spent + left > 0 else 0.0
        self.progress.update(self._task, completed=share, description=self.status())

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)  # a log line: not cut at the width

    # -- hooks ----------------------------------------------------------------------------------
    def plan(self, plan: RunPlan) -> None:
        self._plan, self._forecast = plan, Forecast(plan)
        self._wall, self._macs = plan.elapsed, plan.macs
        lines = plan.lines()
        if self.recipe_line:
            lines = [line for line in lines if not line.startswith("recipe ")]
            said = self.recipe_line[len("recipe "):] if self.recipe_line.startswith("recipe ") else self.recipe_line
            lines.insert(1, f"recipe    {said}")
        self.recipe_line = ""  # said
        self.console.print("[bold]grownet search: plan[/bold]")
        for line in lines:
            self._print(f"  {line}")
            logger.info("plan: %s", line.strip(), extra=FILE_ONLY)

    def start(self, *, run_dir: Path, arch: Any, recipe: Recipe, resumed: bool) -> None:
        from rich.markup import escape

        self._recipe = recipe
        if arch is not None:
            from .cost import cost

            self._macs = cost(arch).macs
        if self.recipe_line:  # no plan was shown: say which recipe runs
            self._print(self.recipe_line)
            logger.info("%s", self.recipe_line, extra=FILE_ONLY)
        what = "resuming" if resumed else "growing"
        widths = arch.layer_widths() if arch is not None else {}
        self.console.print(f"[bold]grownet search[/bold]: {what} in {escape(str(run_dir))} from {escape(str(widths))}",
                           soft_wrap=True)
        self._mark = time.monotonic()
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn

            self.progress = Progress(BarColumn(bar_width=24), TextColumn("{task.description}"), console=self.console,
                                     transient=True)
            self._task = self.progress.add_task(self.status(), total=1.0)
            self.progress.start()

    def epoch_start(self, *, phase: str, round: int, epoch: int, index: int, total: int, batches: int) -> None:
        self._phase, self._round, self._epoch, self._index, self._total = phase, round, epoch, index, total
        self._done, self._steps = 0, batches
        self._refresh()

    def batch(self, done: int, total: int) -> None:
        self._done, self._steps = done, total
        self._refresh()

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        if self._forecast is not None:
            self._forecast.epoch_done(row["wall_time"] - self._wall, row["macs"])
        self._wall, self._mark = row["wall_time"], time.monotonic()
        self._val, self._macs, self._done = row["val_acc"], row["macs"], self._steps
        left = self.remaining()
        self._print(f"{_epoch_line(row)}  {self.stage()}  {_clock(row['wall_time'])} elapsed"
                    + ("" if left is None else f"  ETA {_clock(left)}"))
        self._refresh()

    def round_end(self, record: Mapping[str, Any]) -> None:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"growth check {record['round']} (epoch {record['epoch']}, val acc {record['val_acc']:.4f})",
                      title_justify="left")
        for col in ("layer", "width", "activity", "tau", "decision", "new width", "note"):
            table.add_column(col, justify="right" if col in ("width", "activity", "tau", "new width") else "left",
                             overflow="fold" if col == "note" else "ellipsis")
        hold = record.get("hold") or ""
        for d in record["layers"]:
            style = self._STYLE.get(d["decision"], "")
            act = "-" if d["activity"] is None else f"{d['activity']:.3f}"
            # The full reason is in rounds.json and the log; the table keeps what a budget changed.
            note = d["reason"].split("; ", 1)[1] if "; " in d["reason"] else ""
            if hold and note.endswith(hold):
                note = note[: -len(hold)].rstrip(": ")
            if d["decision"] == "deepen":
                note = "new identity layer"
            width = "-" if d["activity"] is None else str(d["width"])  # a layer a deepening adds
            table.add_row(d["layer"], width, act, f"{d['tau']:g}", f"[{style}]{d['decision']}[/]",
                          str(d["new_width"]), escape(note))
        self.console.print(table)
        if record["grew"]:
            self._macs = record["new_macs"]
            self._print(f"grew: {record['macs'] / 1e6:.2f}M -> {record['new_macs'] / 1e6:.2f}M MACs")
        elif record.get("next_round"):
            self._print("nothing grew; another round follows (budget.min_rounds)")
        else:
            self._print(f"stop growing: {record.get('hold') or 'nothing to grow'}")
        self._refresh()

    def event(self, message: str) -> None:
        from rich.markup import escape

        self.console.print(f"[yellow]{escape(message)}[/]")

    def finish(self, result: Any) -> None:
        self.close()
        lines = summary_lines(result)
        if self.live:
            from rich.panel import Panel
            from rich.text import Text

            self.console.print(Panel(Text("\n".join(lines)), title="grownet search: done", expand=False))
        else:
            self._print("grownet search: done")
            for line in lines:
                self._print(f"  {line}")

    def close(self) -> None:
        if self.progress is not None and self.progress.live.is_started:  # stopping an unstarted display prints a blank line
            self.progress.stop()


def summary_lines(result: Any) -> list[str]:
    """A finished search's summary (a :class:`grownet.search.SearchResult`): accuracy, size,
    time, where its files are and the two lines of Python that load the net."""
    arch = result.arch
    widths = " | ".join(" ".join(str(w) for w in (st if arch.family == "vgg" else st.blocks)) for st in arch.stages)
    report = Path(result.run_dir) / "report.html"
    return [
        f"test acc {result.test_acc:.4f}   val acc {result.val_acc:.4f}",
        f"{result.macs / 1e6:.2f}M MACs   {result.params / 1e6:.3f}M params   widths {widths}",
        f"{result.rounds} growth checks, {result.epochs} epochs, {result.train_flops / 1e12:.2f} TFLOPs of training, "
        f"{duration(result.wall_time)} in all",
        f"run folder: {result.run_dir}",
        f"report:     {report if report.exists() else '(not written)'}",
        "load the net in Python:",
        "  import grownet",
        f"  model = grownet.load_model({json.dumps(str(result.run_dir))})",
    ]


class TicketReporter(Reporter):
    """A ticket's console with rich: epoch and batch bars, a line per epoch, the comparison table."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
        )
        self._tasks: dict[str, Any] = {}

    def _bar(self, name: str, total: int | None, info: str = "") -> Any:
        if name not in self._tasks:
            self._tasks[name] = self.progress.add_task(name, total=total, info=info)
        else:
            self.progress.reset(self._tasks[name], total=total, info=info)
        return self._tasks[name]

    def start(self, *, run_dir: Path | None, arch: Any, recipe: Recipe, resumed: bool) -> None:
        self.console.print(f"[bold]grownet ticket[/bold]: training {arch.layer_widths()} -> {run_dir}")
        self.progress.start()

    def epoch_start(self, *, phase: str, round: int, epoch: int, index: int, total: int, batches: int) -> None:
        t = self._bar("epoch", total)
        self.progress.update(t, completed=index - 1, info=f"{phase} epoch {index}")
        self._bar("batch", batches)

    def batch(self, done: int, total: int) -> None:
        self.progress.update(self._tasks["batch"], completed=done)

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        t = self._tasks.get("epoch")
        if t is not None:
            self.progress.advance(t)
        self.progress.console.print(f"{_epoch_line(row)}  {row['wall_time']:.0f} s")

    def event(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}[/]")

    def finish(self, result: Any) -> None:
        from rich.table import Table

        self.progress.stop()
        table = Table(title=f"ticket at epoch {result.at_epoch}: {result.out}", title_justify="left")
        for col in ("net", "MACs", "params", "val acc", "test acc"):
            table.add_column(col, justify="left" if col == "net" else "right")
        for s in result.table():
            table.add_row(s.label, f"{s.macs / 1e6:.2f}M", f"{s.params:,}",
                          "-" if s.val_acc is None else f"{s.val_acc:.4f}", "-" if s.test_acc is None else f"{s.test_acc:.4f}")
        self.console.print(table)

    def close(self) -> None:
        if self.progress.live.is_started:  # stopping an unstarted display prints a blank line
            self.progress.stop()

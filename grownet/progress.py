"""Progress hooks of a training job (search, ticket): what the console shows while it runs.

:class:`Reporter` is the interface with every hook a no-op; :class:`RichReporter` (a search)
and :class:`TicketReporter` draw bars and tables with rich for the CLI. They live here, below
both the jobs and the CLI, so either imports them downward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .recipe import Recipe

__all__ = ["Reporter", "RichReporter", "TicketReporter"]


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


class RichReporter(Reporter):
    """Search progress with rich: round, epoch and batch bars; a table of every layer's width,
    activity and decision after each growth check; a summary panel at the end."""

    _STYLE = {"widen": "green", "deepen": "bold green", "clipped": "yellow", "skipped": "red", "keep": "dim"}

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console
        self.progress = Progress(
            TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
        )
        self._tasks: dict[str, Any] = {}
        self._recipe: Any = None

    def _task(self, name: str, total: int | None, info: str = "") -> Any:
        if name not in self._tasks:
            self._tasks[name] = self.progress.add_task(name, total=total, info=info)
        else:
            self.progress.reset(self._tasks[name], total=total, info=info)
        return self._tasks[name]

    def start(self, *, run_dir: Path, arch: Any, recipe: Recipe, resumed: bool) -> None:
        self._recipe = recipe
        what = "resuming" if resumed else "growing"
        self.console.print(f"[bold]grownet search[/bold]: {what} in {run_dir} from {arch.layer_widths()}")
        self.progress.start()

    def epoch_start(self, *, phase: str, round: int, epoch: int, index: int, total: int, batches: int) -> None:
        rounds = self._recipe.budget.max_rounds or None if self._recipe else None
        if phase == "grow":
            t = self._task("round", rounds)
            self.progress.update(t, completed=round - 1, info=f"round {round}")
        else:
            t = self._task("round", 1)
            self.progress.update(t, completed=1, info="fine-tune")
        t = self._task("epoch", total)
        self.progress.update(t, completed=index - 1, info=f"{phase} epoch {epoch}")
        self._task("batch", batches)

    def batch(self, done: int, total: int) -> None:
        self.progress.update(self._tasks["batch"], completed=done)

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        t = self._tasks.get("epoch")
        if t is not None:
            self.progress.advance(t)
        self.progress.console.print(
            f"epoch {row['epoch']:>3} ({row['phase']}) lr {row['lr']:.4g}  loss {row['train_loss']:.4f}  "
            f"acc {row['train_acc']:.4f}  val {row['val_acc']:.4f}  {row['macs'] / 1e6:.2f}M MACs  {row['wall_time']:.0f} s"
        )

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
        self.progress.console.print(table)
        if record["grew"]:
            self.progress.console.print(f"grew: {record['macs'] / 1e6:.2f}M -> {record['new_macs'] / 1e6:.2f}M MACs")
        else:
            self.progress.console.print(f"stop growing: {record.get('hold') or 'nothing to grow'}")

    def event(self, message: str) -> None:
        self.progress.console.print(f"[yellow]{message}[/]")

    def finish(self, result: Any) -> None:
        from rich.panel import Panel

        self.progress.stop()
        widths = " | ".join(" ".join(str(w) for w in (st if result.arch.family == "vgg" else st.blocks)) for st in result.arch.stages)
        text = (
            f"test acc [bold]{result.test_acc:.4f}[/]   val acc {result.val_acc:.4f}\n"
            f"{result.macs / 1e6:.2f}M MACs   {result.params / 1e6:.3f}M params   widths {widths}\n"
            f"{result.rounds} growth checks, {result.epochs} epochs, {result.train_flops / 1e12:.2f} TFLOPs of training, "
            f"{result.wall_time / 60:.1f} min\n"
            f"run folder: {result.run_dir}"
        )
        self.console.print(Panel(text, title="grownet search: done", expand=False))

    def close(self) -> None:
        if self.progress.live.is_started:  # stopping an unstarted display prints a blank line
            self.progress.stop()


class TicketReporter(RichReporter):
    """RichReporter's bars and epoch lines, with the ticket's phases and its comparison table."""

    def start(self, *, run_dir: Path | None, arch: Any, recipe: Recipe, resumed: bool) -> None:
        self.console.print(f"[bold]grownet ticket[/bold]: training {arch.layer_widths()} -> {run_dir}")
        self.progress.start()

    def epoch_start(self, *, phase: str, round: int, epoch: int, index: int, total: int, batches: int) -> None:
        t = self._task("epoch", total)
        self.progress.update(t, completed=index - 1, info=f"{phase} epoch {index}")
        self._task("batch", batches)

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

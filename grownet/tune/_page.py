"""The study page ``tune.html``: the Pareto plot, the Pareto table linking each trial's run
report and architecture, every trial, and the search space. Built from :class:`TrialRow`
records with the report's public building blocks (:mod:`grownet.report.html`, ``.plots``,
``.formatting``), so every value is escaped and the page fetches nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..report import ModelPoint
from ..report.formatting import duration, pct, si
from ..report.html import Safe, esc, figure, join, page, render, section, table
from ..report.plots import accuracy_macs_figure
from ._space import SEARCHED

if TYPE_CHECKING:  # pragma: no cover
    from ._results import TrialRow

_NAV = (("pareto", "Pareto front"), ("trials", "All trials"), ("space", "Search space"))
_STATES = ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL")


def render_page(rows: Sequence["TrialRow"], *, out: Path, study_name: str, storage_label: str,
                config: Mapping[str, Any]) -> str:
    """The study page: Pareto plot (validation accuracy against MACs), the Pareto table
    linking each trial's run report and architecture, every trial, the search space.
    ``out`` is the folder the page is written to (links are relative to it);
    ``storage_label`` must be a masked URL."""
    from .._version import __version__

    counts = {s: sum(r.state == s for r in rows) for s in _STATES}
    subtitle = (f"{config.get('dataset', '?')}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned (diverged), "
                f"{counts['RUNNING']} running, {counts['FAIL']} failed (retried); storage {storage_label}")
    body = join([
        section("pareto", "Pareto front", join([_front_figure(rows), _pareto_table(rows, out)]),
                intro="Objectives: validation accuracy (maximised) and inference MACs per image (minimised). Stars: "
                      "Pareto-optimal trials (no other trial is at least as accurate with at most as many MACs)."),
        section("trials", "All trials", _trials_table(rows, out)),
        section("space", "Search space", _space_table(config.get("space") or {}),
                intro=f"Sampler {config.get('sampler', '?')} seeded with {config.get('seed', '?')} (per trial number)."),
    ])
    return page(f"grownet tune: {study_name}", subtitle=subtitle, nav=_NAV, body=body,
                footer=f"grownet {__version__}; regenerate with grownet tune --trials 0 (same --storage, "
                       f"--study-name and --out)")


def _front_figure(rows: Sequence["TrialRow"]) -> Safe:
    done = [r for r in rows if r.state == "COMPLETE"]
    points = [ModelPoint(name="grown" if r.pareto else "trial", label=f"#{r.number}" if r.pareto else "",
                         val_acc=r.val_acc, test_acc=r.test_acc, macs=r.macs, params=r.n_params,
                         train_flops=r.train_flops, wall_time=r.wall_time, epochs=r.epochs) for r in done]
    svg = accuracy_macs_figure(points, metric="val_acc", front=[r.pareto for r in done],
                               title="Validation accuracy vs inference MACs")
    return figure(svg, alt="Validation accuracy against MACs of every finished trial; stars mark the Pareto front",
                  css="half")


def _run_link(r: "TrialRow", text: str, out: Path) -> Safe:
    """The trial's run report; its run folder when there is no report; where it ran when the
    folder is on another worker's machine."""
    if not r.run:
        return esc(None)
    folder = out / "trials" / r.run
    if (folder / "report.html").is_file():
        return render('<a href="$h">$t</a>', h=f"trials/{r.run}/report.html", t=text)
    if folder.is_dir():
        return render('<a href="$h">$t</a>', h=f"trials/{r.run}/", t=r.run)
    return esc(f"{r.run} on {r.host}" if r.host else r.run)


def _arch_link(r: "TrialRow", out: Path) -> Safe:
    name = f"pareto/trial-{r.number:04d}/architecture.json"
    if (out / name).is_file():
        return render('<a href="$h">$t</a>', h=name, t="architecture.json")
    return esc(None)


def _pareto_table(rows: Sequence["TrialRow"], out: Path) -> Safe:
    front = sorted((r for r in rows if r.pareto), key=lambda r: (r.macs or 0))
    return table(
        ["trial", "val acc", "MACs", "test acc", "params", "widths", "report", "architecture", *SEARCHED],
        [[r.number, pct(r.val_acc), si(r.macs), pct(r.test_acc), si(r.n_params), r.widths, _run_link(r, "report", out),
          _arch_link(r, out), *(_fmt(r.params.get(k)) for k in SEARCHED)] for r in front],
        numeric=(0, 1, 2, 3, 4),
    )


def _trials_table(rows: Sequence["TrialRow"], out: Path) -> Safe:
    return table(
        ["trial", "state", "Pareto", "val acc", "MACs", "test acc", "time", "rounds", *SEARCHED, "run", "note"],
        [[r.number, r.state.lower(), "yes" if r.pareto else "", pct(r.val_acc), si(r.macs), pct(r.test_acc),
          duration(r.wall_time), r.rounds, *(_fmt(r.params.get(k)) for k in SEARCHED), _run_link(r, r.run or "", out),
          r.error] for r in rows],
        numeric=(0, 3, 4, 5, 6, 7),
    )


def _space_table(space: Mapping[str, Any]) -> Safe:
    space_rows = []
    for k, path in SEARCHED.items():
        d = space.get(k) or {}
        if "choices" in d:
            rng = ", ".join(map(str, d["choices"]))
        elif d:
            rng = f"[{d.get('low')}, {d.get('high')}]" + (" (log)" if d.get("log") else "")
        else:
            rng = "not searched (the recipe's value)"
        space_rows.append([k, path, rng])
    return table(["key", "recipe key", "range"], space_rows)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value

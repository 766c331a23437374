"""The run report: sections laid out from info records, figures from :mod:`.plots`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..files import atomic_write_text
from ..validate import check_text
from . import plots
from .formatting import duration, pct, ratio, si
from .html import Safe, figure, join, page, render, section, table
from ._info import (
    CONTROL_LABELS,
    activity_info,
    activity_trace_info,
    arch_info,
    controls_info,
    controls_like_grown,
    curves_info,
    decision_info,
    growth_info,
    repro_info,
    round_cost_info,
    summary_info,
)
from ._run import RunRecord, load_run

__all__ = ["SECTIONS", "render_report", "write_report"]

logger = logging.getLogger(__name__)

#: The summary lists at most this many class names (CIFAR-100 would fill the screen).
_MAX_CLASSES = 20

#: (anchor, menu label) of every report section, in page order.
SECTIONS = (
    ("summary", "Summary"),
    ("growth", "Growth"),
    ("activity", "Γ activity"),
    ("curves", "Curves"),
    ("cost", "Cost per round"),
    ("architecture", "Architecture"),
    ("controls", "Controls"),
    ("decisions", "Decisions"),
    ("repro", "Reproduce"),
)


def _cards(items: list[tuple[str, Any]]) -> Safe:
    return render('<div class="cards">$c</div>', c=join(
        render('<div class="card"><div class="k">$k</div><div class="v">$v</div></div>', k=k, v=v) for k, v in items
    ))


def _para(text: Any, css: str = "note") -> Safe:
    return render('<p class="$c">$t</p>', c=css, t=text)


def _summary(run: RunRecord) -> Safe:
    s = summary_info(run)
    cards = _cards([
        ("validation accuracy", pct(s.val_acc)),
        ("test accuracy", pct(s.test_acc)),
        ("inference MACs", si(s.macs)),
        ("parameters", si(s.params)),
        ("training FLOPs", si(s.train_flops)),
        ("wall time", duration(s.wall_time)),
    ])
    shown = s.classes if len(s.classes) <= _MAX_CLASSES else s.classes[:_MAX_CLASSES] + ["…"]
    classes = f"{len(s.classes)}: {', '.join(shown)}" if s.classes else None
    versions = ", ".join(f"{k} {v}" for k, v in s.versions.items()) or None
    rows = [
        ("dataset", s.dataset), ("classes", classes), ("family", s.family),
        ("seed net", _widths_text(s.seed_widths)), ("final net", _widths_text(s.final_widths)),
        ("rounds", s.rounds), ("epochs", s.epochs), ("seed", s.seed), ("device", s.device),
        ("started", s.started), ("versions", versions), ("command", render("<code>$c</code>", c=s.command) if s.command else None),
    ]
    body = join([cards, table(None, rows, css="kv")])
    if s.events:
        body = join([body, render('<div class="warn"><strong>Events:</strong> $e</div>', e="; ".join(s.events))])
    return section("summary", "Summary", body,
                   intro="Validation accuracy selects the model; the test accuracy is measured once, on the selected model.")


def _widths_text(widths: dict[str, int]) -> str | None:
    if not widths:
        return None
    return f"{len(widths)} layers, widths " + " ".join(str(w) for w in widths.values())


def _growth(run: RunRecord) -> Safe:
    info = growth_info(run)
    return section("growth", "Growth timeline", figure(
        plots.growth_figure(info), alt="Heatmap of each layer's width per round",
        caption="Each layer's width (filters) while each round trained, and in the final net; "
                "bold numbers changed since the previous column, grey cells did not exist yet.",
    ))


def _activity(run: RunRecord) -> Safe:
    info = activity_info(run)
    trace = activity_trace_info(run)
    taus = ", ".join(f"{t:g}" for t in info.taus) or "not recorded"
    what = {"importance": "active filters (importance >= rho x the net's mean filter importance, accumulated over "
                          "the round)",
            "uniform": "filters, set to 1 for every layer (grow.signal = uniform: no signal, a control)",
            "off": "filters, set to 0 for every layer (grow.signal = off: nothing grows)",
            }.get(trace.signal, "filters in the support of Γ")
    parts = [figure(
        plots.activity_figure(info), alt="Heatmap of filter activity per layer per growth check",
        caption=f"Share of each layer's {what} at each growth check; τ = {taus}. "
                "Outlined cells reached τ (red: widened, orange: clipped by the budget, grey: skipped); "
                "'new' marks a layer added by deepening.",
    )]
    if trace.rounds:
        parts.append(figure(plots.activity_trace_figure(trace), alt="Activity against step for every layer in each round",
                            caption="Each layer's activity along each growth round (sampled every tenth of the round); "
                                    "the dashed line is τ."))
    return section("activity", "Filter activity", Safe("".join(parts)))


def _curves(run: RunRecord) -> Safe:
    info = curves_info(run)
    return section("curves", "Training curves", figure(
        plots.curves_figure(info), alt="Loss and accuracy per epoch",
        caption="Per-epoch train and validation loss and accuracy; dotted lines follow each epoch after which "
                "the net grew; the shaded span is the fine-tune.",
    ))


def _cost(run: RunRecord) -> Safe:
    info = round_cost_info(run)
    rows = [(lab, si(m), si(p), pct(a)) for lab, m, p, a in zip(info.labels, info.macs, info.params, info.val_acc)]
    return section("cost", "MACs and parameters per round", join([
        figure(plots.round_cost_figure(info), alt="Bar charts of MACs and parameters per round"),
        table(["round", "MACs", "params", "validation accuracy"], rows, numeric=(1, 2, 3)),
    ]), intro="Cost of the net at each growth check (before its growth) and of the final net.")


def _architecture(run: RunRecord) -> Safe:
    info = arch_info(run)
    if not info.rows:
        return section("architecture", "Final architecture", _para("architecture.json is missing: the run did not finish."))
    rows = [(r.layer, r.width, si(r.macs), pct(r.macs_share, 1), si(r.params), pct(r.params_share, 1)) for r in info.rows]
    rows.append((Safe("<strong>total</strong>"), None, si(info.macs), pct(1.0, 1), si(info.params), pct(1.0, 1)))
    return section("architecture", "Final architecture", table(
        ["layer", "width", "MACs", "MACs share", "params", "params share"], rows, numeric=(1, 2, 3, 4, 5),
    ), intro=f"{info.family} net; MACs and parameters per layer as counted by grownet.cost "
             "(a ResNet stage width row holds every conv2 and the projection shortcut of the stage).")


def _controls(run: RunRecord) -> Safe:
    points = controls_info(run)
    if len(points) == 1:
        return section("controls", "Controls", _para(
            "No controls yet. Run `grownet baseline RUN_DIR --control scratch|uniform|random|seed|fixed_uniform` (or "
            "`--control NAME --arch A.json` for an architecture of your own) and regenerate this report with "
            "`grownet report RUN_DIR`."))
    grown = points[0]
    rows = [
        (p.label, pct(p.val_acc), pct(p.test_acc), si(p.macs), si(p.params), si(p.train_flops),
         ratio(p.train_flops, grown.train_flops), duration(p.wall_time), p.epochs)
        for p in points
    ]
    parts = [
        figure(plots.accuracy_macs_figure(points, metric="test_acc"), alt="Test accuracy against inference MACs",
               css="half", caption="Test accuracy against inference MACs: the grown net (star) and the controls."),
        table(["net", "val acc", "test acc", "MACs", "params", "training FLOPs", "FLOPs vs grown", "wall time", "epochs"],
              rows, numeric=(1, 2, 3, 4, 5, 6, 7, 8)),
    ]
    for name in controls_like_grown(run):
        parts.append(_para(f"The {CONTROL_LABELS[name]} control has exactly the grown net's widths (growth scaled every "
                           f"layer by the same factor), so it trains the same net as the scratch control.", "warn"))
    return section("controls", "Controls", join(parts), intro="METHOD.md §4: " + "; ".join(f"{k}: {v}" for k, v in CONTROL_LABELS.items() if k != "grown")
              + ". Each control but fixed_uniform trains from scratch for the search's total epochs, with the search's "
                "fine-tune optimizer and a cosine learning rate over all of them, on the same data split and seed; "
                "fixed_uniform trains the uniform widths exactly as this run trained (its DessiLBI rounds, nothing "
                "grows, then its fine-tune), so that it differs from the grown net only in growing. Each keeps its best "
                "validation epoch and tests it once.")


def _decisions(run: RunRecord) -> Safe:
    info = decision_info(run)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(info.counts.items())) or "none"
    rows = [
        (d.round, d.epoch, d.layer, d.width or None, None if d.activity is None else f"{d.activity:.3f}",
         None if d.tau is None else f"{d.tau:g}", d.decision, d.new_width, d.reason)
        for d in info.changes()
    ]
    parts = [_para(f"{len(info.decisions)} decisions over {len({d.round for d in info.decisions})} checks: {counts}. "
                   "Rows below are every decision other than keep; rounds.json holds them all.")]
    if rows:
        parts.append(table(["round", "epoch", "layer", "width", "activity", "τ", "decision", "new width", "reason"],
                           rows, numeric=(0, 1, 3, 4, 5, 7)))
    if info.events:
        parts.append(render("<h3>Events</h3>$t", t=table(["event"], [(e,) for e in info.events])))
    return section("decisions", "Decision log", join(parts))


def _repro(run: RunRecord) -> Safe:
    info = repro_info(run)
    command = run.config.get("command")
    parts = []
    if command:
        parts.append(render("<h3>Command</h3><pre>$c</pre>", c=command))
    if info.recipe_toml:
        parts.append(render('<h3>Recipe (resolved, TOML)</h3><pre class="columns">$t</pre>', t=info.recipe_toml))
    parts.append(render("<h3>Configuration</h3>$t", t=table(["key", "value"], info.config, css="kv")))
    return section("repro", "Reproducibility", join(parts),
                   intro="The resolved recipe and configuration (config.json): save the TOML as a recipe file to repeat the run.")


def render_report(run: RunRecord | str | os.PathLike) -> str:
    """The report of a run folder (or a loaded :class:`RunRecord`) as one HTML document.

    Raises:
        RunError: when the folder is not a readable grownet run.
    """
    from .._version import __version__

    if not isinstance(run, RunRecord):
        run = load_run(run)
    s = summary_info(run)
    subtitle = " · ".join(str(x) for x in (
        s.family and f"{s.family} net", s.dataset, s.seed is not None and f"seed {s.seed}", s.started) if x)
    body = join([_summary(run), _growth(run), _activity(run), _curves(run), _cost(run), _architecture(run),
                 _controls(run), _decisions(run), _repro(run)], "\n")
    footer = render("Generated by grownet $v from the files of $p; regenerate with <code>grownet report $p</code>.",
                    v=__version__, p=str(run.path))
    return str(page(f"grownet report: {run.name}", subtitle=subtitle, nav=SECTIONS, body=body, footer=footer))


def write_report(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``),
    atomically; return its path. Reads only the run folder.

    Raises:
        RunError: when the folder is not a readable grownet run.
    """
    check_text(os.fspath(run_dir), "RUN_DIR")  # the path is written into the page
    if out is not None:
        check_text(os.fspath(out), "--out")
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / "report.html"
    atomic_write_text(path, render_report(run))
    logger.debug("wrote %s", path)
    return path

"""The ticket's HTML report: supports per epoch, the nets side by side."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..arch import Architecture

log = logging.getLogger("grownet.ticket")

# ---- the report ---------------------------------------------------------------------------------------

#: (anchor, menu label) of the ticket report's sections, in page order.
REPORT_SECTIONS = (
    ("summary", "Summary"),
    ("comparison", "Comparison"),
    ("supports", "Γ supports"),
    ("widths", "Widths"),
    ("masking", "Masked vs pruned"),
    ("curves", "Curves"),
    ("repro", "Reproduce"),
)


@dataclass(frozen=True)
class SupportInfo:
    """Support size per layer per epoch (supports.json), for the report.

    ``sizes[i][j]``: filters of ``layers[i]`` in Γ's support after ``epochs[j]``;
    ``widths[i]``: the layer's dense width; ``kept[i]``: its width in the ticket (``None``
    before the ticket epoch was reached)."""

    layers: list[str]
    widths: list[int]
    epochs: list[int]
    sizes: list[list[int | None]]
    at_epoch: int | None
    kept: list[int | None]


def support_info(supports: Mapping[str, Any]) -> SupportInfo:
    """The :class:`SupportInfo` of a parsed supports.json."""
    widths = {str(k): int(v) for k, v in (supports.get("widths") or {}).items()}
    sizes = supports.get("sizes") or {}
    epochs = sorted(int(e) for e in sizes)
    keep = supports.get("keep") or {}
    layers = list(widths)
    return SupportInfo(
        layers=layers,
        widths=[widths[l] for l in layers],
        epochs=epochs,
        sizes=[[sizes[str(e)].get(l) for e in epochs] for l in layers],
        at_epoch=supports.get("at_epoch"),
        kept=[len(keep[l]) if l in keep else None for l in layers],
    )


def support_figure(info: SupportInfo) -> str:
    """SVG heatmap: rows are layers, columns epochs; colour is the share of the layer's filters in
    Γ's support, the number the support size; the ticket epoch's column is outlined."""
    import matplotlib
    from matplotlib.patches import Rectangle

    from ..report.plots import STYLE as _RC, WIDTH as _WIDTH, empty_figure as _empty, new_figure as _figure, to_svg as _svg

    if not info.layers or not info.epochs:
        return _empty("no supports recorded")
    with matplotlib.rc_context(_RC):
        import numpy as np

        share = np.ma.masked_invalid(np.array(
            [[np.nan if s is None else s / max(w, 1) for s in row] for row, w in zip(info.sizes, info.widths)], dtype=float))
        fig = _figure(_WIDTH, 1.3 + 0.26 * len(info.layers))
        ax = fig.add_subplot()
        im = ax.imshow(share, aspect="auto", cmap=matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee"),
                       vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(len(info.epochs)), [str(e) for e in info.epochs])
        ax.set_yticks(range(len(info.layers)), [f"{l} ({w})" for l, w in zip(info.layers, info.widths)])
        ax.set_xlabel("epoch")
        ax.set_title("Filters in Γ's support per layer (number; colour: share of the layer's width)")
        if len(info.epochs) <= 40:
            for i, row in enumerate(info.sizes):
                for j, s in enumerate(row):
                    if s is not None:
                        ax.text(j, i, str(s), ha="center", va="center", fontsize=7,
                                color="white" if share[i, j] < 0.55 else "#1d2330")
        if info.at_epoch in info.epochs:
            j = info.epochs.index(info.at_epoch)
            ax.add_patch(Rectangle((j - 0.5, -0.5), 1.0, len(info.layers), fill=False, lw=2.0, ec="#d62728"))
        fig.colorbar(im, ax=ax, label="share in support", fraction=0.03, pad=0.01)
        return _svg(fig)


def render_ticket_report(out: str | os.PathLike) -> str:
    """The report of a ticket folder (written by :func:`ticket`) as one HTML document; reads only
    the folder's files (summary.json, supports.json, config.json, history.csv, controls/fresh/).

    Raises:
        RunError: a required file is missing or malformed.
    """
    from .._version import __version__
    from ..report import ControlRecord, ModelPoint, RunRecord, curves_info, read_history, read_json, repro_info
    from ..report import plots as _plots
    from ..report.formatting import duration, pct, ratio, si
    from ..report.html import Safe, figure, join, page, render, section, table

    path = Path(out)
    summary = read_json(path / "summary.json")
    config = read_json(path / "config.json")
    supports = read_json(path / "supports.json")
    history = read_history(path / "history.csv")
    fresh_path = path / "controls" / "fresh"
    fresh_history = read_history(fresh_path / "history.csv") if (fresh_path / "history.csv").is_file() else []
    scores = {s["name"]: s for s in summary.get("scores", [])}
    dense_arch = Architecture.from_dict(summary["dense_arch"])
    small_arch = Architecture.from_dict(summary["final_arch"])
    dense, final = scores.get("dense", {}), scores.get("finetuned") or scores.get("ticket", {})

    def cards(items: list[tuple[str, Any]]) -> Safe:
        return render('<div class="cards">$c</div>', c=join(
            render('<div class="card"><div class="k">$k</div><div class="v">$v</div></div>', k=k, v=v) for k, v in items))

    def para(text: Any) -> Safe:
        return render('<p class="note">$t</p>', t=text)

    # summary
    body = [section("summary", "Summary", join([
        cards([
            ("dense test accuracy", pct(dense.get("test_acc"))),
            ("ticket test accuracy", pct(final.get("test_acc"))),
            ("fresh control test accuracy", pct(scores.get("fresh", {}).get("test_acc"))),
            ("ticket MACs vs dense", ratio(final.get("macs"), dense.get("macs"))),
            ("ticket params vs dense", ratio(final.get("params"), dense.get("params"))),
            ("ticket epoch", f"{summary.get('at_epoch')} of {summary.get('epochs')}"),
        ]),
        table(["key", "value"], [
            ("dataset", summary.get("dataset")), ("seed", summary.get("seed")), ("family", dense_arch.family),
            ("dense widths", " ".join(str(w) for w in dense_arch.layer_widths().values())),
            ("ticket widths", " ".join(str(w) for w in small_arch.layer_widths().values())),
            ("fine-tune / control epochs", summary.get("finetune_epochs")), ("fold", summary.get("fold")),
            ("wall time", duration(summary.get("wall_time"))),
            ("command", render("<code>$c</code>", c=config.get("command")) if config.get("command") else None),
        ], css="kv"),
    ]), intro="A ticket keeps the filters in Γ's support at the ticket epoch and physically removes the others. "
              "Validation accuracy selects each trained net's epoch; test accuracy is measured once per net.")]

    # comparison
    rows = [(s["label"], si(s.get("macs")), si(s.get("params")), pct(s.get("val_acc")), pct(s.get("test_acc")),
             s.get("epoch"), s.get("epochs"), si(s.get("train_flops") or None)) for s in summary.get("scores", [])]
    # the plot's colours follow the search report's names: star = the result, orange = from scratch
    roles = {"finetuned": "grown", "fresh": "scratch", "dense": "uniform", "ticket": "seed"}
    points = [ModelPoint(roles[n], scores[n]["label"], scores[n].get("val_acc"), scores[n].get("test_acc"),
                         scores[n].get("macs"), scores[n].get("params"), scores[n].get("train_flops"), None,
                         scores[n].get("epochs")) for n in ("dense", "ticket", "finetuned", "fresh") if n in scores]
    body.append(section("comparison", "Comparison", join([
        table(["net", "MACs", "params", "val acc", "test acc", "epoch", "epochs trained", "training FLOPs"], rows,
              numeric=(1, 2, 3, 4, 5, 6, 7)),
        figure(_plots.accuracy_macs_figure(points, metric="test_acc"), alt="Test accuracy against inference MACs",
               css="half", caption="Test accuracy against inference MACs (star: the fine-tuned ticket)."),
    ]), intro="Dense: the net trained with DessiLBI (best validation epoch). Masked: the dense net at the ticket epoch "
              "with every removed filter's conv weights zeroed (it costs as much as the dense net). Ticket: the "
              "physically pruned net before and after fine-tuning. Fresh: the ticket's widths trained from a new "
              "initialisation with the fine-tune schedule. The dense net trains at DessiLBI's constant learning "
              "rate; the fine-tune and the control decay theirs (cosine), which alone lifts accuracy."))

    # supports
    info = support_info(supports)
    body.append(section("supports", "Γ support per layer", figure(
        support_figure(info), alt="Heatmap of support size per layer per epoch",
        caption=f"Filters in the support of Γ after every epoch (a ResNet residual width counts a channel when any conv "
                f"writing it has it in the support); the outlined column is the ticket epoch ({info.at_epoch}).")))

    # widths
    keep = summary.get("keep") or {}
    at_sizes = (supports.get("sizes") or {}).get(str(summary.get("at_epoch")), {})
    dense_w, small_w = dense_arch.layer_widths(), small_arch.layer_widths()
    wrows = [(l, w, at_sizes.get(l), small_w.get(l), pct(small_w.get(l, 0) / w, 1) if w else None,
              _ranges(keep.get(l, []))) for l, w in dense_w.items()]
    body.append(section("widths", "Widths", table(
        ["layer", "dense width", "support at ticket epoch", "ticket width", "kept", "kept filters"], wrows,
        numeric=(1, 2, 3, 4)), intro="A layer with an empty support keeps its filter with the largest ‖V‖; tied ResNet "
                                     "widths (stem and stage 0 without a projection shortcut) keep the union."))

    # masked vs pruned
    masked = scores.get("masked", {})
    checks = summary.get("fold_check") or {}
    crow = [("masked dense net", pct(masked.get("val_acc")), pct(masked.get("test_acc")), None)]
    for mode, acc in checks.items():
        delta = None if acc.get("test_acc") is None or masked.get("test_acc") is None else \
            f"{100 * (acc['test_acc'] - masked['test_acc']):+.2f} pt"
        crow.append((f"pruned, fold {mode}" + (" (used)" if mode == summary.get("fold") else ""),
                     pct(acc.get("val_acc")), pct(acc.get("test_acc")), delta))
    frows = [(f["module"], f["target"] or None, f["channels"], f["nonzero"], "exact" if f["exact"] else "border differs",
              f"{f['max_shift']:.4g}") for f in summary.get("folds", [])]
    body.append(section("masking", "Masked vs pruned", join([
        table(["net", "val acc", "test acc", "test vs masked"], crow, numeric=(1, 2, 3)),
        para(f"Largest |masked − pruned| logit on the first test batch: {summary.get('max_logit_diff', float('nan')):.4g}."),
        table(["consumer", "folded into", "removed inputs", "non-zero constants", "result", "max shift"], frows,
              numeric=(2, 3, 5)),
    ]), intro="In eval mode a removed channel of the masked net is a constant (its BatchNorm's shift after ReLU). "
              "Folding it into the classifier bias (after global average pooling) or through a 1x1 shortcut without "
              "padding is exact. A 3x3 consumer with zero padding sees the constant only where its window is inside "
              "the image: 'interior' folds the contribution that is exact away from the border, 'mean' folds its "
              "average over positions, 'none' folds nothing."))

    # curves: dense epochs, then the fine-tune; the fresh control aligned with the fine-tune
    # [grow] and [budget] do not apply to a ticket: the reproducibility block leaves them out
    recipe = {k: v for k, v in (config.get("recipe") or {}).items() if k not in ("grow", "budget")}
    run = RunRecord(path=path, config={**config, "recipe": recipe}, summary=summary, history=history, rounds=[],
                    arch=small_arch)
    if fresh_history:
        offset = int(summary.get("epochs") or 0)
        shifted = [{**row, "epoch": (row["epoch"] or 0) + offset} for row in fresh_history]
        run.controls["fresh"] = ControlRecord("fresh", fresh_path, scores.get("fresh", {}), shifted, small_arch)
    body.append(section("curves", "Training curves", figure(
        _plots.curves_figure(curves_info(run)), alt="Loss and accuracy per epoch",
        caption="Dense DessiLBI epochs, then the ticket's fine-tune (shaded); the thin line is the fresh control's "
                "validation accuracy over the same schedule.")))

    # reproduce
    rinfo = repro_info(run)
    parts = []
    if config.get("command"):
        parts.append(render("<h3>Command</h3><pre>$c</pre>", c=config["command"]))
    if rinfo.recipe_toml:
        parts.append(render("<h3>Recipe (resolved, TOML)</h3><pre>$c</pre>", c=rinfo.recipe_toml))
    parts.append(table(["key", "value"], rinfo.config, css="kv"))
    body.append(section("repro", "Reproducibility", join(parts)))

    footer = render("Generated by grownet $v from the files of $p.", v=__version__, p=str(path))
    subtitle = f"{dense_arch.family} net · {summary.get('dataset')} · seed {summary.get('seed')}"
    return str(page(f"grownet ticket {path.name}", subtitle=subtitle, nav=REPORT_SECTIONS, body=join(body, "\n"),
                    footer=footer))


def write_ticket_report(out: str | os.PathLike, *, path: str | os.PathLike | None = None) -> Path:
    """Write :func:`render_ticket_report` of the folder ``out`` to ``path`` (default
    ``out/report.html``) atomically; return the path."""
    from ..files import atomic_write_text

    target = Path(path) if path is not None else Path(out) / "report.html"
    atomic_write_text(target, render_ticket_report(out))
    log.info("wrote %s", target)
    return target


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    parts: list[str] = []
    idx = sorted(indices)
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        parts.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ", ".join(parts)

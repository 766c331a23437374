"""Drawing: each function takes an info record (:mod:`._info`) and returns SVG text.

matplotlib is used through its object API (:class:`matplotlib.figure.Figure`, rendered by
the Agg/SVG canvases), never through pyplot, so no global backend or figure registry is
touched; style settings live in an ``rc_context`` inside each call. Output is deterministic
(no date, fixed id salt) so a regenerated report is byte-identical.

Other pages (``grownet.compare``, ``grownet.tune``, the ticket report) draw their own figures
with the same style through :data:`STYLE`, :data:`WIDTH`, :func:`new_figure`, :func:`to_svg`
and :func:`empty_figure`.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np

from .formatting import si
from ._info import ActivityInfo, ActivityTraceInfo, CurvesInfo, GrowthInfo, ModelPoint, RoundCostInfo

__all__ = [
    "STYLE",
    "WIDTH",
    "accuracy_macs_figure",
    "activity_figure",
    "curves_figure",
    "empty_figure",
    "growth_figure",
    "new_figure",
    "round_cost_figure",
    "to_svg",
]

#: matplotlib settings of every figure (use as ``matplotlib.rc_context(STYLE)``).
STYLE = {
    "svg.hashsalt": "grownet-report",
    "svg.fonttype": "path",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    # Labels carry user text (run folder names, layer names): "$" is drawn as itself, never
    # parsed as mathtext (an unbalanced "$x^{" would raise inside savefig).
    "text.parse_math": False,
}
#: Width in inches of a full-width figure: the page's figure column at 100 px/in.
WIDTH = 9.6
#: One colour per net kind (the grown net and each control), in every figure that shows them.
ARM_COLORS = {"grown": "#1f5fbf", "scratch": "#d9822b", "uniform": "#3a9e5b", "random": "#c0392b", "seed": "#8a5cc2",
              "grown_uniform": "#17a2b8", "fixed_uniform": "#6c757d"}
_DECISION_MARK = {"widen": "#d62728", "clipped": "#ff7f0e", "skipped": "#7f7f7f"}
#: Cell text is drawn only where the grid is small enough to read it.
_MAX_ANNOTATED_COLUMNS = 24


def new_figure(width: float, height: float) -> Any:
    """A pyplot-free :class:`matplotlib.figure.Figure` of ``width`` x ``height`` inches."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(fig: Any) -> str:
    """``fig`` as deterministic SVG text (no date or creator metadata)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return buf.getvalue()


def _arr(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _grid(rows: Sequence[Sequence[float | None]]) -> np.ma.MaskedArray:
    a = np.array([[np.nan if v is None else float(v) for v in row] for row in rows], dtype=float)
    return np.ma.masked_invalid(a.reshape(len(rows), -1))


def empty_figure(message: str) -> str:
    """A full-width strip showing ``message`` (SVG), drawn where there is no data to plot."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        fig = new_figure(WIDTH, 1.0)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, message, ha="center", va="center", color="#5b6475")
        return to_svg(fig)


def _heat_height(n_layers: int) -> float:
    return 1.3 + 0.26 * max(n_layers, 1)


def growth_figure(info: GrowthInfo) -> str:
    """Heatmap of layer width (rows: layers in network order; columns: rounds, final); a
    bold number marks a width that changed since the previous column."""
    import matplotlib
    from matplotlib.colors import LogNorm

    if not info.layers:
        return empty_figure("no growth checks recorded")
    with matplotlib.rc_context(STYLE):
        data = _grid(info.widths)
        fig = new_figure(WIDTH, _heat_height(len(info.layers)))
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#eeeeee")
        lo, hi = float(data.min()), float(data.max())
        im = ax.imshow(data, aspect="auto", cmap=cmap, norm=LogNorm(vmin=lo, vmax=max(hi, lo * 1.01)), interpolation="nearest")
        ax.set_xticks(range(len(info.columns)), info.columns, rotation=45 if len(info.columns) > 12 else 0, ha="right" if len(info.columns) > 12 else "center")
        ax.set_yticks(range(len(info.layers)), info.layers)
        ax.set_xlabel("growth check (widths while the round trained)")
        ax.set_title("Layer width per round")
        if len(info.columns) <= _MAX_ANNOTATED_COLUMNS:
            for i, row in enumerate(info.widths):
                for j, w in enumerate(row):
                    if w is None:
                        continue
                    changed = j > 0 and row[j - 1] != w
                    dark = im.norm(w) > 0.6
                    ax.text(j, i, str(w), ha="center", va="center", fontsize=7.5,
                            fontweight="bold" if changed else "normal", color="white" if dark else "#1d2330")
        cbar = fig.colorbar(im, ax=ax, label="filters", fraction=0.03, pad=0.01)
        ticks = sorted({int(w) for row in info.widths for w in row if w is not None})
        if len(ticks) > 6:
            ticks = [ticks[round(k * (len(ticks) - 1) / 5)] for k in range(6)]
        cbar.set_ticks(ticks, labels=[str(t) for t in ticks])
        cbar.ax.minorticks_off()
        return to_svg(fig)


def activity_figure(info: ActivityInfo) -> str:
    """Heatmap of Γ filter activity per layer per check, with τ marked on the colour bar and
    every cell at or above its τ outlined (red: widened, orange: clipped, grey: skipped)."""
    import matplotlib
    from matplotlib.patches import Rectangle

    if not info.layers:
        return empty_figure("no growth checks recorded")
    with matplotlib.rc_context(STYLE):
        data = _grid(info.activity)
        fig = new_figure(WIDTH, _heat_height(len(info.layers)) + 0.3)
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
        im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        labels = [f"{r}\n(ep {e})" if e is not None else str(r) for r, e in zip(info.rounds, info.epochs)]
        ax.set_xticks(range(len(info.rounds)), labels)
        ax.set_yticks(range(len(info.layers)), info.layers)
        ax.set_xlabel("growth check (round, epoch)")
        ax.set_title("Γ filter activity (share of filters in the support)")
        annotate = len(info.rounds) <= _MAX_ANNOTATED_COLUMNS
        for i in range(len(info.layers)):
            for j in range(len(info.rounds)):
                a, t, d = info.activity[i][j], info.tau[i][j], info.decision[i][j]
                if d == "deepen" or (a is None and d is not None):
                    ax.text(j, i, "new" if d == "deepen" else "", ha="center", va="center", fontsize=7, color="#1d2330")
                    continue
                if a is None:
                    continue
                if annotate:
                    ax.text(j, i, f"{a:.2f}", ha="center", va="center", fontsize=7, color="white" if a < 0.55 else "#1d2330")
                if t is not None and a >= t:
                    color = _DECISION_MARK.get(d or "", "#d62728")
                    ax.add_patch(Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, lw=1.6, ec=color))
        cbar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
        cbar.set_label("activity")
        # τ replaces the regular ticks next to it and is drawn in red across the bar.
        plain = [v for v in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if all(abs(v - t) > 0.06 for t in info.taus)]
        ticks = sorted(plain + info.taus)
        cbar.set_ticks(ticks, labels=[f"τ={v:g}" if v in info.taus else f"{v:g}" for v in ticks])
        for t in info.taus:
            cbar.ax.axhline(t, color="#d62728", lw=2)
        for label, v in zip(cbar.ax.get_yticklabels(), ticks):
            if v in info.taus:
                label.set_color("#d62728")
        return to_svg(fig)


def activity_trace_figure(info: ActivityTraceInfo) -> str:
    """Activity against step for every layer, one panel per growth check (τ dashed)."""
    import matplotlib

    if not info.rounds:
        return empty_figure("no activity traces recorded (grow.signal = support, uniform or off records one value per check)")
    with matplotlib.rc_context(STYLE):
        n = len(info.rounds)
        fig = new_figure(WIDTH, 2.8)
        axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
        for ax, r, steps, acts, taus in zip(axes, info.rounds, info.steps, info.activity, info.tau):
            for layer, values in acts.items():
                ax.plot(steps, [v if v is not None else float("nan") for v in values], lw=1.2, label=layer)
            for t in sorted({t for t in taus.values() if t is not None}):
                ax.axhline(t, color="#d62728", ls="--", lw=1)
            ax.set_title(f"check {r}")
            ax.set_xlabel("step in round")
            ax.set_ylim(-0.02, 1.02)
        axes[0].set_ylabel("activity")
        axes[-1].legend(fontsize=6, loc="lower right", ncol=2)
        return to_svg(fig)


def _mark_events(ax: Any, info: CurvesInfo, *, label: bool) -> None:
    for k, e in enumerate(info.growth_epochs):
        ax.axvline(e + 0.5, color="#9aa3b2", lw=0.9, ls=":", label="growth" if label and k == 0 else None)
    if info.finetune_start is not None and info.epochs:
        ax.axvspan(info.finetune_start - 0.5, max(info.epochs) + 0.5, color="#f2e6c9", alpha=0.55, lw=0,
                   label="fine-tune" if label else None)


def curves_figure(info: CurvesInfo) -> str:
    """Loss (left) and accuracy in % (right) per epoch, train and validation; dotted lines
    after each epoch at which the net grew; the fine-tune shaded; finished controls' validation
    accuracy as thin lines."""
    import matplotlib

    if not info.epochs:
        return empty_figure("history.csv has no epochs")
    with matplotlib.rc_context(STYLE):
        fig = new_figure(WIDTH, 3.3)
        ax_loss, ax_acc = fig.subplots(1, 2)
        x = np.array(info.epochs, dtype=float)
        style = {"marker": "o", "ms": 2.5} if len(x) <= 60 else {}
        ax_loss.plot(x, _arr(info.train_loss), color="#1f5fbf", label="train", **style)
        ax_loss.plot(x, _arr(info.val_loss), color="#d9822b", label="validation", **style)
        ax_acc.plot(x, 100 * _arr(info.train_acc), color="#1f5fbf", label="train", **style)
        ax_acc.plot(x, 100 * _arr(info.val_acc), color="#d9822b", label="validation", **style)
        for name, (ex, acc) in info.controls.items():
            ax_acc.plot(np.array(ex, dtype=float), 100 * _arr(acc), lw=1.0, alpha=0.8,
                        color=ARM_COLORS.get(name, "#555555"), label=f"{name} (val)")
        _mark_events(ax_loss, info, label=False)
        _mark_events(ax_acc, info, label=True)
        ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
        ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(True, color="#e5e8ee", lw=0.6)
            ax.set_xlim(min(info.epochs) - 0.5, max(info.epochs + [e for ex, _ in info.controls.values() for e in ex]) + 0.5)
        ax_loss.legend(loc="upper right", frameon=False)
        ax_acc.legend(loc="lower right", frameon=False)
        return to_svg(fig)


def round_cost_figure(info: RoundCostInfo) -> str:
    """Bars of inference MACs (left) and parameters (right) at each growth check and for
    the final net, each labelled with its value."""
    import matplotlib
    from matplotlib.ticker import FuncFormatter

    if len(info.labels) <= 1 and all(v is None for v in info.macs):
        return empty_figure("no cost recorded")
    with matplotlib.rc_context(STYLE):
        fig = new_figure(WIDTH, 2.9)
        axes = fig.subplots(1, 2)
        x = np.arange(len(info.labels))
        colors = ["#9dbbe6"] * (len(x) - 1) + ["#1f5fbf"]
        for ax, values, title in ((axes[0], info.macs, "Inference MACs per image"), (axes[1], info.params, "Parameters")):
            y = _arr(values)
            ax.bar(x, np.nan_to_num(y), color=colors, width=0.7)
            ax.set_xticks(x, info.labels, rotation=45 if len(x) > 14 else 0)
            ax.set_xlabel("round")
            ax.set_title(title)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: si(v, 3) or ""))
            ax.grid(True, axis="y", color="#e5e8ee", lw=0.6)
            ax.set_axisbelow(True)
            ax.margins(y=0.12)  # headroom for the value labels
            if len(x) <= 16:
                for xi, yi in zip(x, y):
                    if math.isfinite(yi):
                        ax.text(xi, yi, si(yi, 3), ha="center", va="bottom", fontsize=7)
        return to_svg(fig)


def accuracy_macs_figure(points: Sequence[ModelPoint], *, metric: str = "test_acc", front: Sequence[bool] | None = None,
                         title: str = "Accuracy vs inference MACs", label_runs: bool = False) -> str:
    """Scatter of accuracy (``metric``, in %) against MACs (log axis when they span more than
    4x); grown nets as stars, controls as circles; ``front`` flags join the Pareto-optimal
    points with a step line. ``label_runs`` prefixes every label with its run name."""
    import matplotlib
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    usable = [(p, f) for p, f in zip(points, front or [False] * len(points)) if p.macs is not None and getattr(p, metric) is not None]
    if not usable:
        return empty_figure(f"no {metric.replace('_', ' ')} with MACs to plot")
    with matplotlib.rc_context(STYLE):
        fig = new_figure(6.4, 3.8)
        ax = fig.add_subplot()
        macs = [p.macs for p, _ in usable]
        log = max(macs) > 4 * min(macs)
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        for p, _ in usable:
            marker, size, z = ("*", 180, 4) if p.name == "grown" else ("o", 55, 3)  # stars drawn over circles
            ax.scatter([p.macs], [100 * getattr(p, metric)], marker=marker, s=size, color=ARM_COLORS.get(p.name, "#555555"),
                       zorder=z, edgecolors="white", linewidths=0.6)
        ax.margins(x=0.15, y=0.12)
        ax.autoscale_view()
        _label_points(ax, [(p.macs, 100 * getattr(p, metric), f"{p.run}: {p.label}" if label_runs else p.label)
                           for p, _ in usable])
        on_front = sorted((p.macs, 100 * getattr(p, metric)) for p, f in usable if f)
        if len(on_front) > 1:
            fx, fy = zip(*on_front)
            ax.step(fx, fy, where="post", color="#9aa3b2", lw=1.0, ls="--", zorder=1, label="Pareto front")
            ax.legend(loc="lower right", frameon=False)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: si(v, 3) or ""))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("inference MACs per image")
        ax.set_ylabel(("test" if metric == "test_acc" else "validation") + " accuracy (%)")
        ax.set_title(title)
        ax.grid(True, color="#e5e8ee", lw=0.6)
        return to_svg(fig)


def _label_points(ax: Any, points: Sequence[tuple[float, float, str]]) -> None:
    """Label each ``(x, y, text)`` up and right of its point; a label that would overlap an
    earlier one (points at nearly the same place) moves down a line until it is clear."""
    placed: list[tuple[float, float]] = []  # label anchors in display pixels
    line = 11.0  # points
    scale = ax.figure.dpi / 72.0
    for x, y, text in sorted(points, key=lambda p: (-p[1], p[0])):
        px, py = ax.transData.transform((x, y))
        dy = 5.0
        while any(abs(px - qx) < 80 * scale and abs(py + dy * scale - qy) < line * scale for qx, qy in placed):
            dy -= line
        placed.append((px, py + dy * scale))
        ax.annotate(text, (x, y), xytext=(6, dy), textcoords="offset points", fontsize=7.5, color="#1d2330")

"""``study.html``: a growth study on one self-contained page (plot, per-arm table, widths).

Drawing only: the numbers come from :func:`grownet.study.summarize` and the run rows.
Every string is HTML-escaped; the plot uses the report's figure style (mathtext off, so names
are plain text; SVG without a date, so the page is reproducible).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping, Sequence

from .files import atomic_write_text
from .report.plots import ARM_COLORS, STYLE, new_figure, to_svg

__all__ = ["accuracy_macs_svg", "mean_std_text", "page_style", "write_study_page"]


def mean_std_text(v: Mapping[str, float], scale: float = 100.0, digits: int = 2, sign: str = "") -> str:
    """``"mean ± std"`` of a summary's ``{"mean", "std"}`` times ``scale`` (``sign="+"``: signed)."""
    return f"{scale * v['mean']:{sign}.{digits}f} ± {scale * v['std']:.{digits}f}"


def page_style() -> str:
    """The CSS of the study pages."""
    return ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}")


def accuracy_macs_svg(arms: Mapping[str, Mapping[str, Any]]) -> str:
    """Test accuracy (mean ± std over seeds) against MACs, one point per arm of a summary's
    ``arms``, as inline SVG (colours from the report's ARM_COLORS, else the style's cycle)."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        fig = new_figure(6, 4)
        ax = fig.add_subplot()
        for arm, a in arms.items():
            ax.errorbar(a["macs"]["mean"] / 1e6, 100 * a["test_acc"]["mean"], xerr=a["macs"]["std"] / 1e6,
                        yerr=100 * a["test_acc"]["std"], fmt="o", capsize=4, color=ARM_COLORS.get(arm),
                        label=f"{arm} (n={a['n']})")
        ax.set_xlabel("inference MACs (millions)")
        ax.set_ylabel("test accuracy (%), mean ± std over seeds")
        ax.grid(alpha=0.3)
        ax.legend()
        svg = to_svg(fig)
    return svg[svg.index("<svg"):]


def _arm_table(summary: Mapping[str, Any]) -> str:
    head = "<tr><th>arm</th><th>n</th><th>val acc %</th><th>test acc %</th><th>MACs (M)</th><th>params (M)</th>" \
           "<th>train TFLOPs</th><th>wall s</th><th>grown − arm, test (pts)</th></tr>"
    out = [head]
    for arm, a in summary["arms"].items():
        d = summary["grown_minus"].get(arm)
        diff = mean_std_text(d, sign="+") if d else ""
        out.append(
            f"<tr><td>{html.escape(arm)}</td><td>{a['n']}</td>"
            f"<td>{mean_std_text(a['val_acc'])}</td><td>{mean_std_text(a['test_acc'])}</td>"
            f"<td>{a['macs']['mean'] / 1e6:.2f}</td><td>{a['params']['mean'] / 1e6:.3f}</td>"
            f"<td>{a['train_flops']['mean'] / 1e12:.2f}</td><td>{a['wall_time']['mean']:.0f}</td><td>{diff}</td></tr>")
    return "<table>" + "".join(out) + "</table>"


def _contrast_table(summary: Mapping[str, Any]) -> str:
    """The summary's other paired differences (test accuracy, points), or nothing."""
    contrasts = summary.get("contrasts") or {}
    if not contrasts:
        return ""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{d['n']}</td><td>{mean_std_text(d, sign='+')}</td></tr>"
                   for k, d in contrasts.items())
    return ("<h2>Paired differences</h2><p>Test accuracy, per seed, mean ± std over seeds: what growing adds at the "
            "grower's schedule, and what that schedule adds at fixed widths.</p><table><tr><th>arms</th><th>n</th>"
            f"<th>difference (pts)</th></tr>{rows}</table>")


def _widths_table(rows: Sequence[Mapping[str, Any]]) -> str:
    layers: list[str] = []
    for r in rows:
        layers += [l for l in r["widths"] if l not in layers]
    head = "<tr><th>arm</th><th>seed</th><th>test acc %</th>" + "".join(f"<th>{html.escape(l)}</th>" for l in layers) \
        + "<th>growth CV</th></tr>"
    body = []
    for r in rows:
        cells = "".join(f"<td>{r['widths'].get(l, '')}</td>" for l in layers)
        body.append(f"<tr><td>{html.escape(str(r['arm']))}</td><td>{r['seed']}</td><td>{100 * r['test_acc']:.2f}</td>"
                    f"{cells}<td>{r['growth_cv']:.3f}</td></tr>")
    return "<table>" + head + "".join(body) + "</table>"


def write_study_page(path: str | Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> None:
    """Write the study page to ``path`` (atomically)."""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>grownet growth study</title><style>{page_style()}</style>"
            f"</head><body><h1>Growth study</h1><p>Every arm at the grown net's MACs, for the grown run's epochs, on the same "
            f"data split: the controls from scratch (scratch, uniform, random) with one cosine schedule, the searched "
            f"arms (grown, grown_uniform, fixed_uniform) with the grower's DessiLBI rounds, then its fine-tune; "
            f"validation chooses, test is evaluated once per run. Growth CV: coefficient of variation of the "
            f"per-layer growth factors (final / seed width).</p>{accuracy_macs_svg(summary['arms'])}<h2>Arms</h2>{_arm_table(summary)}"
            f"{_contrast_table(summary)}<h2>Widths per run</h2>{_widths_table(rows)}</body></html>\n")
    atomic_write_text(path, page)

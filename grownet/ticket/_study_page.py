"""``study.html`` of a ticket study: accuracy vs MACs, the arms, the claims' differences, and
the per-layer kept fraction of the ticket.

Drawing only: the numbers come from :func:`grownet.ticket.summarize_ticket_study` and the rows.
Every string is HTML-escaped.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..files import atomic_write_text
from ..study_page import accuracy_macs_svg, mean_std_text, page_style

__all__ = ["write_ticket_study_page"]


def _arms(summary: Mapping[str, Any]) -> str:
    out = ["<tr><th>arm</th><th>what</th><th>n</th><th>val acc %</th><th>test acc %</th><th>MACs (M)</th>"
           "<th>params (k)</th><th>train TFLOPs</th><th>wall s</th></tr>"]
    for arm, a in summary["arms"].items():
        out.append(f"<tr><td>{html.escape(arm)}</td><td style='text-align:left'>{html.escape(a['label'])}</td>"
                   f"<td>{a['n']}</td><td>{mean_std_text(a['val_acc'])}</td><td>{mean_std_text(a['test_acc'])}</td>"
                   f"<td>{a['macs']['mean'] / 1e6:.2f}</td><td>{a['params']['mean'] / 1e3:.0f}</td>"
                   f"<td>{a['train_flops']['mean'] / 1e12:.2f}</td><td>{a['wall_time']['mean']:.0f}</td></tr>")
    return "<table>" + "".join(out) + "</table>"


def _differences(summary: Mapping[str, Any]) -> str:
    out = ["<tr><th>test accuracy, first − second (pts, paired by seed)</th><th>mean ± std</th><th>n</th></tr>"]
    for pair, d in summary["differences"].items():
        out.append(f"<tr><td style='text-align:left'>{html.escape(pair.replace('-', ' − '))}</td>"
                   f"<td>{mean_std_text(d, sign='+')}</td><td>{d['n']}</td></tr>")
    return "<table>" + "".join(out) + "</table>"


def _kept(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    t = summary["ticket"]
    kept = t.get("kept_fraction", {})
    head = "<tr><th>layer</th><th>dense width</th><th>kept fraction (ticket, mean ± std)</th></tr>"
    dense = next((r["widths"] for r in rows if r["arm"] == "sgd"), {})
    body = "".join(f"<tr><td>{html.escape(layer)}</td><td>{dense.get(layer, '')}</td><td>{mean_std_text(v, 1.0, 3)}</td></tr>"
                   for layer, v in kept.items())
    macs = f"{mean_std_text(t['macs_fraction'], 100.0, 1)} %" if "macs_fraction" in t else "not yet"
    return (f"<p>Ticket epoch {t['ticket_epoch']} of {t['epochs']}; target {100 * t['target']:.0f}% of the dense MACs; "
            f"kept: {macs}.</p><table>{head}{body}</table>")


def write_ticket_study_page(path: str | Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> None:
    """Write the ticket study's page to ``path`` (atomically)."""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>grownet ticket study</title>"
            f"<style>{page_style()}</style></head><body><h1>Ticket study</h1>"
            "<p>Claim 1: DessiLBI trains as well as SGD (dense arms). Claim 2: the filters DessiLBI's early training "
            "ranks highest are a winning ticket (rewound and fine-tuned arms against the dense nets and the controls at "
            "the ticket's size). Same data split, batches and schedule in every arm unless its row says otherwise; "
            "validation chooses each arm's epoch, test is evaluated once per run.</p>"
            f"{accuracy_macs_svg(summary['arms'])}<h2>Arms</h2>{_arms(summary)}<h2>Differences</h2>"
            f"{_differences(summary)}<h2>The ticket per layer</h2>{_kept(summary, rows)}</body></html>\n")
    atomic_write_text(path, page)

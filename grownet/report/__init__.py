"""Run reports: one self-contained HTML file per run folder.

:func:`write_report` reads only the run folder (COMMON.md "The run folder"), so a report can
be regenerated at any time. Data and drawing are separate: the ``*_info`` functions return
plain records from a :class:`RunRecord`; :mod:`.plots` draws them (matplotlib, SVG embedded
as data URIs) and a private module lays them out with :mod:`.html` (escaped HTML, inline CSS,
a Content-Security-Policy that forbids any request to another host).

The building blocks are public inside grownet, for the other pages (``grownet.compare``,
``grownet.tune``, the ticket report): :mod:`grownet.report.html` (escaping, templates, tables,
the page), :mod:`grownet.report.plots` (figures and their style), :mod:`grownet.report.formatting`
(percentages, SI counts, durations), and the run-folder readers :func:`read_json` and
:func:`read_history` exported here.
"""

from __future__ import annotations

from ._info import (
    CONTROL_LABELS,
    ActivityInfo,
    ArchInfo,
    ArchRow,
    CurvesInfo,
    Decision,
    DecisionInfo,
    GrowthInfo,
    ModelPoint,
    ReproInfo,
    RoundCostInfo,
    SummaryInfo,
    activity_info,
    arch_info,
    controls_info,
    controls_like_grown,
    curves_info,
    decision_info,
    growth_info,
    pareto_front,
    repro_info,
    round_cost_info,
    summary_info,
)
from ._page import SECTIONS, render_report, write_report
from ._run import CONTROL_NAMES, ControlRecord, RunRecord, load_control, load_run, read_history, read_json

__all__ = [
    "CONTROL_LABELS",
    "CONTROL_NAMES",
    "SECTIONS",
    "ActivityInfo",
    "ArchInfo",
    "ArchRow",
    "ControlRecord",
    "CurvesInfo",
    "Decision",
    "DecisionInfo",
    "GrowthInfo",
    "ModelPoint",
    "ReproInfo",
    "RoundCostInfo",
    "RunRecord",
    "SummaryInfo",
    "activity_info",
    "arch_info",
    "controls_info",
    "controls_like_grown",
    "curves_info",
    "decision_info",
    "growth_info",
    "load_control",
    "load_run",
    "pareto_front",
    "read_history",
    "read_json",
    "render_report",
    "repro_info",
    "round_cost_info",
    "summary_info",
    "write_report",
]

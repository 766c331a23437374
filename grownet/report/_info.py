"""Report data: plain records computed from a :class:`~grownet.report.RunRecord`.

Each ``*_info`` function returns numbers and names only (no formatting, no HTML, no
drawing); :mod:`.plots` draws them and :mod:`._page` lays them out. Tests target these
functions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..arch import Architecture
from ..cost import cost
from ..errors import ArchitectureError
from ..families import STEM, parse_layer_name
from ._run import CONTROL_NAMES, RunRecord

__all__ = [
    "CONTROL_LABELS",
    "SummaryInfo",
    "GrowthInfo",
    "ActivityInfo",
    "CurvesInfo",
    "RoundCostInfo",
    "ArchRow",
    "ArchInfo",
    "Decision",
    "DecisionInfo",
    "ReproInfo",
    "ModelPoint",
    "summary_info",
    "growth_info",
    "activity_info",
    "curves_info",
    "round_cost_info",
    "arch_info",
    "decision_info",
    "repro_info",
    "control_label",
    "controls_info",
    "controls_like_grown",
    "pareto_front",
    "layer_order_key",
]

#: How reports name the grown net and each control.
CONTROL_LABELS = {
    "grown": "grown (this run)",
    "scratch": "final widths from scratch",
    "uniform": "uniform width, equal MACs",
    "random": "random allocation, equal MACs",
    "seed": "seed net alone",
    "fixed_uniform": "uniform width, this run's schedule",
}


def _num(value: Any) -> float | None:
    """A finite number or None (JSON null, strings and non-finite values become None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def layer_order_key(layer: str) -> tuple[float, ...]:
    """Sort key putting layer names in network order: ``stem``, then per stage its
    ``stages.S.L`` layers by index, then the ResNet stage width ``stages.S``
    (the order of :meth:`Architecture.layer_widths`)."""
    if layer == STEM:
        return (-1.0,)
    parsed = parse_layer_name(layer)
    if parsed is None:
        return (math.inf, math.inf)
    stage, index = parsed
    return (float(stage), math.inf if index is None else float(index))


# ---- summary ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryInfo:
    """Headline facts. ``metrics`` values: accuracies as fractions, counts, seconds."""

    dataset: str | None
    family: str | None
    classes: list[str]
    val_acc: float | None
    test_acc: float | None
    macs: float | None
    params: float | None
    train_flops: float | None
    wall_time: float | None
    rounds: int | None
    epochs: int | None
    seed: int | None
    device: str | None
    started: str | None
    command: str | None
    versions: dict[str, str]
    seed_widths: dict[str, int]
    final_widths: dict[str, int]
    events: list[str]


def _widths(arch: Any) -> dict[str, int]:
    if not isinstance(arch, Mapping):
        return {}
    try:
        return Architecture.from_dict(arch).layer_widths()
    except ArchitectureError:
        return {}


def _event_text(event: Any) -> str:
    if isinstance(event, Mapping):
        return "; ".join(f"{k}: {v}" for k, v in event.items())
    return str(event)


def summary_info(run: RunRecord) -> SummaryInfo:
    """The summary section: dataset, accuracies, MACs, params, training FLOPs, wall time,
    seed, versions and command line (summary.json first, config.json for the rest)."""
    s, c = run.summary, run.config
    final = s.get("final_arch") if isinstance(s.get("final_arch"), Mapping) else (run.arch.to_dict() if run.arch else None)
    family = run.arch.family if run.arch else (final or {}).get("family")
    versions = c.get("versions") if isinstance(c.get("versions"), Mapping) else {}
    events = s.get("events") if isinstance(s.get("events"), list) else []
    classes = s.get("classes") if isinstance(s.get("classes"), list) else []
    return SummaryInfo(
        dataset=s.get("dataset", c.get("dataset")),
        family=family,
        classes=[str(x) for x in classes],
        val_acc=_num(s.get("val_acc")),
        test_acc=_num(s.get("test_acc")),
        macs=_num(s.get("macs")),
        params=_num(s.get("params")),
        train_flops=_num(s.get("train_flops")),
        wall_time=_num(s.get("wall_time")),
        rounds=_num(s.get("rounds")),
        epochs=_num(s.get("epochs")),
        seed=_num(s.get("seed", c.get("seed"))),
        device=c.get("device"),
        started=c.get("started"),
        command=c.get("command"),
        versions={str(k): str(v) for k, v in versions.items()},
        seed_widths=_widths(s.get("seed_arch")),
        final_widths=_widths(final),
        events=[_event_text(e) for e in events],
    )


# ---- growth timeline and activity ---------------------------------------------------------------


@dataclass(frozen=True)
class GrowthInfo:
    """Width of every layer in every round, then in the final net.

    ``widths[i][j]`` is layer ``layers[i]`` in column ``j`` (``None`` where the layer did not
    exist yet); columns are the rounds (``rounds[j]``, widths while that round trained) and a
    last ``"final"`` column (the final architecture)."""

    layers: list[str]
    columns: list[str]
    rounds: list[int]
    widths: list[list[int | None]]


def _round_rows(run: RunRecord) -> list[tuple[int, int | None, dict[str, Mapping[str, Any]]]]:
    """(round, epoch, {layer: decision row}) per growth check, in order."""
    out = []
    for i, r in enumerate(run.rounds):
        rows = {str(d.get("layer")): d for d in r.get("layers", []) if isinstance(d, Mapping)}
        out.append((int(r.get("round", i + 1)), _num(r.get("epoch")), rows))
    return out


def growth_info(run: RunRecord) -> GrowthInfo:
    """The growth timeline (rounds.json widths; the final column from architecture.json, or
    from the last check's new widths when that file is absent)."""
    checks = _round_rows(run)
    per_round: list[dict[str, int]] = [
        {l: int(d["width"]) for l, d in rows.items() if _num(d.get("width")) and d["width"] > 0} for _, _, rows in checks
    ]
    if run.arch is not None:
        final = run.arch.layer_widths()
    elif checks:
        final = {l: int(d["new_width"]) for l, d in checks[-1][2].items() if _num(d.get("new_width")) and d["new_width"] > 0}
    else:
        final = {}
    columns = per_round + [final]
    layers = sorted({l for col in columns for l in col}, key=layer_order_key)
    return GrowthInfo(
        layers=layers,
        columns=[f"round {r}" for r, _, _ in checks] + ["final"],
        rounds=[r for r, _, _ in checks],
        widths=[[col.get(l) for col in columns] for l in layers],
    )


@dataclass(frozen=True)
class ActivityInfo:
    """Γ filter activity (share of filters in the support, in [0, 1]) per layer per check.

    ``activity[i][j]``, ``tau[i][j]`` and ``decision[i][j]`` belong to layer ``layers[i]`` at
    check ``rounds[j]`` (epoch ``epochs[j]``); ``None`` where the layer did not exist.
    A deepening is listed under the new layer's name with activity ``None``."""

    layers: list[str]
    rounds: list[int]
    epochs: list[int | None]
    activity: list[list[float | None]]
    tau: list[list[float | None]]
    decision: list[list[str | None]]

    @property
    def taus(self) -> list[float]:
        """The distinct τ values, ascending."""
        return sorted({t for row in self.tau for t in row if t is not None})


def activity_info(run: RunRecord) -> ActivityInfo:
    """Filter activity, τ and decision per layer per growth check (rounds.json)."""
    checks = _round_rows(run)
    layers = sorted({l for _, _, rows in checks for l in rows}, key=layer_order_key)

    def cell(rows: Mapping[str, Mapping[str, Any]], layer: str, key: str) -> Any:
        d = rows.get(layer)
        return None if d is None else d.get(key)

    return ActivityInfo(
        layers=layers,
        rounds=[r for r, _, _ in checks],
        epochs=[e for _, e, _ in checks],
        activity=[[_num(cell(rows, l, "activity")) for _, _, rows in checks] for l in layers],
        tau=[[_num(cell(rows, l, "tau")) for _, _, rows in checks] for l in layers],
        decision=[[cell(rows, l, "decision") for _, _, rows in checks] for l in layers],
    )


@dataclass(frozen=True)
class ActivityTraceInfo:
    """Activity along each growth round (the importance signal's ``signal.trace`` in
    rounds.json): for check ``rounds[j]``, ``steps[j]`` are the optimizer steps sampled and
    ``activity[j][layer]`` the layer's activity at each of them; ``tau[j]`` its τ per layer."""

    rounds: list[int]
    steps: list[list[int]]
    activity: list[dict[str, list[float]]]
    tau: list[dict[str, float]]
    signal: str


def activity_trace_info(run: RunRecord) -> ActivityTraceInfo:
    """Activity against step for every layer and check that recorded a trace."""
    rounds, steps, activity, taus = [], [], [], []
    signal = str(run.config.get("recipe", {}).get("grow", {}).get("signal", "support"))
    for record in run.rounds:
        signal_record = record.get("signal")
        trace = signal_record.get("trace") if isinstance(signal_record, Mapping) else None
        if not isinstance(trace, list) or not trace:
            continue
        points = [t for t in trace if isinstance(t, Mapping) and isinstance(t.get("activity"), Mapping)]
        layers = sorted({l for t in points for l in t["activity"]}, key=layer_order_key)
        rounds.append(int(record.get("round", len(rounds) + 1)))
        steps.append([int(t.get("step", 0)) for t in points])
        activity.append({l: [_num(t["activity"].get(l)) for t in points] for l in layers})
        taus.append({d["layer"]: _num(d.get("tau")) for d in record.get("layers", []) if isinstance(d, Mapping) and "layer" in d})
    return ActivityTraceInfo(rounds, steps, activity, taus, signal)


# ---- curves -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvesInfo:
    """Per-epoch curves of the search (history.csv), accuracies as fractions.

    ``growth_epochs``: epochs after which the net grew (checks with ``grew``);
    ``finetune_start``: first fine-tune epoch (``None`` without a fine-tune);
    ``controls``: ``{control name: (epochs, val_acc)}`` for finished controls."""

    epochs: list[int]
    train_loss: list[float | None]
    val_loss: list[float | None]
    train_acc: list[float | None]
    val_acc: list[float | None]
    growth_epochs: list[int]
    finetune_start: int | None
    controls: dict[str, tuple[list[int], list[float | None]]] = field(default_factory=dict)


def curves_info(run: RunRecord) -> CurvesInfo:
    """Loss and accuracy per epoch with growth events and the fine-tune start marked."""
    h = [row for row in run.history if row.get("epoch") is not None]
    grew = [int(r["epoch"]) for r in run.rounds if r.get("grew") and _num(r.get("epoch")) is not None]
    ft = [row["epoch"] for row in h if row.get("phase") == "finetune"]
    controls = {
        name: ([int(r["epoch"]) for r in c.history if r.get("epoch") is not None],
               [r.get("val_acc") for r in c.history if r.get("epoch") is not None])
        for name, c in run.controls.items()
        if c.history
    }
    return CurvesInfo(
        epochs=[int(row["epoch"]) for row in h],
        train_loss=[row.get("train_loss") for row in h],
        val_loss=[row.get("val_loss") for row in h],
        train_acc=[row.get("train_acc") for row in h],
        val_acc=[row.get("val_acc") for row in h],
        growth_epochs=grew,
        finetune_start=min(ft) if ft else None,
        controls=controls,
    )


# ---- cost per round -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundCostInfo:
    """Inference MACs and parameters of the net at each growth check, then of the final net
    (``labels``: ``"1"``, ``"2"``, ..., ``"final"``)."""

    labels: list[str]
    macs: list[float | None]
    params: list[float | None]
    val_acc: list[float | None]


def round_cost_info(run: RunRecord) -> RoundCostInfo:
    """MACs, params and validation accuracy per round (rounds.json) and final (summary.json)."""
    rs = run.rounds
    return RoundCostInfo(
        labels=[str(r.get("round", i + 1)) for i, r in enumerate(rs)] + ["final"],
        macs=[_num(r.get("macs")) for r in rs] + [_num(run.summary.get("macs"))],
        params=[_num(r.get("params")) for r in rs] + [_num(run.summary.get("params"))],
        val_acc=[_num(r.get("val_acc")) for r in rs] + [_num(run.summary.get("val_acc"))],
    )


# ---- final architecture -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchRow:
    """One layer of the final net: width, its MACs and params, and their shares of the
    whole net's (fractions in [0, 1])."""

    layer: str
    width: int | None
    macs: int
    params: int
    macs_share: float
    params_share: float


@dataclass(frozen=True)
class ArchInfo:
    """The final architecture table (from :func:`grownet.cost`); empty without an
    architecture.json."""

    family: str | None
    rows: list[ArchRow]
    macs: int | None
    params: int | None


def arch_info(run: RunRecord) -> ArchInfo:
    """Per-layer width, MACs and params of the final net, from ``grownet.cost(arch).layers``."""
    if run.arch is None:
        return ArchInfo(None, [], None, None)
    c = cost(run.arch)
    widths = run.arch.layer_widths()
    total_macs, total_params = int(c.macs), int(c.params)
    rows = [
        ArchRow(
            layer=name,
            width=widths.get(name),
            macs=lc.macs,
            params=lc.params,
            macs_share=lc.macs / total_macs if total_macs else 0.0,
            params_share=lc.params / total_params if total_params else 0.0,
        )
        for name, lc in c.layers.items()
    ]
    return ArchInfo(run.arch.family, rows, total_macs, total_params)


# ---- decisions and reproducibility -------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One row of the decision log (rounds.json)."""

    round: int
    epoch: int | None
    layer: str
    width: int | None
    activity: float | None
    tau: float | None
    decision: str
    new_width: int | None
    reason: str


@dataclass(frozen=True)
class DecisionInfo:
    """Every growth decision in order; ``counts`` per decision kind; ``events`` from
    summary.json (divergence retries and the like)."""

    decisions: list[Decision]
    counts: dict[str, int]
    events: list[str]

    def changes(self) -> list[Decision]:
        """The decisions other than ``keep``."""
        return [d for d in self.decisions if d.decision != "keep"]


def decision_info(run: RunRecord) -> DecisionInfo:
    """The decision log: one row per layer per growth check."""
    out: list[Decision] = []
    for r, epoch, rows in _round_rows(run):
        for layer, d in rows.items():
            out.append(Decision(
                round=r, epoch=epoch, layer=layer, width=_num(d.get("width")), activity=_num(d.get("activity")),
                tau=_num(d.get("tau")), decision=str(d.get("decision")), new_width=_num(d.get("new_width")),
                reason=str(d.get("reason", "")),
            ))
    counts: dict[str, int] = {}
    for d in out:
        counts[d.decision] = counts.get(d.decision, 0) + 1
    events = run.summary.get("events") if isinstance(run.summary.get("events"), list) else []
    return DecisionInfo(out, counts, [_event_text(e) for e in events])


@dataclass(frozen=True)
class ReproInfo:
    """What is needed to repeat the run: the resolved recipe (``(dotted key, value)`` in
    file order), the recipe as TOML text, and the rest of config.json."""

    recipe: list[tuple[str, Any]]
    recipe_toml: str
    config: list[tuple[str, Any]]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.extend(_flatten(v, key + ".") if isinstance(v, Mapping) else [(key, v)])
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '""'
    return json.dumps(value)  # JSON strings and numbers are valid TOML


def repro_info(run: RunRecord) -> ReproInfo:
    """The reproducibility block (config.json)."""
    recipe = run.config.get("recipe") if isinstance(run.config.get("recipe"), Mapping) else {}
    lines: list[str] = []
    for section, values in recipe.items():
        if isinstance(values, Mapping):
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
            lines.append("")
    rest = {k: v for k, v in run.config.items() if k != "recipe"}
    return ReproInfo(_flatten(recipe), "\n".join(lines).rstrip() + "\n" if lines else "", _flatten(rest))


# ---- controls and comparisons -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPoint:
    """One trained net for the accuracy-vs-MACs view: the grown net or a control."""

    name: str
    label: str
    val_acc: float | None
    test_acc: float | None
    macs: float | None
    params: float | None
    train_flops: float | None
    wall_time: float | None
    epochs: int | None
    run: str = ""


def _point(name: str, label: str, s: Mapping[str, Any], run: str = "") -> ModelPoint:
    return ModelPoint(
        name=name, label=label, val_acc=_num(s.get("val_acc")), test_acc=_num(s.get("test_acc")),
        macs=_num(s.get("macs")), params=_num(s.get("params")), train_flops=_num(s.get("train_flops")),
        wall_time=_num(s.get("wall_time")), epochs=_num(s.get("epochs")), run=run,
    )


def control_label(name: str) -> str:
    """How reports name a control: :data:`CONTROL_LABELS` for the built-in ones, ``"NAME
    (your architecture)"`` for a control of the user's own architecture."""
    return CONTROL_LABELS.get(name, f"{name} (your architecture)")


def controls_info(run: RunRecord) -> list[ModelPoint]:
    """The grown net first, then each finished control in ``run.controls``'s order (as
    :func:`load_run` reads them: the built-in ones, then the user's own by name)."""
    points = [_point("grown", CONTROL_LABELS["grown"], run.summary, run.name)]
    for name, control in run.controls.items():
        points.append(_point(name, control_label(name), control.summary, run.name))
    return points


def controls_like_grown(run: RunRecord) -> list[str]:
    """Names of the finished controls trained from scratch (other than ``scratch``) whose
    architecture equals the grown net's: e.g. ``uniform`` when growth widened every layer by
    one factor."""
    if run.arch is None:
        return []
    return [name for name in CONTROL_NAMES
            if name not in ("scratch", "fixed_uniform") and name in run.controls and run.controls[name].arch == run.arch]


def pareto_front(points: Sequence[ModelPoint], *, metric: str = "test_acc") -> list[bool]:
    """Whether each point is Pareto-optimal for (fewer MACs, higher ``metric``): no other
    point has MACs <= and metric >= with one of them strict. Points missing either value are
    never on the front."""
    vals = [(p.macs, getattr(p, metric)) for p in points]
    out = []
    for i, (m, a) in enumerate(vals):
        if m is None or a is None:
            out.append(False)
            continue
        dominated = any(
            j != i and m2 is not None and a2 is not None and m2 <= m and a2 >= a and (m2 < m or a2 > a)
            for j, (m2, a2) in enumerate(vals)
        )
        out.append(not dominated)
    return out

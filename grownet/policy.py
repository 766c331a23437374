"""Growth decisions: a pure function from (architecture, filter activity, budget) to a plan.

The rules (METHOD.md §2, with a budget and depth added):

- **Layer activity** is the share of a layer's filters in Γ's support. A ResNet stage width
  (``stages.S``) is produced by several convs (every block's ``conv2`` and the projection
  shortcut); its activity is the share over all of their filters (the mean of their
  activities, which all have the same number of filters).
- **Widen** every layer with activity >= τ (τ of the layer's stage; the ResNet stem uses
  stage 0's) to ``max(C + min_add, ceil(ratio * C))``, rounded up to a multiple of
  ``width_multiple`` (1: no rounding), capped at ``max_width``.
- **Deepen** stage S when ``deepen`` is on and every layer of S had activity >= τ_S at this
  check *and* at the previous one: one new layer per stage per check, appended at the end of
  the stage (an identity at first, see grownet.grow), at most ``max_layers_per_stage`` layers
  (VGG convs or ResNet blocks) per stage. A layer added at one check did not exist at the
  previous one, so a stage is deepened at most every other check.
- **Signal-proportional widening** (when the check passes each layer's ``importance``, the
  scale-free signal of :mod:`grownet.signal`): a saturated layer adds
  ``max(min_add, ceil((ratio - 1) * C * f))`` filters with ``f = (a - τ) / (1 - τ)``
  (``f = 1`` when τ = 1), so a layer that is just saturated grows by ``min_add`` and a fully
  active one by the whole ratio.
- **Budget**: when the grown net would pass ``max_macs``, ``max_params`` or ``time_macs`` (the
  most MACs that fit the search's time budget, set by the search when the whole plan would
  not fit), widening takes
  priority over deepening: deepenings are dropped first (each kept if it still fits, in stage
  order). If the widenings alone do not fit: with ``importance``, the budget is spent
  greedily where a filter buys the most, ``priority = importance / width / (MACs per added
  filter) ** cost_exponent`` (importance per filter, which a widening dilutes, per MAC it
  costs), one chunk of a quarter of the layer's wanted increment at a time, each layer taking
  the largest chunk that still fits; without it, every widening's increment is scaled by the
  same largest fraction that fits (binary search over whole filters). Layers left with a
  smaller increment are ``clipped``, those left with none ``skipped``. With
  ``width_multiple`` q > 1 both work in whole multiples of q: a widened layer's width is a
  multiple of q (or ``max_width``) whatever the budget leaves. A budget is never exceeded.
- **ResNet stem and stage 0**: once their widths differ, block ``stages.0.0`` has a learned
  projection shortcut that equal widths would remove; a widening that would make them equal
  stops one filter short (``clipped``; the one width that is then not a multiple of
  ``width_multiple``).
- A ``hold`` reason (max rounds reached, time budget) turns every growth into ``skipped``.

Every decision carries its reason and the numbers behind it (:class:`LayerDecision`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from .arch import Architecture
from .errors import ConfigError
from .families import STEM, parse_layer_name

__all__ = [
    "DECISIONS",
    "LayerDecision",
    "GrowthPlan",
    "widen_width",
    "widen_all",
    "macs_per_filter",
    "stage_of",
    "stage_taus",
    "layer_activity",
    "plan_growth",
]

DECISIONS = ("widen", "deepen", "keep", "clipped", "skipped")

#: ``cost_fn(arch) -> (macs, params)``: inference MACs per image and parameter count.
CostFn = Callable[[Architecture], tuple[int, int]]


@dataclass(frozen=True)
class LayerDecision:
    """One row of a growth check: what happens to one layer, and why.

    ``width`` is the layer's width at the check (0 for a layer a deepening adds);
    ``activity`` is ``None`` for such a layer; ``new_width`` equals ``width`` when the layer
    does not grow.
    """

    layer: str
    width: int
    activity: float | None
    tau: float
    decision: str
    new_width: int
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GrowthPlan:
    """The outcome of one growth check.

    Attributes:
        arch: the architecture after the growth (the input one when nothing grows).
        decisions: one :class:`LayerDecision` per existing layer in network order, then one
            per deepening (added or skipped).
        widen: ``{layer: new width}`` for every layer that grows (clipped ones included).
        deepen: stages that get one more layer, in order; applied after the widenings.
        saturated: whether any layer reached its τ.
        macs, params: cost of ``arch`` (``None`` without a cost function).
    """

    arch: Architecture
    decisions: tuple[LayerDecision, ...]
    widen: Mapping[str, int] = field(default_factory=dict)
    deepen: tuple[int, ...] = ()
    saturated: bool = False
    macs: int | None = None
    params: int | None = None

    @property
    def grew(self) -> bool:
        return bool(self.widen) or bool(self.deepen)


def widen_width(width: int, *, ratio: float, min_add: int, multiple: int = 1) -> int:
    """The widened width ``max(C + min_add, ceil(ratio * C))``, rounded up to a multiple of
    ``multiple``.

    ``ratio * C`` is rounded to 9 decimals before the ceiling, so 1.1 x 10 gives 11, not 12.
    """
    return _round_up(max(width + min_add, math.ceil(round(ratio * width, 9))), multiple)


def _round_up(width: int, multiple: int) -> int:
    """The least multiple of ``multiple`` that is >= ``width``."""
    return -(-width // multiple) * multiple


def widen_all(arch: Architecture, *, ratio: float, min_add: int, max_width: int, multiple: int = 1) -> Architecture | None:
    """``arch`` with every layer widened as a saturated layer is without the importance signal
    (:func:`widen_width`, capped at ``max_width``); None if no layer can widen."""
    out = arch
    for layer, width in arch.layer_widths().items():
        new = min(widen_width(width, ratio=ratio, min_add=min_add, multiple=multiple), max_width)
        if new > width:
            out = out.with_width(layer, new)
    return None if out is arch else out


def macs_per_filter(arch: Architecture, cost_fn: CostFn, layers: Iterable[str] | None = None) -> dict[str, int]:
    """{layer: inference MACs per image that one more filter in it adds (at least 1)}, for
    ``layers`` (default: every layer of ``arch``, in network order)."""
    widths = arch.layer_widths()
    base = cost_fn(arch)[0]
    return {l: max(1, cost_fn(arch.with_width(l, widths[l] + 1))[0] - base) for l in (widths if layers is None else layers)}


def stage_of(layer: str) -> int:
    """Stage index of a layer name (``stem`` counts as stage 0); the records of an
    Architecture carry it as :attr:`~grownet.families.Layer.stage`.

    Raises:
        ValueError: for a name that is neither ``stem`` nor ``stages.S[.L]``.
    """
    parsed = (0, None) if layer == STEM else parse_layer_name(layer)
    if parsed is None:
        raise ValueError(f"not a layer name: {layer!r}")
    return parsed[0]


def stage_taus(tau: float | Sequence[float], num_stages: int) -> tuple[float, ...]:
    """τ for every stage: one number for all, or exactly one per stage.

    Raises:
        ConfigError: when a list's length differs from the number of stages.
    """
    if isinstance(tau, (int, float)):
        return (float(tau),) * num_stages
    taus = tuple(float(t) for t in tau)
    if len(taus) != num_stages:
        raise ConfigError(f"grow.tau: has {len(taus)} values but the net has {num_stages} stages; give one number or one per stage")
    return taus


def layer_activity(arch: Architecture, param_activity: Mapping[str, float]) -> dict[str, float]:
    """Activity per layer name from activity per conv weight name
    (:func:`grownet.optim.filter_activity`), in network order."""
    out: dict[str, float] = {}
    for record in arch.layers:
        layer, names = record.name, record.conv_weights
        missing = [n for n in names if n not in param_activity]
        if missing:
            raise KeyError(f"no filter activity for {missing[0]!r} (is it a structured parameter of the optimizer?)")
        # Rounded to 6 decimals: float32 means (0.4166666567...) read as the fractions they are.
        out[layer] = round(sum(float(param_activity[n]) for n in names) / len(names), 6)
    return out


def _target(arch: Architecture, widen: Mapping[str, int], deepen: Sequence[int]) -> Architecture:
    out = arch
    for layer, width in widen.items():
        out = out.with_width(layer, width)
    for stage in deepen:
        out = out.with_extra_layer(stage)
    return out


def _si(n: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.4g}{suffix}"
    return f"{n:g}"


def plan_growth(
    arch: Architecture,
    activity: Mapping[str, float],
    *,
    tau: float | Sequence[float],
    ratio: float,
    min_add: int,
    previous: Mapping[str, float] | None = None,
    deepen: bool = True,
    max_layers_per_stage: int = 6,
    max_width: int = 1024,
    width_multiple: int = 1,
    max_macs: int = 0,
    max_params: int = 0,
    time_macs: int = 0,
    cost_fn: CostFn | None = None,
    hold: str | None = None,
    importance: Mapping[str, float] | None = None,
    cost_exponent: float = 1.0,
) -> GrowthPlan:
    """Decide one growth check (see the module docstring for the rules).

    Args:
        arch: the current architecture.
        activity: ``{layer name: activity in [0, 1]}`` for every layer of ``arch``
            (:func:`layer_activity`).
        tau: τ for all stages, or one per stage.
        ratio, min_add: the widening rule.
        previous: activity at the previous check (``None`` at the first), for deepening.
        deepen: whether stages may be deepened.
        max_layers_per_stage: deepening cap (VGG convs / ResNet blocks per stage).
        max_width: no layer grows past this width.
        width_multiple: a widened layer's width is a multiple of this (or ``max_width``); the
            budgets are spent in such steps (1: any width).
        max_macs, max_params: budget of the grown net (0 = none); needs ``cost_fn``.
        time_macs: MACs of the largest net whose round and fine-tune fit the search's time
            budget (0 = none; the search's :func:`grownet._search_job.time_cap`); a budget
            like ``max_macs``, named as the time budget in the reasons.
        cost_fn: ``arch -> (macs, params)``.
        hold: when set, nothing grows and every growth is ``skipped`` with this reason.
        importance: ``{layer name: share of the net's importance}`` (:mod:`grownet.signal`);
            turns on signal-proportional widening and the greedy budget allocation.
        cost_exponent: weight of a filter's MAC cost in the greedy priority (0: importance
            alone; 1: importance per MAC).

    Returns:
        The :class:`GrowthPlan`.
    """
    taus = stage_taus(tau, arch.num_stages)
    missing = [r.name for r in arch.layers if r.name not in activity]
    if missing:
        raise KeyError(f"no activity for layer {missing[0]!r}")

    q = width_multiple
    wanted, rows = _widen_rows(arch, activity, taus, ratio=ratio, min_add=min_add, max_width=max_width, multiple=q,
                               proportional=importance is not None)
    saturated = any(r.decision != "keep" for r in rows.values())

    deep_wanted, deep_rows = _deepen_rows(arch, activity, previous, taus, deepen=deepen,
                                          max_layers_per_stage=max_layers_per_stage)

    if hold is not None:
        rows = {l: _skip(r, hold) if r.decision == "widen" else r for l, r in rows.items()}
        deep_rows = {s: _skip(r, hold) if r.decision == "deepen" else r for s, r in deep_rows.items()}
        return GrowthPlan(arch, tuple(rows.values()) + tuple(deep_rows.values()), {}, (), saturated, *_cost(cost_fn, arch))

    widen, kept = dict(wanted), list(deep_wanted)
    budgeted = cost_fn is not None and (max_macs > 0 or max_params > 0 or time_macs > 0)
    if budgeted and (wanted or deep_wanted):
        def over(a: Architecture) -> str | None:
            macs, params = cost_fn(a)  # type: ignore[misc]
            if max_macs and macs > max_macs:
                return f"{_si(macs)} MACs > budget.max_macs {_si(max_macs)}"
            if max_params and params > max_params:
                return f"{_si(params)} params > budget.max_params {_si(max_params)}"
            if time_macs and macs > time_macs:
                return f"{_si(macs)} MACs > {_si(time_macs)}, the most that fit budget.time_budget"
            return None

        full_over = over(_target(arch, wanted, deep_wanted))
        if full_over is not None:
            base_over = over(arch)
            if base_over is not None:  # the current net is already at or past the budget
                widen, kept = {}, []
                rows = {l: _skip(r, f"the current net already has {base_over}") if r.decision == "widen" else r for l, r in rows.items()}
                deep_rows = {s: _skip(r, f"the current net already has {base_over}") if r.decision == "deepen" else r for s, r in deep_rows.items()}
            elif (widen_over := over(_target(arch, wanted, []))) is None:
                kept = []
                for s in deep_wanted:
                    reason = over(_target(arch, wanted, kept + [s]))
                    if reason is None:
                        kept.append(s)
                    else:
                        deep_rows[s] = _skip(deep_rows[s], f"deepening stage {s} too would give {reason}")
            else:
                kept = []
                for s in deep_wanted:
                    deep_rows[s] = _skip(deep_rows[s], f"the widenings alone would give {widen_over}")
                if importance is not None:
                    widen, rows = _allocate(arch, wanted, rows, over, widen_over, importance=importance,
                                            cost_exponent=cost_exponent, cost_fn=cost_fn, multiple=q)  # type: ignore[arg-type]
                else:
                    widen, rows = _clip(arch, wanted, rows, over, widen_over, multiple=q)

    widen, rows = _keep_projection(arch, widen, rows)
    target = _target(arch, widen, kept)
    for s in kept:  # the new layer's width is known once the widenings are applied
        r = deep_rows[s]
        name = r.layer
        deep_rows[s] = LayerDecision(name, 0, None, r.tau, "deepen", target.width(name), r.reason)
    decisions = tuple(rows.values()) + tuple(deep_rows[s] for s in sorted(deep_rows))
    return GrowthPlan(target, decisions, widen, tuple(kept), saturated, *_cost(cost_fn, target))


def _widen_rows(
    arch: Architecture, activity: Mapping[str, float], taus: Sequence[float], *, ratio: float, min_add: int,
    max_width: int, multiple: int, proportional: bool,
) -> tuple[dict[str, int], dict[str, LayerDecision]]:
    """Every layer's widening decision before any budget: ``({layer: wanted width}, rows)``;
    with ``proportional`` the increment follows f = (a - tau) / (1 - tau); the width is rounded
    up to a multiple of ``multiple``."""
    wanted: dict[str, int] = {}
    rows: dict[str, LayerDecision] = {}
    for record in arch.layers:
        layer, width = record.name, record.width
        a, t = float(activity[layer]), taus[record.stage]
        if a < t:
            rows[layer] = LayerDecision(layer, width, a, t, "keep", width, f"activity {a:.3f} < tau {t:g}")
            continue
        full = widen_width(width, ratio=ratio, min_add=min_add)
        frac = 1.0 if not proportional or t >= 1 else min(1.0, max(0.0, (a - t) / (1 - t)))
        rule = f"max({width} + {min_add}, ceil({ratio:g} x {width}))"
        if frac < 1.0:
            full = max(width + min_add, width + math.ceil(round((ratio - 1) * width * frac, 9)))
            rule = f"{width} + max({min_add}, ceil(({ratio:g} - 1) x {width} x {frac:.3f})), f = (a - tau) / (1 - tau)"
        if _round_up(full, multiple) != full:
            full = _round_up(full, multiple)
            rule += f", rounded up to a multiple of {multiple}"
        new = min(full, max_width)
        if new <= width:
            rows[layer] = LayerDecision(layer, width, a, t, "skipped", width, f"activity {a:.3f} >= tau {t:g} but width {width} is at grow.max_width {max_width}")
            continue
        why = f"activity {a:.3f} >= tau {t:g}: {width} -> {new} = {rule}"
        if new == max_width:
            why += f", capped at grow.max_width {max_width}"
        rows[layer] = LayerDecision(layer, width, a, t, "widen", new, why)
        wanted[layer] = new
    return wanted, rows


def _deepen_rows(
    arch: Architecture, activity: Mapping[str, float], previous: Mapping[str, float] | None, taus: Sequence[float], *,
    deepen: bool, max_layers_per_stage: int,
) -> tuple[list[int], dict[int, LayerDecision]]:
    """Deepening candidates: every layer of the stage saturated now and at the previous check."""
    deep_rows: dict[int, LayerDecision] = {}
    deep_wanted: list[int] = []
    for s in range(arch.num_stages if deepen else 0):
        layers = arch.stage_layers(s)
        t = taus[s]
        now = min(float(activity[l]) for l in layers)
        before = min((float(previous[l]) if previous and l in previous else -1.0) for l in layers)
        if now < t or before < t:
            continue
        depth, name = arch.depth(s), arch.extra_layer_name(s)
        if depth >= max_layers_per_stage:
            deep_rows[s] = LayerDecision(name, 0, None, t, "skipped", 0, f"stage {s} saturated twice but already has {depth} layers (grow.max_layers_per_stage {max_layers_per_stage})")
            continue
        deep_wanted.append(s)
        deep_rows[s] = LayerDecision(
            name, 0, None, t, "deepen", 0,
            f"every layer of stage {s} saturated at this check (min activity {now:.3f}) and the previous one (min {before:.3f}), tau {t:g}",
        )
    return deep_wanted, deep_rows


def _keep_projection(
    arch: Architecture, widen: dict[str, int], rows: dict[str, LayerDecision]
) -> tuple[dict[str, int], dict[str, LayerDecision]]:
    """A projection shortcut that exists only because its two layers differ in width (a
    ResNet's stem and stage 0, block ``stages.0.0``) would turn into an identity if they became
    equal, which no function-preserving growth can do. The widened one of the two then stops
    one filter short of the other (fewer MACs and params: the budget still holds)."""
    for sc in arch.shortcuts:
        if sc.by_width:
            widen, rows = _keep_one(arch, widen, rows, sc.in_layer, sc.out_layer, sc.stage)
    return widen, rows


def _keep_one(
    arch: Architecture, widen: dict[str, int], rows: dict[str, LayerDecision], first: str, second: str, stage: int
) -> tuple[dict[str, int], dict[str, LayerDecision]]:
    a, b = arch.width(first), arch.width(second)
    if a == b or widen.get(first, a) != widen.get(second, b):
        return widen, rows
    layer, other = (second, first) if second in widen else (first, second)
    old, new = arch.width(layer), widen[layer] - 1
    widen, rows = dict(widen), dict(rows)
    r = rows[layer]
    why = (f"one filter short of {other} ({widen.get(other, arch.width(other))}) to keep stage {stage}'s "
           "projection shortcut")
    if new > old:
        widen[layer] = new
        rows[layer] = LayerDecision(layer, r.width, r.activity, r.tau, "clipped", new, f"{r.reason}; {why}")
    else:
        del widen[layer]
        rows[layer] = _skip(r, why)
    return widen, rows


def _clip(
    arch: Architecture,
    wanted: Mapping[str, int],
    rows: dict[str, LayerDecision],
    over: Callable[[Architecture], str | None],
    full_over: str,
    *,
    multiple: int = 1,
) -> tuple[dict[str, int], dict[str, LayerDecision]]:
    """Scale every widening's increment by the largest common fraction t/T that fits (each
    width then rounded down to a multiple of ``multiple``, the wanted width kept whole)."""
    widths = arch.layer_widths()
    inc = {l: w - widths[l] for l, w in wanted.items()}
    steps = max(inc.values())

    def at(t: int) -> dict[str, int]:
        grown = {l: wanted[l] if t == steps else (widths[l] + (d * t) // steps) // multiple * multiple
                 for l, d in inc.items()}
        return {l: w for l, w in grown.items() if w > widths[l]}

    lo, hi = 0, steps  # at(lo) fits (the current net), at(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if over(_target(arch, at(mid), [])) is None:
            lo = mid
        else:
            hi = mid
    widen = at(lo)
    rows = dict(rows)
    for layer, new in wanted.items():
        r = rows[layer]
        if layer in widen:
            rows[layer] = LayerDecision(layer, r.width, r.activity, r.tau, "clipped", widen[layer],
                                        f"{r.reason}; clipped to {widen[layer]}: the full widening would give {full_over}")
        else:
            rows[layer] = _skip(r, f"the full widening would give {full_over} and no whole filter fits")
    return widen, rows


def _allocate(
    arch: Architecture,
    wanted: Mapping[str, int],
    rows: dict[str, LayerDecision],
    over: Callable[[Architecture], str | None],
    full_over: str,
    *,
    importance: Mapping[str, float],
    cost_exponent: float,
    cost_fn: CostFn,
    multiple: int = 1,
) -> tuple[dict[str, int], dict[str, LayerDecision]]:
    """Spend the budget greedily: repeatedly give the layer of highest priority
    ``importance / width / (MACs per added filter) ** cost_exponent`` the largest chunk (at
    most a quarter of its wanted increment, in steps to the next multiple of ``multiple``)
    that still fits; a layer where no step fits is done."""
    widths = arch.layer_widths()
    per_filter = macs_per_filter(arch, cost_fn, wanted)
    plan: dict[str, int] = {}
    open_ = set(wanted)
    chunk = {l: max(1, math.ceil((w - widths[l]) / 4)) for l, w in wanted.items()}

    def priority(l: str) -> float:
        return float(importance.get(l, 0.0)) / plan.get(l, widths[l]) / per_filter[l] ** cost_exponent

    def width_at(now: int, k: int, last: int) -> int:
        """The k-th width above ``now`` on the grid of multiples (``last``, the wanted width, ends it)."""
        return min(now // multiple * multiple + k * multiple, last)

    while open_:
        layer = max(sorted(open_), key=priority)
        now = plan.get(layer, widths[layer])
        steps = sorted({width_at(now, k, wanted[layer]) for k in range(1, math.ceil(chunk[layer] / multiple) + 1)})
        lo, hi = 0, len(steps) + 1  # steps[lo - 1] fits (lo = 0: none does); steps[hi - 1] does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if over(_target(arch, {**plan, layer: steps[mid - 1]}, [])) is None:
                lo = mid
            else:
                hi = mid
        if lo > 0:
            plan[layer] = steps[lo - 1]
        if lo < len(steps) or plan.get(layer, widths[layer]) >= wanted[layer]:
            open_.discard(layer)
    rows = dict(rows)
    for layer, new in wanted.items():
        r = rows[layer]
        how = (f"greedy budget: importance share {float(importance.get(layer, 0.0)):.3f}, "
               f"{_si(per_filter[layer])} MACs per added filter")
        if layer in plan and plan[layer] >= new:
            rows[layer] = LayerDecision(layer, r.width, r.activity, r.tau, "widen", new, f"{r.reason}; {how}")
        elif layer in plan:
            rows[layer] = LayerDecision(layer, r.width, r.activity, r.tau, "clipped", plan[layer],
                                        f"{r.reason}; {how}; clipped to {plan[layer]}: the full widening would give {full_over}")
        else:
            rows[layer] = _skip(r, f"{how}; the full widening would give {full_over} and no filter fits after higher-priority layers")
    return plan, rows


def _skip(row: LayerDecision, why: str) -> LayerDecision:
    wanted = f" (wanted {row.new_width})" if row.new_width > row.width else ""
    return LayerDecision(row.layer, row.width, row.activity, row.tau, "skipped", row.width, f"{row.reason}; skipped{wanted}: {why}")


def _cost(cost_fn: CostFn | None, arch: Architecture) -> tuple[int | None, int | None]:
    if cost_fn is None:
        return None, None
    macs, params = cost_fn(arch)
    return int(macs), int(params)

"""Growth decisions (grownet.policy): the widening formula, per-stage tau, the deepening rule,
budget clipping and holds, checked against the rules' equations."""

from __future__ import annotations

import math

import pytest
import torch

from grownet.arch import Architecture, ResStage
from grownet.cost import cost
from grownet.errors import ConfigError
from grownet.policy import layer_activity, macs_per_filter, plan_growth, stage_taus, widen_width

VGG = Architecture("vgg", ((16, 16), (16, 16), (32, 32, 32)))
RULE = dict(tau=0.8, ratio=1.1, min_add=8)


def sum_sq(arch: Architecture) -> tuple[int, int]:
    """A simple monotone cost: sum of squared widths, sum of widths."""
    widths = arch.layer_widths().values()
    return sum(w * w for w in widths), sum(widths)


def acts(arch: Architecture, value: float = 0.5, **over: float) -> dict[str, float]:
    out = {layer: value for layer in arch.layer_widths()}
    out.update({k.replace("_", "."): v for k, v in over.items()})
    return out


@pytest.mark.parametrize(
    ("c", "ratio", "min_add", "expected"),
    [
        (16, 1.1, 8, 24),  # C + min_add wins
        (100, 1.1, 8, 110),  # ceil(1.1 * 100) = 110 (not 111: no float overshoot)
        (101, 1.1, 4, 112),  # ceil(111.1) = 112
        (10, 1.1, 1, 11),  # 1.1 * 10 is 11.000000000000002 in floats; the rule means 11
        (200, 1.1, 4, 220),
        (64, 1.5, 8, 96),
    ],
)
def test_widen_width_is_max_of_additive_and_ratio_rule(c, ratio, min_add, expected):
    assert widen_width(c, ratio=ratio, min_add=min_add) == expected
    assert expected == max(c + min_add, math.ceil(round(ratio * c, 9)))


def test_layers_at_or_above_tau_widen_others_keep():
    a = acts(VGG, 0.5, stages_0_1=0.8, stages_2_2=0.95)
    plan = plan_growth(VGG, a, **RULE)
    by = {d.layer: d for d in plan.decisions}
    assert by["stages.0.1"].decision == "widen" and by["stages.0.1"].new_width == 24  # activity == tau counts
    assert by["stages.2.2"].decision == "widen" and by["stages.2.2"].new_width == 40  # max(32 + 8, ceil(35.2))
    assert by["stages.0.0"].decision == "keep" and by["stages.0.0"].new_width == 16
    assert "0.500 < tau 0.8" in by["stages.0.0"].reason
    assert "16 -> 24" in by["stages.0.1"].reason
    assert dict(plan.widen) == {"stages.0.1": 24, "stages.2.2": 40}
    assert plan.arch.stages == ((16, 24), (16, 16), (32, 32, 40))
    assert plan.grew and plan.saturated and plan.deepen == ()


def test_nothing_saturated_means_no_growth():
    plan = plan_growth(VGG, acts(VGG, 0.79), **RULE)
    assert not plan.grew and not plan.saturated and plan.arch == VGG
    assert {d.decision for d in plan.decisions} == {"keep"}


def test_per_stage_tau():
    a = acts(VGG, 0.85)
    plan = plan_growth(VGG, a, tau=[0.8, 0.9, 0.8], ratio=1.1, min_add=8)
    by = {d.layer: d for d in plan.decisions}
    assert [by[f"stages.1.{i}"].decision for i in range(2)] == ["keep", "keep"]
    assert by["stages.1.0"].tau == 0.9
    assert [by[f"stages.0.{i}"].decision for i in range(2)] == ["widen", "widen"]
    with pytest.raises(ConfigError, match=r"grow\.tau: has 2 values but the net has 3 stages"):
        plan_growth(VGG, a, tau=[0.8, 0.9], ratio=1.1, min_add=8)
    assert stage_taus(0.7, 2) == (0.7, 0.7)


def test_deepen_needs_every_layer_of_the_stage_saturated_at_this_and_the_previous_check():
    now = acts(VGG, 0.5, stages_2_0=0.9, stages_2_1=0.9, stages_2_2=0.85)
    # First check: no previous activity -> no deepening.
    assert plan_growth(VGG, now, **RULE).deepen == ()
    # Previous check had one layer of stage 2 below tau -> no deepening.
    prev = dict(now, **{"stages.2.1": 0.7})
    assert plan_growth(VGG, now, previous=prev, **RULE).deepen == ()
    # Saturated at both checks -> stage 2 gets one more layer, after widening, of the widened last width.
    plan = plan_growth(VGG, now, previous=now, **RULE)
    assert plan.deepen == (2,)
    assert plan.arch.stages == ((16, 16), (16, 16), (40, 40, 40, 40))
    row = plan.decisions[-1]
    assert (row.layer, row.decision, row.width, row.activity, row.new_width) == ("stages.2.3", "deepen", 0, None, 40)
    assert "min activity 0.850" in row.reason
    # Switched off, or at the depth cap.
    assert plan_growth(VGG, now, previous=now, deepen=False, **RULE).deepen == ()
    capped = plan_growth(VGG, now, previous=now, max_layers_per_stage=3, **RULE)
    assert capped.deepen == () and capped.decisions[-1].decision == "skipped"
    assert "grow.max_layers_per_stage 3" in capped.decisions[-1].reason


def test_a_layer_added_at_the_previous_check_blocks_deepening_again():
    deeper = VGG.with_extra_layer(2)
    now = acts(deeper, 0.9)
    previous = acts(VGG, 0.9)  # stages.2.3 did not exist at the previous check
    plan = plan_growth(deeper, now, previous=previous, **RULE)
    assert 2 not in plan.deepen and set(plan.deepen) == {0, 1}


def test_max_width_caps_and_skips():
    arch = Architecture("vgg", ((60, 64),))
    plan = plan_growth(arch, {"stages.0.0": 0.9, "stages.0.1": 0.9}, max_width=64, deepen=False, **RULE)
    by = {d.layer: d for d in plan.decisions}
    assert (by["stages.0.0"].decision, by["stages.0.0"].new_width) == ("widen", 64)
    assert (by["stages.0.1"].decision, by["stages.0.1"].new_width) == ("skipped", 64)
    assert "grow.max_width 64" in by["stages.0.1"].reason


def test_budget_clips_every_widening_by_the_same_largest_fraction_that_fits():
    a = acts(VGG, 0.9)
    full = plan_growth(VGG, a, deepen=False, cost_fn=sum_sq, **RULE)
    assert full.macs == sum_sq(full.arch)[0]
    budget = (sum_sq(VGG)[0] + full.macs) // 2
    plan = plan_growth(VGG, a, deepen=False, cost_fn=sum_sq, max_macs=budget, **RULE)
    assert plan.macs <= budget < full.macs
    inc = {l: full.widen[l] - VGG.width(l) for l in full.widen}
    steps = max(inc.values())
    # t is the largest step count whose widths fit: t + 1 would not.
    t = next(t for t in range(steps, -1, -1) if sum_sq(_scaled(VGG, inc, t, steps))[0] <= budget)
    assert plan.arch == _scaled(VGG, inc, t, steps)
    assert sum_sq(_scaled(VGG, inc, t + 1, steps))[0] > budget
    assert {d.decision for d in plan.decisions} == {"clipped"}
    assert all("max_macs" in d.reason and f"clipped to {d.new_width}" in d.reason for d in plan.decisions)


def _scaled(arch: Architecture, inc: dict[str, int], t: int, steps: int) -> Architecture:
    for layer, d in inc.items():
        if d * t // steps:
            arch = arch.with_width(layer, arch.width(layer) + d * t // steps)
    return arch


def test_budget_with_real_costs_never_exceeded_and_deepening_dropped_first():
    a = acts(VGG, 0.9)
    full = plan_growth(VGG, a, previous=a, cost_fn=lambda x: (cost(x).macs, cost(x).params), **RULE)
    widen_only = cost(VGG.with_width("stages.0.0", 24)).macs  # any widening plan's MACs are above this
    assert full.deepen == (0, 1, 2)
    # Room for all widenings but not for every deepening.
    wide = plan_growth(VGG, a, deepen=False, cost_fn=lambda x: (cost(x).macs, cost(x).params), **RULE)
    budget = (wide.macs + full.macs) // 2
    plan = plan_growth(VGG, a, previous=a, max_macs=budget, cost_fn=lambda x: (cost(x).macs, cost(x).params), **RULE)
    assert plan.macs <= budget and cost(plan.arch).macs == plan.macs
    assert dict(plan.widen) == dict(wide.widen)
    assert 0 < len(plan.deepen) < 3
    skipped = [d for d in plan.decisions if d.decision == "skipped"]
    assert skipped and all("max_macs" in d.reason for d in skipped)
    # A params budget between the current net and one filter more: nothing fits -> all skipped.
    params_now = cost(VGG).params
    tight = plan_growth(VGG, a, previous=a, max_params=params_now + 1, cost_fn=lambda x: (cost(x).macs, cost(x).params), **RULE)
    assert not tight.grew and tight.arch == VGG
    assert {d.decision for d in tight.decisions} == {"skipped"}
    assert widen_only > cost(VGG).macs


def test_a_net_already_over_budget_grows_nothing():
    a = acts(VGG, 0.9)
    plan = plan_growth(VGG, a, cost_fn=sum_sq, max_macs=10, **RULE)
    assert not plan.grew
    assert all("the current net already has" in d.reason for d in plan.decisions)


def test_hold_skips_every_growth_and_keeps_the_rest():
    a = acts(VGG, 0.5, stages_1_0=0.9)
    plan = plan_growth(VGG, a, hold="budget.max_rounds 3 reached", **RULE)
    by = {d.layer: d for d in plan.decisions}
    assert not plan.grew and plan.saturated
    assert by["stages.1.0"].decision == "skipped" and by["stages.1.0"].new_width == 16
    assert by["stages.1.0"].reason.endswith("skipped (wanted 24): budget.max_rounds 3 reached")
    assert by["stages.0.0"].decision == "keep"


def test_resnet_stage_width_activity_is_the_share_over_all_its_convs():
    arch = Architecture("resnet", (ResStage(16, (16, 16)), ResStage(32, (32,))), stem=8)
    per_param = {
        "stem.conv.weight": 1.0,
        "stages.0.0.conv1.weight": 0.25, "stages.0.1.conv1.weight": 0.5,
        "stages.0.0.conv2.weight": 0.5, "stages.0.1.conv2.weight": 1.0, "stages.0.0.shortcut.conv.weight": 0.0,
        "stages.1.0.conv1.weight": 0.75, "stages.1.0.conv2.weight": 0.5, "stages.1.0.shortcut.conv.weight": 1.0,
    }
    act = layer_activity(arch, per_param)
    assert list(act) == list(arch.layer_widths())
    assert act["stem"] == 1.0 and act["stages.0.0"] == 0.25
    assert act["stages.0"] == pytest.approx(0.5)  # (0.5 + 1.0 + 0.0) / 3
    assert act["stages.1"] == pytest.approx(0.75)
    with pytest.raises(KeyError, match="stages.1.0.conv2.weight"):
        layer_activity(arch, {k: v for k, v in per_param.items() if k != "stages.1.0.conv2.weight"})
    # The stem uses stage 0's tau; widening a ResNet stage width.
    plan = plan_growth(arch, act, tau=[0.9, 0.7], ratio=1.1, min_add=4, deepen=False)
    assert dict(plan.widen) == {"stem": 12, "stages.1.0": 36, "stages.1": 36}


@pytest.mark.parametrize("stem, stage0, saturated, expected, decision", [
    (24, 16, ("stages.0",), {"stages.0": 23}, "clipped"),  # 16 -> 24 would equal the stem
    (16, 24, ("stem",), {"stem": 23}, "clipped"),  # the stem growing into stage 0's width
    (17, 16, ("stages.0",), {"stages.0": 24}, "widen"),  # 24 != 17: nothing to avoid
    (16, 16, ("stem", "stages.0"), {"stem": 24, "stages.0": 24}, "widen"),  # no projection to keep
])
def test_resnet_widening_never_removes_stage_0s_projection_shortcut(stem, stage0, saturated, expected, decision):
    from grownet.grow import apply
    from grownet.models import build_model, has_shortcut

    arch = Architecture("resnet", (ResStage(stage0, (stage0,)), ResStage(32, (32,))), stem=stem)
    act = {layer: 1.0 if layer in saturated else 0.0 for layer in arch.layer_widths()}
    plan = plan_growth(arch, act, tau=0.8, ratio=1.5, min_add=8, deepen=False)
    assert dict(plan.widen) == expected
    assert {r.layer: r.decision for r in plan.decisions if r.layer in expected} == {k: decision for k in expected}
    if has_shortcut(arch, 0, 0):
        assert has_shortcut(plan.arch, 0, 0)
    model = build_model(arch).eval()
    x = torch.randn(2, 3, 32, 32)
    grown = apply(model, arch, plan.widen, plan.deepen).model.eval()  # raises if the shortcut would go
    torch.testing.assert_close(grown(x), model(x), atol=1e-5, rtol=1e-5)


# ---- the importance signal: signal-proportional widening and the greedy budget ------------------


def test_widening_follows_the_signal_with_importance():
    """f = (a - tau) / (1 - tau): a just-saturated layer adds min_add, a fully active one the
    whole ratio, in between ceil((ratio - 1) * C * f)."""
    arch = Architecture("vgg", ((100,), (100,), (100,)))
    a = {"stages.0.0": 1.0, "stages.1.0": 0.75, "stages.2.0": 0.5}
    share = {layer: 1 / 3 for layer in a}
    plan = plan_growth(arch, a, tau=0.5, ratio=1.5, min_add=8, importance=share)
    widths = plan.arch.layer_widths()
    assert widths["stages.0.0"] == 150  # f = 1: ceil(1.5 x 100)
    assert widths["stages.1.0"] == 100 + math.ceil(0.5 * 100 * 0.5)  # f = 0.5: 125
    assert widths["stages.2.0"] == 108  # f = 0: min_add
    assert "f = (a - tau) / (1 - tau)" in {d.layer: d for d in plan.decisions}["stages.1.0"].reason


def _real_cost(arch: Architecture) -> tuple[int, int]:
    c = cost(arch)
    return c.macs, c.params


def test_greedy_budget_spends_where_a_filter_buys_the_most_and_never_passes_it():
    arch = Architecture("vgg", ((16,), (32,), (64,)))
    a = {layer: 1.0 for layer in arch.layer_widths()}
    share = {"stages.0.0": 0.3, "stages.1.0": 0.3, "stages.2.0": 0.4}
    base = _real_cost(arch)[0]
    budget = int(base * 1.6)  # the late layer's doubling (+1.18M) fits, the rest only in part
    plan = plan_growth(arch, a, tau=0.5, ratio=2.0, min_add=8, importance=share, cost_exponent=1.0,
                       max_macs=budget, cost_fn=_real_cost)
    assert plan.macs <= budget
    by = {d.layer: d for d in plan.decisions}
    # the late layer (cheapest per filter, most important) gets its whole widening first
    assert by["stages.2.0"].decision == "widen" and by["stages.2.0"].new_width == 128
    assert "greedy budget" in by["stages.2.0"].reason
    # what is left goes to the next best; nothing that fits is left unspent by a whole filter
    grown = plan.arch.layer_widths()
    for layer in arch.layer_widths():
        if grown[layer] < by[layer].new_width or by[layer].decision != "widen":
            one_more = plan.arch.with_width(layer, grown[layer] + 1)
            assert by[layer].decision in ("clipped", "skipped") and _real_cost(one_more)[0] > budget or grown[layer] >= 2 * arch.width(layer)
    # layers differ: the budget is not one common fraction
    factors = {layer: grown[layer] / arch.width(layer) for layer in grown}
    assert len(set(factors.values())) > 1, factors


def test_cost_exponent_zero_follows_importance_alone():
    arch = Architecture("vgg", ((16,), (32,), (64,)))
    a = {layer: 1.0 for layer in arch.layer_widths()}
    share = {"stages.0.0": 0.6, "stages.1.0": 0.2, "stages.2.0": 0.2}  # per filter: 0.0375, 0.00625, 0.003
    budget = int(_real_cost(arch)[0] * 1.2)
    plan = plan_growth(arch, a, tau=0.5, ratio=2.0, min_add=8, importance=share, cost_exponent=0.0,
                       max_macs=budget, cost_fn=_real_cost)
    grown = plan.arch.layer_widths()
    assert grown["stages.0.0"] > 16 and plan.macs <= budget


def test_macs_per_filter_is_the_cost_of_one_more_filter():
    # sum of squared widths: one more filter in a layer of width w adds 2w + 1
    assert macs_per_filter(VGG, sum_sq) == {layer: 2 * w + 1 for layer, w in VGG.layer_widths().items()}
    assert macs_per_filter(VGG, sum_sq, ["stages.2.1"]) == {"stages.2.1": 65}
    # real MACs: a filter of the first conv (32x32, 3 inputs, feeding the next conv) costs more
    # than one of the last (at the lowest resolution)
    per = macs_per_filter(VGG, lambda a: (cost(a).macs, cost(a).params))
    assert per["stages.0.0"] > per["stages.2.2"] > 0
    assert per["stages.2.2"] == cost(VGG.with_width("stages.2.2", 33)).macs - cost(VGG).macs


@pytest.mark.parametrize(("c", "ratio", "min_add", "multiple", "expected"), [
    (16, 1.1, 8, 16, 32),  # 24 rounded up
    (32, 1.1, 8, 16, 48),  # 40 rounded up
    (24, 2.0, 8, 16, 48),  # 48 is a multiple already
    (100, 1.1, 4, 8, 112),  # 110 rounded up
    (100, 1.1, 4, 1, 110),  # no rounding
])
def test_widen_width_rounds_up_to_the_width_multiple(c, ratio, min_add, multiple, expected):
    assert widen_width(c, ratio=ratio, min_add=min_add, multiple=multiple) == expected


def _on_grid(plan, arch: Architecture, q: int, max_width: int = 1024) -> bool:
    """Whether every layer ``plan`` widened ends on a multiple of ``q`` (or at ``max_width``)."""
    grown = plan.arch.layer_widths()
    return all(grown[l] % q == 0 or grown[l] == max_width for l, w in arch.layer_widths().items() if grown[l] != w)


@pytest.mark.parametrize("importance", [None, {"stages.0.0": 0.2, "stages.0.1": 0.1, "stages.1.0": 0.3, "stages.1.1": 0.1,
                                                "stages.2.0": 0.1, "stages.2.1": 0.1, "stages.2.2": 0.1}])
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.8, 1.0])
def test_with_a_width_multiple_every_widened_width_is_a_multiple_and_the_budget_holds(importance, fraction):
    """grow.width_multiple q = 16 on VGG widths that are not multiples of 16 (20, 24, 40): every
    layer the plan widens ends on a multiple of 16, through the wanted widths, the common-
    fraction clip (no importance) and the greedy allocation (importance); the MACs budget is
    never passed, and one more step of 16 filters in any clipped or skipped layer would pass it."""
    arch = Architecture("vgg", ((20, 24), (40, 24), (24, 40, 20)))
    a = acts(arch, 0.9)
    rule = {"tau": 0.8, "ratio": 1.5, "min_add": 8, "deepen": False, "importance": importance, "cost_fn": _real_cost,
            "width_multiple": 16}
    full = plan_growth(arch, a, **rule)
    assert _on_grid(full, arch, 16) and all(w % 16 == 0 for w in full.widen.values())
    budget = int(_real_cost(arch)[0] + fraction * (full.macs - _real_cost(arch)[0]))
    plan = plan_growth(arch, a, max_macs=budget, **rule)
    assert plan.macs <= budget and _on_grid(plan, arch, 16)
    if fraction < 1.0:
        assert plan.macs < full.macs
    grown = plan.arch.layer_widths()
    if importance is not None:  # greedy: no layer short of its wanted width has room for one more step
        for layer, w in grown.items():
            if w < full.arch.width(layer):
                one_more = plan.arch.with_width(layer, w // 16 * 16 + 16)
                assert _real_cost(one_more)[0] > budget, layer


def test_a_width_multiple_of_one_is_the_default_and_leaves_the_widths_as_the_rule_gives_them():
    """width_multiple = 1 is the default and rounds nothing: through both budget paths the plan
    is the one made without the argument, and its widths are off any grid of 16 (the older tests
    above hold the rule's own equations at the default)."""
    arch = Architecture("vgg", ((20, 24), (40, 24), (24, 40, 20)))
    a = acts(arch, 0.9)
    share = {layer: 1 / 7 for layer in a}
    for importance in (None, share):
        rule = {"tau": 0.8, "ratio": 1.5, "min_add": 3, "deepen": False, "importance": importance, "cost_fn": _real_cost}
        full = plan_growth(arch, a, **rule)
        budget = (_real_cost(arch)[0] + full.macs) // 2
        assert plan_growth(arch, a, max_macs=budget, width_multiple=1, **rule) == plan_growth(arch, a, max_macs=budget, **rule)
        assert any(w % 16 for w in plan_growth(arch, a, max_macs=budget, **rule).widen.values())

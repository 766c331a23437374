"""A search's plan (grownet.plan) and console (grownet.progress.RichReporter): the estimate's
schedule against its stated assumptions, the probe leaving the run untouched (a run with a
plan trains exactly as one without), the live line and the plain lines, and the summary whose
two lines of Python load the net."""

from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

import grownet
from _smoke import FAST, SMOKE, smoke_dataset
from grownet.cost import cost
from grownet.data import Dataset, make_loaders
from grownet.job import seed_arch
from grownet.models import build_model
from grownet.plan import Forecast, PhaseEstimate, RunPlan, duration, plan_run, probe, schedule, step_time_ratio
from grownet.policy import widen_width
from grownet.progress import Reporter, RichReporter, summary_lines
from grownet.recipe import load_recipe
from grownet.search import search

#: Shorter than FAST: rounds of one epoch, two rounds (the first check grows, the second is held).
QUICK = {**FAST, "grow.local_epochs": 1, "budget.max_rounds": 2}


class _Dims:
    num_classes, in_channels, input_size = 10, 3, 32



#: The schedule's arithmetic is checked on the CPU recipe with these keys pinned (its 1.5x
#: widening and three checks when the tests were written), so a retuned recipe does not move it.
FIXED = {"grow.ratio": "1.5", "budget.max_rounds": "3"}

def _per_epoch(macs: int) -> float:
    return macs / 1e6  # one second per million MACs: the schedule's seconds read off its MACs


def _widened(arch, recipe):
    g = recipe.grow
    for layer, width in arch.layer_widths().items():
        arch = arch.with_width(layer, min(widen_width(width, ratio=g.ratio, min_add=g.min_add), g.max_width))
    return arch


# ---- the schedule --------------------------------------------------------------------------------


def test_the_cpu_recipe_widens_twice_then_clips_to_its_macs_budget():
    r = load_recipe("cifar10-cpu").with_overrides(FIXED).with_overrides({"budget.time_budget": "0"})
    seed = seed_arch(r, _Dims)
    once = _widened(seed, r)
    phases = schedule(seed, r, _per_epoch)
    m0, m1 = cost(seed).macs, cost(once).macs
    assert [(p.phase, p.round, p.epochs, p.macs) for p in phases] == [
        ("grow", 1, 2, m0), ("grow", 2, 2, m1), ("grow", 3, 2, 28_000_000), ("finetune", 3, r.finetune.epochs, 28_000_000)]
    assert all(p.seconds == pytest.approx(p.epochs * p.macs / 1e6) for p in phases)
    # the recipe's own comment: 6.6M -> ~15M -> clipped to 28M
    assert round(m0 / 1e5) == 66 and 14e6 < m1 < 16e6


def test_max_rounds_holds_growth_and_a_params_budget_clips_it():
    r = load_recipe("cifar10-cpu").with_overrides(FIXED).with_overrides({"budget.time_budget": "0", "budget.max_rounds": "1"})
    seed = seed_arch(r, _Dims)
    assert [p.phase for p in schedule(seed, r, _per_epoch)] == ["grow", "finetune"]
    c0, c1 = cost(seed), cost(_widened(seed, r))
    limit = (c0.params + c1.params) // 2
    r = r.with_overrides({"budget.max_rounds": "0", "budget.max_macs": "0", "budget.max_params": str(limit)})
    grow = [p for p in schedule(seed, r, _per_epoch) if p.phase == "grow"]
    t = (limit - c0.params) / (c1.params - c0.params)  # the share of the widening that fits
    assert len(grow) == 2 and grow[1].macs == round(c0.macs + t * (c1.macs - c0.macs))


def test_min_rounds_adds_rounds_of_the_last_net_until_the_time_budget_says_stop():
    r = load_recipe("cifar10-cpu").with_overrides(FIXED).with_overrides({"budget.time_budget": "0"})
    seed = seed_arch(r, _Dims)
    m0 = cost(seed).macs
    full = r.with_overrides({"budget.max_macs": str(m0), "budget.min_rounds": "3"})  # nothing fits: no growth
    assert [(p.phase, p.round, p.epochs, p.macs) for p in schedule(seed, full, _per_epoch)] == [
        ("grow", 1, 2, m0), ("grow", 2, 2, m0), ("grow", 3, 2, m0), ("finetune", 3, r.finetune.epochs, m0)]
    # a round starts only if it and the fine-tune fit, as the search's time check has it
    need = (4 + 2 + r.finetune.epochs) * m0 / 1e6  # rounds 1-2 done, round 3 and the fine-tune
    at = full.with_overrides({"budget.time_budget": str(math.ceil(need))})
    below = full.with_overrides({"budget.time_budget": str(math.floor(need) - 1)})
    assert [p.round for p in schedule(seed, at, _per_epoch) if p.phase == "grow"] == [1, 2, 3]
    assert [p.round for p in schedule(seed, below, _per_epoch) if p.phase == "grow"] == [1, 2]


def test_the_time_budget_cuts_growth_to_what_fits_as_the_search_does():
    """Where elapsed + the next round and the fine-tune at the grown MACs would pass
    budget.time_budget, the round grows to the most MACs that fit, and is the last
    (grownet._search_job.fit_in_time); where not one MAC more fits, growth is held."""
    r = load_recipe("cifar10-cpu").with_overrides(FIXED)
    seed = seed_arch(r, _Dims)
    m0, m1 = cost(seed).macs, cost(_widened(seed, r)).macs
    epochs = r.grow.local_epochs + r.finetune.epochs  # round 2 and the fine-tune
    need = (2 * m0 + m1 * epochs) / 1e6  # round 1, then round 2 and the fine-tune at m1
    at = r.with_overrides({"budget.time_budget": str(math.ceil(need))})
    assert [(p.round, p.macs) for p in schedule(seed, at, _per_epoch) if p.phase == "grow"][:2] == [(1, m0), (2, m1)]

    budget = math.floor(need) - 1
    cut = r.with_overrides({"budget.time_budget": str(budget)})
    grow = [(p.round, p.macs) for p in schedule(seed, cut, _per_epoch) if p.phase == "grow"]
    most = (budget - 2 * m0 / 1e6) * 1e6 / epochs  # elapsed + most x epochs / 1e6 = budget
    assert [g[0] for g in grow] == [1, 2] and m0 < grow[1][1] < m1 and abs(grow[1][1] - most) <= 1

    none = r.with_overrides({"budget.time_budget": str(math.floor((2 * m0 + m0 * epochs) / 1e6))})
    assert [p.round for p in schedule(seed, none, _per_epoch) if p.phase == "grow"] == [1]


def test_the_time_check_takes_the_rounds_median_epoch_after_its_first_times_the_measured_step_ratio():
    """time_hold: elapsed + (local_epochs + finetune.epochs) x the round's median epoch after its
    first (which carries the growth check before it) x the grown net's step-time ratio
    (measured by the search), else the MACs ratio."""
    from grownet._search_job import SearchState, time_hold
    from grownet.arch import Architecture
    from grownet.cost import Cost
    from grownet.policy import GrowthPlan

    r = load_recipe("cifar10-vgg").with_overrides({"grow.local_epochs": "4", "finetune.epochs": "6"})
    state = SearchState(round=2, history=[
        {"phase": "grow", "round": 1, "wall_time": 50.0},
        {"phase": "grow", "round": 2, "wall_time": 59.0},  # after the check: 9 s
        {"phase": "grow", "round": 2, "wall_time": 61.0},
        {"phase": "grow", "round": 2, "wall_time": 63.5},
        {"phase": "grow", "round": 2, "wall_time": 65.5},  # median of 2, 2.5, 2: 2 s
    ])
    plan = GrowthPlan(Architecture(family="vgg", stages=[[16]]), decisions=(), macs=20_000_000)
    now = Cost(macs=10_000_000, params=1, train_flops_per_sample=0, layers={})
    need_measured, need_macs = 10 * 2.0 * 1.25, 10 * 2.0 * 2.0  # 25 s, 40 s

    def hold(budget: float, ratio: float | None, at: SearchState = state) -> str | None:
        rb = r.with_overrides({"budget.time_budget": str(budget)})
        return time_hold(plan, at, rb, now, 100.0, step_ratio=ratio)

    assert hold(100 + need_measured, 1.25) is None
    assert hold(100 + need_measured - 0.5, 1.25) == (
        "budget.time_budget 124.5 s: 100 s elapsed + about 25 s for another round and the fine-tune would pass it")
    assert hold(100 + need_macs, None) is None and hold(100 + need_macs - 0.5, None) is not None
    # a 2-epoch round (the CPU recipe's): its second epoch; a 1-epoch round: that epoch
    two = SearchState(round=2, history=[{"phase": "grow", "round": k, "wall_time": t}
                                        for k, t in ((1, 50.0), (2, 80.0), (2, 90.0))])
    assert hold(100 + 10 * 10.0 * 1.25, 1.25, two) is None and hold(100 + 10 * 10.0 * 1.25 - 0.5, 1.25, two) is not None
    one = SearchState(round=1, history=[{"phase": "grow", "round": 1, "wall_time": 30.0}])
    assert hold(100 + 10 * 30.0, 1.0, one) is None and hold(100 + 10 * 30.0 - 0.5, 1.0, one) is not None


def test_the_time_cap_interpolates_the_epoch_between_the_present_net_and_the_plan():
    """time_cap: the MACs m whose epoch, linear in MACs between the present net's (ratio 1) and
    the plan's (its measured ratio, else its MACs ratio), makes elapsed + (local_epochs +
    finetune.epochs) epochs meet the budget; never past the plan; 0 when not even the present
    net's round and fine-tune fit."""
    from grownet._search_job import SearchState, time_cap
    from grownet.arch import Architecture
    from grownet.cost import Cost
    from grownet.policy import GrowthPlan

    r = load_recipe("cifar10-vgg").with_overrides({"grow.local_epochs": "4", "finetune.epochs": "6"})
    state = SearchState(round=1, history=[{"phase": "grow", "round": 1, "wall_time": t} for t in (3.0, 5.0, 7.0)])
    plan = GrowthPlan(Architecture(family="vgg", stages=[[16]]), decisions=(), macs=20_000_000)
    now = Cost(macs=10_000_000, params=1, train_flops_per_sample=0, layers={})
    unit = 10 * 2.0  # the round and fine-tune at the present net: 10 epochs of 2 s

    def cap(left: float, ratio: float | None) -> int:
        return time_cap(plan, state, r.with_overrides({"budget.time_budget": str(100 + left)}), now, 100.0,
                        step_ratio=ratio)

    assert cap(2.0 * unit, 3.0) == 15_000_000  # half of the way to ratio 3
    assert cap(1.5 * unit, None) == 15_000_000  # half of the way to the MACs ratio 2
    assert cap(5.0 * unit, 3.0) == 20_000_000  # the whole plan fits
    assert cap(1.0 * unit, 3.0) == 0 and cap(0.5 * unit, None) == 0


def test_a_growth_that_would_pass_the_time_budget_is_cut_to_what_fits(caplog):
    """fit_in_time: the plan made again under time_cap's MACs, a budget like max_macs whose
    reasons name the time budget, kept when time_hold lets its round and fine-tune fit; None
    where nothing larger than the present net fits, with the reason logged."""
    from grownet._search_job import SearchState, _macs_params, fit_in_time, time_hold
    from grownet.arch import Architecture
    from grownet.policy import plan_growth

    r = load_recipe("cifar10-vgg").with_overrides({"grow.local_epochs": "2", "finetune.epochs": "8"})
    arch = Architecture("vgg", ((16, 16), (16, 16), (16, 16)))
    activity = {layer.name: 1.0 for layer in arch.layers}
    rule = dict(tau=0.5, ratio=2.0, min_add=4, deepen=False, cost_fn=_macs_params)
    full = plan_growth(arch, activity, **rule)
    now = cost(arch)
    state = SearchState(round=1, history=[{"phase": "grow", "round": 1, "wall_time": t} for t in (1.0, 2.0)])
    half = 100 + 10 * (1 + full.macs / now.macs) / 2  # room for an epoch halfway to the plan's MACs ratio
    rb = r.with_overrides({"budget.time_budget": str(half)})
    assert time_hold(full, state, rb, now, 100.0) is not None

    def replan(cap: int):
        return plan_growth(arch, activity, time_macs=cap, **rule)

    fit = fit_in_time(full, None, replan, state, rb, now, lambda: 100.0)
    assert fit is not None and now.macs < fit.macs <= (now.macs + full.macs) / 2
    assert time_hold(fit, state, rb, now, 100.0) is None
    assert any(d.decision == "clipped" and "the most that fit budget.time_budget" in d.reason for d in fit.decisions)
    tight = r.with_overrides({"budget.time_budget": str(100 + 10)})  # the present net's round and fine-tune only
    with caplog.at_level("INFO", logger="grownet.search"):
        assert fit_in_time(full, None, replan, state, tight, now, lambda: 100.0) is None
        # a plan measured no slower than the present net: nothing to cut
        assert fit_in_time(full, 1.0, replan, state, rb, now, lambda: 100.0) is None
    assert caplog.messages == [
        ("check 1: time budget: no cut tried: another round of the present net and the fine-tune (about 10 s) would "
         "pass the 10 s left, whatever grows"),
        (f"check 1: time budget: no cut tried: the {half - 110:.0f} s left beyond the present net's round and "
         "fine-tune buy no filter")]


def _saturated(arch):
    """A Trainee of a fresh ``arch`` whose DessiLBI state saturates every layer (every filter's
    ||V|| > λ, Γ = κ·prox(V) again)."""
    from grownet.loop import Trainee
    from grownet.optim import DessiLBI, dessilbi_param_groups

    model = build_model(arch)
    opt = DessiLBI(dessilbi_param_groups(model), lr=0.05)
    for p in (q for g in opt.param_groups if g["structure"] for q in g["params"]):
        opt.init_state(p)["V"].fill_(1.0)
        del opt.state[p]["gamma"]
    return Trainee(model, opt, cost(arch))


@pytest.mark.parametrize("rank", [0, 1])
def test_under_a_time_budget_only_rank_0_probes_and_every_rank_takes_its_decision(rank):
    """growth_check's plan and time check (which probes the grown net) run inside ``share``:
    on rank 0 they run; on another rank ``share`` hands over rank 0's decision and nothing is
    probed there."""
    from grownet._search_job import SearchState, growth_check
    from grownet.arch import Architecture

    r = load_recipe("cifar10-vgg").with_overrides({"budget.time_budget": "100", "grow.local_epochs": "2"})
    arch = Architecture(family="vgg", stages=[[8], [8]])
    net = _saturated(arch)
    state = SearchState(round=1, history=[{"phase": "grow", "round": 1, "wall_time": t, "val_acc": 0.5} for t in (10.0, 20.0)])
    probed: list[Architecture] = []

    def step_ratio(grown: Architecture) -> float:
        probed.append(grown)
        return 1000.0  # the grown net would be far too slow: rank 0 holds

    def share(decide):
        if rank == 0:
            return decide()
        return rank0  # what rank 0 broadcast

    rank0 = growth_check(net, arch, state, r, meter=None, elapsed=lambda: 30.0,
                         share=lambda decide: decide(), step_ratio=lambda a: 1000.0)
    rank0 = (rank0.plan, rank0.hold, rank0.next_round)
    assert rank0[1].startswith("budget.time_budget 100 s: 30 s elapsed") and rank0[2] is False
    check = growth_check(net, arch, state, r, meter=None, elapsed=lambda: 30.0,
                         share=share, step_ratio=step_ratio)
    assert (check.plan, check.hold, check.next_round) == rank0 and check.model is None  # held on every rank
    assert len(probed) == (1 if rank == 0 else 0)


def test_a_check_whose_growth_would_pass_the_time_budget_grows_the_part_that_fits(caplog):
    """growth_check: where the planned growth's round and fine-tune would pass the time budget,
    the net grows by the part that fits (clipped layers, reasons naming the time budget, no
    hold, a log line), measured by ``step_ratio`` before it is kept."""
    from grownet._search_job import SearchState, _macs_params, growth_check
    from grownet.arch import Architecture
    from grownet.policy import plan_growth

    arch = Architecture(family="vgg", stages=[[8], [8]])
    net = _saturated(arch)
    base = load_recipe("cifar10-vgg").with_overrides({"grow.local_epochs": "2", "finetune.epochs": "2",
                                                      "grow.deepen": "false", "budget.max_macs": "0"})
    full = plan_growth(arch, {"stages.0.0": 1.0, "stages.1.0": 1.0}, tau=base.grow.tau, ratio=base.grow.ratio,
                       min_add=base.grow.min_add, deepen=False, cost_fn=_macs_params)
    now = cost(arch).macs
    ratio = full.macs / now
    r = base.with_overrides({"budget.time_budget": str(30 + 40 * (1 + ratio) / 2)})  # 4 epochs of 10 s per unit ratio
    state = SearchState(round=1, history=[{"phase": "grow", "round": 1, "wall_time": t, "val_acc": 0.5} for t in (10.0, 20.0)])
    probed: list[int] = []

    def step_ratio(grown: Architecture) -> float:
        probed.append(cost(grown).macs)
        return cost(grown).macs / now  # a compute-bound machine

    with caplog.at_level("INFO", logger="grownet.search"):
        check = growth_check(net, arch, state, r, meter=None, elapsed=lambda: 30.0,
                             step_ratio=step_ratio)
    assert check.hold is None and check.plan.grew and now < check.plan.macs <= (now + full.macs) / 2
    assert probed[0] == full.macs and probed[-1] == check.plan.macs
    assert all(d.decision == "clipped" and "the most that fit budget.time_budget" in d.reason
               for d in check.plan.decisions if d.decision != "keep")
    assert f"cut to {check.plan.macs:,} MACs, the most that fit" in caplog.text
    assert (f"check 1: time budget: planned {full.macs:,} MACs, step-time ratio {ratio:.3f}: budget.time_budget"
            in caplog.text)


def test_a_growth_that_fits_the_time_budget_logs_its_step_time_ratio(caplog):
    from grownet._search_job import SearchState, growth_check
    from grownet.arch import Architecture

    arch = Architecture(family="vgg", stages=[[8], [8]])
    r = load_recipe("cifar10-vgg").with_overrides({"budget.time_budget": "100000", "grow.local_epochs": "2"})
    state = SearchState(round=1, history=[{"phase": "grow", "round": 1, "wall_time": t, "val_acc": 0.5} for t in (10.0, 20.0)])
    with caplog.at_level("INFO", logger="grownet.search"):
        check = growth_check(_saturated(arch), arch, state, r, meter=None, elapsed=lambda: 30.0,
                             step_ratio=lambda grown: 1.25)
    assert check.plan.grew and check.hold is None
    assert f"check 1: time budget: planned {check.plan.macs:,} MACs, step-time ratio 1.250: fits" in caplog.text


@pytest.mark.parametrize("fits", [True, False])
def test_min_rounds_trains_another_round_of_the_same_net_only_if_the_time_budget_allows(fits):
    """A check that grows nothing (the MACs budget is full) before budget.min_rounds leads to
    another round when elapsed + a round and the fine-tune of the present net (the round's
    median epoch, step ratio 1) fit budget.time_budget; else the fine-tune follows, and the
    record says why."""
    from grownet._search_job import SearchState, growth_check
    from grownet.arch import Architecture
    from grownet.loop import Trainee
    from grownet.optim import DessiLBI, dessilbi_param_groups

    arch = Architecture(family="vgg", stages=[[8], [8]])
    r = load_recipe("cifar10-vgg").with_overrides({"grow.local_epochs": "2", "budget.max_macs": str(cost(arch).macs),
                                                   "budget.min_rounds": "3"})
    need = 10.0 * (2 + r.finetune.epochs)  # epochs of 10 s: round 2 and the fine-tune
    r = r.with_overrides({"budget.time_budget": str(30 + need + (1 if fits else -1))})
    model = build_model(arch)
    state = SearchState(round=1, history=[{"phase": "grow", "round": 1, "wall_time": t, "val_acc": 0.5} for t in (10.0, 20.0)])
    check = growth_check(Trainee(model, DessiLBI(dessilbi_param_groups(model), lr=0.05), cost(arch)), arch, state, r,
                         meter=None, elapsed=lambda: 30.0)
    assert not check.plan.grew and check.model is None
    assert check.next_round is fits and check.record["next_round"] is fits
    assert (check.hold is None) if fits else check.hold.startswith("budget.time_budget")


def test_a_resumed_run_is_planned_from_where_it_stands():
    r = load_recipe("cifar10-cpu").with_overrides(FIXED).with_overrides({"budget.time_budget": "0"})
    seed = seed_arch(r, _Dims)
    mid = schedule(seed, r, _per_epoch, phase="grow", round=3, done=1)
    assert [(p.phase, p.round, p.epochs) for p in mid] == [("grow", 3, 1), ("finetune", 3, r.finetune.epochs)]  # max_rounds 3
    assert [(p.phase, p.epochs) for p in schedule(seed, r, _per_epoch, phase="finetune", round=3, done=5)] == [("finetune", r.finetune.epochs - 5)]
    assert schedule(seed, r, _per_epoch, phase="done") == []


# ---- the plan and the forecast -------------------------------------------------------------------


def _plan(**kw) -> RunPlan:
    base = dict(device="cpu", threads=2, recipe="cifar10-cpu", dataset="cifar10", train_images=45_000, val_images=5_000,
                test_images=10_000, batch_size=256, steps_per_epoch=175, max_macs=28_000_000, max_params=0, max_rounds=3,
                time_budget=2000.0, macs=7_000_000, params=1, step_seconds=0.2, eval_image_seconds=1e-4, probe_steps=8,
                probe_seconds=3.0, elapsed=10.0,
                phases=(PhaseEstimate("grow", 1, 2, 7_000_000, 71.0), PhaseEstimate("grow", 2, 2, 14_000_000, 142.0),
                        PhaseEstimate("finetune", 2, 12, 14_000_000, 852.0)),
                final_eval_seconds=3.0)
    return RunPlan(**{**base, **kw})


def test_a_plan_states_its_seconds_and_reads_as_a_few_lines():
    p = _plan()
    assert p.epoch_seconds(7_000_000) == pytest.approx(175 * 0.2 + 5000 * 1e-4)
    assert p.epoch_seconds(14_000_000) == pytest.approx(2 * (175 * 0.2 + 5000 * 1e-4))
    assert p.eval_seconds(14_000_000) == pytest.approx(2 * 15_000 * 1e-4)
    assert p.estimated_seconds == 71 + 142 + 852 + 3 and p.rounds == 2
    text = str(p)
    assert "cpu, 2 CPU threads" in text and "45,000 train / 5,000 val / 10,000 test images" in text
    assert "max 28.0M MACs, no params limit, at most 3 rounds, time budget 33 min" in text
    assert "about 18 min to go (10 s so far): 2 rounds at 7.0M -> 14.0M MACs 4 min; fine-tune 12 epochs at 14.0M MACs 14 min" in text
    assert [duration(s) for s in (45, 600, 9000)] == ["45 s", "10 min", "2.5 h"]


def test_the_forecast_counts_what_is_left_and_learns_the_machine_s_speed():
    p = _plan()
    f = Forecast(p)
    e7 = p.epoch_seconds(7_000_000)
    # halfway through round 1's first epoch: 1.5 epochs at 7M, round 2, the fine-tune, the evaluation
    assert f.remaining(phase="grow", round=1, epochs_left=1.5, macs=7_000_000) == pytest.approx(1.5 * e7 + 142 + 852 + 3)
    f.epoch_done(2 * e7, 7_000_000)  # this machine is twice as slow as the probe said
    assert f.speed == pytest.approx(2.0)
    left = f.remaining(phase="finetune", round=2, epochs_left=3, macs=10_000_000)
    assert left == pytest.approx(2 * (3 * p.epoch_seconds(10_000_000) + p.eval_seconds(10_000_000)))


# ---- the probe -----------------------------------------------------------------------------------


def _random_loaders(n: int = 300, batch_size: int = 32):
    gen = torch.Generator().manual_seed(0)
    ds = Dataset(name="random", x_train=torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                 y_train=torch.randint(0, 10, (n,), generator=gen),
                 x_test=torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8, generator=gen),
                 y_test=torch.randint(0, 10, (50,), generator=gen), classes=[str(i) for i in range(10)], mean=(0.5,) * 3,
                 std=(0.25,) * 3)
    return make_loaders(ds, batch_size=batch_size, val_fraction=0.2, seed=1)


def test_the_probe_leaves_the_net_the_rngs_and_the_loaders_as_they_were():
    loaders = _random_loaders()
    loaders.train.set_epoch(3)
    model = build_model(grownet.seeds.preset("vgg", num_classes=10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    step, per_image, steps, _ = probe(model, lambda m: torch.optim.SGD(m.parameters(), lr=0.5), loaders,
                                      device=torch.device("cpu"), steps=3, seconds=math.inf)  # no deadline: a loaded machine times all 3
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(2), expected[2])
    assert loaders.train.epoch == 3 and loaders.val.epoch == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert steps == 3 and step > 0 and per_image > 0


def test_the_step_time_ratio_leaves_the_nets_the_rngs_and_the_loader_as_they_were():
    loaders = _random_loaders()
    loaders.train.set_epoch(3)
    small = build_model(grownet.seeds.preset("vgg", num_classes=10))
    big = build_model(grownet.seeds.preset("vgg", num_classes=10).with_widths({"stages.0.0": 64}))
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (big, small)]
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ratio = step_time_ratio(big, small, lambda m: torch.optim.SGD(m.parameters(), lr=0.5), loaders,
                            device=torch.device("cpu"), steps=3, seconds=math.inf)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(2), expected[2])
    assert loaders.train.epoch == 3
    assert all(torch.equal(b[k], v) for m, b in zip((big, small), before) for k, v in m.state_dict().items())
    assert ratio > 0


class _Clock:
    """A clock that only the nets below move: each forward advances it by its net's seconds
    times the machine's slowdown, so that step times are exact whatever the CPU does."""

    def __init__(self, slowdown) -> None:
        self.now, self.calls, self.slowdown = 0.0, 0, slowdown

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.calls += 1
        self.now += seconds * self.slowdown(self.calls)


class _Takes(nn.Module):
    """Spends ``seconds`` of the ``clock`` in every forward."""

    def __init__(self, seconds: float, clock: _Clock) -> None:
        super().__init__()
        self.seconds, self.spend = seconds, clock.spend  # a bound method: deepcopy would copy the clock

    def __deepcopy__(self, memo):  # a copy spends on the same clock
        return _Takes(self.seconds, self.spend.__self__)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.spend(self.seconds)
        return x


def _timed_net(seconds: float, clock: _Clock) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(_Takes(seconds, clock), nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10))


def test_a_load_burst_does_not_move_the_step_time_ratio_as_it_moves_two_probes_one_after_the_other():
    """Nets whose steps take 2 and 1 s of a clock they alone move, while the machine is 8x
    slower for forward calls 3-6 (counted over both nets) and 10x for call 11. Stepping in turn,
    calls 3-6 are both nets' steps of two pairs, which keep their ratio, and call 11 is one pair
    the median leaves out: the ratio reads 2, as on a quiet machine. Two probes one after the
    other put calls 3-6 in the larger net's steps alone and call 11 in the smaller's."""
    def burst(call: int) -> float:
        return 8.0 if 3 <= call <= 6 else 10.0 if call == 11 else 1.0

    loaders = _random_loaders()
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=0.1)
    cpu = torch.device("cpu")
    for slowdown in (lambda call: 1.0, burst):
        clock = _Clock(slowdown)
        ratio = step_time_ratio(_timed_net(2.0, clock), _timed_net(1.0, clock), sgd, loaders, device=cpu, steps=6,
                                seconds=math.inf, clock=clock)
        assert (ratio, clock.calls) == (2.0, 14)
    clock = _Clock(burst)
    big, small = (probe(_timed_net(s, clock), sgd, loaders, device=cpu, steps=6, seconds=math.inf, clock=clock)[0]
                  for s in (2.0, 1.0))
    # timed: calls 2-7 of the first probe (call 1 warms up, the evaluation batch is call 8), 10-15 of the second
    assert big == pytest.approx((2 + 4 * 16 + 2) / 6) and small == pytest.approx((5 * 1 + 10) / 6)
    assert big / small > 2 * 2.0  # 68/15 = 4.53 read for the ratio 2


def test_the_step_time_ratio_stops_at_its_deadline_with_two_pairs_timed():
    clock = _Clock(lambda call: 1.0)
    loaders = _random_loaders()
    ratio = step_time_ratio(_timed_net(2.0, clock), _timed_net(1.0, clock), lambda m: torch.optim.SGD(m.parameters(), lr=0.1),
                            loaders, device=torch.device("cpu"), steps=6, seconds=1.0, clock=clock)
    assert (ratio, clock.calls) == (2.0, 6)  # the warm-up pair and two timed pairs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke_dataset(tmp_path_factory.mktemp("data"))


class _Planned(Reporter):
    """Records the hooks' order and the plan."""

    wants_plan = True

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.plans: list[RunPlan] = []

    def plan(self, plan: RunPlan) -> None:
        self.calls.append("plan")
        self.plans.append(plan)

    def start(self, **kwargs) -> None:
        self.calls.append("start")


def _run(tmp_path: Path, data, name: str, reporter) -> grownet.SearchResult:
    dataset, data_dir = data
    return search(dataset, data_dir=data_dir, recipe=SMOKE, overrides=QUICK, out=tmp_path / name, seed=3, device="cpu",
                  reporter=reporter)


def test_a_run_with_a_plan_trains_exactly_as_one_without(tmp_path, data):
    planned = _Planned()
    with_plan = _run(tmp_path, data, "with", planned)
    without = _run(tmp_path, data, "without", None)
    assert planned.calls == ["plan", "start"]
    p = planned.plans[0]
    assert (p.train_images, p.val_images, p.test_images, p.batch_size) == (700, 300, 300, 64)
    assert (p.max_rounds, p.rounds, p.macs) == (2, 2, cost(seed_arch(load_recipe(SMOKE), _Dims)).macs)
    assert [ph.phase for ph in p.phases] == ["grow", "grow", "finetune"] and p.probe_steps >= 1
    rows = []
    for run in (with_plan.run_dir, without.run_dir):
        with open(run / "history.csv", newline="") as f:
            rows.append([{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(f)])
    assert len(rows[0]) == 3 and rows[0] == rows[1]
    assert (with_plan.test_acc, with_plan.val_acc, with_plan.arch.layer_widths()) == \
        (without.test_acc, without.val_acc, without.arch.layer_widths())
    a = torch.load(with_plan.paths["weights"], weights_only=True)
    b = torch.load(without.paths["weights"], weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_plan_run_plans_a_search_without_running_it(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset, data_dir = data
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    p = plan_run(dataset, recipe=SMOKE, overrides=QUICK, data_dir=data_dir, seed=3, device="cpu")
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG is left as it was
    assert (p.train_images, p.val_images, p.test_images, p.recipe) == (700, 300, 300, str(SMOKE))
    assert p.macs == cost(seed_arch(load_recipe(SMOKE), _Dims)).macs and p.estimated_seconds > 0
    assert list(tmp_path.iterdir()) == []  # nothing written


# ---- the console -------------------------------------------------------------------------------


def _row(epoch: int, phase: str, wall: float, macs: int, val: float) -> dict:
    return {"epoch": epoch, "phase": phase, "round": 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 0.5, "val_acc": val,
            "macs": macs, "wall_time": wall}


def test_plain_lines_carry_the_round_elapsed_time_and_eta():
    buf = io.StringIO()
    rep = RichReporter(Console(file=buf, force_terminal=False, width=200), recipe="recipe cifar10-cpu (no --recipe given; why)")
    assert not rep.live
    p = _plan(elapsed=0.0)
    rep.plan(p)
    rep.start(run_dir=Path("runs/x"), arch=None, recipe=load_recipe("cifar10-cpu").with_overrides(FIXED), resumed=False)
    rep.epoch_start(phase="grow", round=1, epoch=1, index=1, total=2, batches=175)
    rep.batch(100, 175)
    e7 = p.epoch_seconds(7_000_000)
    rep.epoch_end(_row(1, "grow", 2 * e7, 7_000_000, 0.41))  # twice the estimate
    out = buf.getvalue()
    assert "\x1b[" not in out  # no escape codes: a file or a pipe gets text
    assert "  recipe    cifar10-cpu (no --recipe given; why)\n" in out and out.count("cifar10-cpu") == 1
    eta = 2 * (e7 + 142 + 852 + 3)  # the rest of round 1, round 2, the fine-tune, the evaluation, at the speed seen
    line = out.strip().splitlines()[-1]
    assert line.endswith(f"val 0.4100  7.00M MACs  round 1 of at most 3  {_clock(2 * e7)} elapsed  ETA {_clock(eta)}")


def _clock(s: float) -> str:
    m, s = divmod(int(s), 60)
    return f"{m}:{s:02d}"


def test_the_live_line_says_round_epoch_step_macs_accuracy_and_eta():
    buf = io.StringIO()
    rep = RichReporter(Console(file=buf, force_terminal=True, width=200))
    assert rep.live
    p = _plan(elapsed=0.0)
    rep.plan(p)
    rep.start(run_dir=Path("runs/x"), arch=None, recipe=load_recipe("cifar10-cpu").with_overrides(FIXED), resumed=False)
    try:
        rep.epoch_start(phase="grow", round=1, epoch=1, index=1, total=2, batches=175)
        rep.epoch_end(_row(1, "grow", p.epoch_seconds(7_000_000), 7_000_000, 0.41))
        rep.round_end({"round": 1, "epoch": 2, "val_acc": 0.5, "layers": [], "grew": True, "macs": 7_000_000,
                       "new_macs": 14_000_000})
        rep.epoch_start(phase="grow", round=2, epoch=3, index=1, total=2, batches=175)
        rep.batch(35, 175)
        left = 1.8 * p.epoch_seconds(14_000_000) + 852 + 3
        head = "round 2 of at most 3 · epoch 3 (1/2) · step 35/175 · 14.00M MACs · val 0.4100 · "
        assert rep.status().startswith(head) and rep.status().endswith(f" elapsed · ETA {_clock(left)}")
        rep.epoch_start(phase="finetune", round=2, epoch=5, index=1, total=12, batches=175)
        assert rep.status().startswith("fine-tune · epoch 5 (1/12) · step 0/175")
    finally:
        rep.close()
    assert rep.progress is not None and not rep.progress.live.is_started


def test_the_summary_s_python_lines_load_the_net(tmp_path, data):
    result = _run(tmp_path, data, "run", None)
    lines = summary_lines(result)
    assert lines[0] == f"test acc {result.test_acc:.4f}   val acc {result.val_acc:.4f}"
    assert f"run folder: {result.run_dir}" in lines and f"report:     {result.run_dir / 'report.html'}" in lines
    code = "\n".join(line.strip() for line in lines[lines.index("load the net in Python:") + 1:])
    assert code == f'import grownet\nmodel = grownet.load_model("{result.run_dir}")'
    scope: dict = {}
    exec(code, scope)
    assert scope["model"].arch.layer_widths() == result.arch.layer_widths()

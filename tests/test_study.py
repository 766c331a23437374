"""grownet study: the summary's statistics, the arms at equal MACs, files, and resuming."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from grownet.arch import Architecture
from grownet.baseline import random_architecture, uniform_architecture
from grownet.cli import main
from grownet.cost import cost
from grownet.errors import RunError, UsageError
from grownet.seeds import preset
from grownet.policy import widen_all
from grownet.recipe import load_recipe
from grownet.study import growth_factors, run_study, summarize, uniform_growth_recipe

sys.path.insert(0, str(Path(__file__).parent))
from _smoke import FAST, SMOKE, smoke_dataset  # noqa: E402


def _row(arm: str, seed: int, test: float, macs: int = 100) -> dict:
    return {"arm": arm, "seed": seed, "val_acc": test + 0.01, "test_acc": test, "macs": macs, "params": 10,
            "train_flops": 1000, "wall_time": 1.0, "widths": {"a": 1}, "growth_factors": {"a": 1.0}, "growth_cv": 0.0}


def test_summary_statistics_follow_their_definitions():
    rows = [_row("grown", 0, 0.80), _row("grown", 1, 0.84), _row("grown", 2, 0.82),
            _row("uniform", 0, 0.79, 98), _row("uniform", 1, 0.85, 98), _row("uniform", 2, 0.80, 98)]
    s = summarize(rows)
    g = s["arms"]["grown"]["test_acc"]
    assert g["mean"] == pytest.approx(0.82) and g["std"] == pytest.approx(statistics.stdev([0.80, 0.84, 0.82]))
    d = s["grown_minus"]["uniform"]
    assert d["n"] == 3
    assert d["mean"] == pytest.approx((0.01 - 0.01 + 0.02) / 3)
    assert d["std"] == pytest.approx(statistics.stdev([0.01, -0.01, 0.02]))
    assert s["seeds"]["1"]["uniform_macs_ratio"] == 0.98
    assert s["contrasts"] == {}  # no grown_uniform or fixed_uniform arm


def test_contrasts_pair_the_arms_by_seed():
    """grown_uniform − fixed_uniform (growing, at the grower's schedule) and fixed_uniform −
    uniform (that schedule, at fixed widths), per seed, only where both arms ran."""
    rows = [_row("uniform", 0, 0.70), _row("uniform", 1, 0.72), _row("uniform", 2, 0.71),
            _row("fixed_uniform", 1, 0.74), _row("fixed_uniform", 0, 0.75),
            _row("grown_uniform", 0, 0.79), _row("grown_uniform", 1, 0.78)]
    c = summarize(rows)["contrasts"]
    assert list(c) == ["grown_uniform - fixed_uniform", "fixed_uniform - uniform"]
    g = c["grown_uniform - fixed_uniform"]
    assert (g["n"], g["mean"], g["std"]) == (2, pytest.approx(0.04), pytest.approx(0.0, abs=1e-12))
    f = c["fixed_uniform - uniform"]
    assert (f["n"], f["mean"], f["std"]) == (2, pytest.approx(0.035), pytest.approx(statistics.stdev([0.05, 0.02])))


def test_growth_factors_skip_deepened_layers():
    seed = Architecture("vgg", ((16,), (32,)))
    final = Architecture("vgg", ((32, 32), (40,)))
    assert growth_factors(seed, final) == {"stages.0.0": 2.0, "stages.1.0": 1.25}


@pytest.mark.parametrize("growths", [1, 2, 3])
def test_uniform_growth_takes_the_largest_ratio_that_stays_within_the_grown_macs_in_as_many_growths(growths):
    seed = preset("vgg", width=(16, 32, 64, 64, 64))
    grown = SimpleNamespace(summary={"macs": 12_000_000, "rounds": growths + 1},
                            rounds=[{"grew": True}] * growths + [{"grew": False}])
    recipe = uniform_growth_recipe(load_recipe("growth-study-cpu"), seed, grown)
    g, b = recipe.grow, recipe.budget
    assert (g.signal, g.min_add, g.deepen, b.max_macs) == ("uniform", 1, False, 12_000_000)
    assert b.max_rounds == b.min_rounds == growths + 1  # the grower's rounds, so its epochs, whatever grows

    def reach(ratio: float) -> int:
        arch = seed
        for _ in range(growths):
            arch = widen_all(arch, ratio=ratio, min_add=1, max_width=g.max_width)
        return cost(arch).macs

    assert reach(g.ratio + 1e-4) > 12_000_000 >= reach(g.ratio) > 0.98 * 12_000_000
    never = SimpleNamespace(summary={"macs": cost(seed).macs, "rounds": 1}, rounds=[{"grew": False}])
    assert uniform_growth_recipe(load_recipe("growth-study-cpu"), seed, never).grow.ratio == 1.5  # the recipe's


def test_uniform_growth_makes_fewer_growths_where_the_grower_spent_its_macs_in_a_few_cheap_layers():
    """Widening every layer by one filter twice costs more than a grower that added a few
    filters to one stage: the arm makes the most growths that fit (one, at the largest ratio)
    and trains on to the grower's rounds (budget.min_rounds)."""
    seed = preset("vgg", width=(16, 32, 64, 64, 64))
    twice = widen_all(widen_all(seed, ratio=1.0, min_add=1, max_width=256), ratio=1.0, min_add=1, max_width=256)
    target = (cost(seed).macs + cost(twice).macs) // 2  # one widening by a filter per layer fits, two do not
    grown = SimpleNamespace(summary={"macs": target, "rounds": 3}, rounds=[{"grew": True}] * 2 + [{"grew": False}])
    recipe = uniform_growth_recipe(load_recipe("growth-study-cpu"), seed, grown)
    g, b = recipe.grow, recipe.budget
    assert (b.max_rounds, b.min_rounds, b.max_macs) == (3, 3, target)
    once = widen_all(seed, ratio=g.ratio, min_add=1, max_width=g.max_width)
    assert cost(once).macs <= target < cost(widen_all(seed, ratio=g.ratio + 1e-4, min_add=1, max_width=256)).macs
    # none fits at all: the recipe's ratio, clipped to the MACs by the policy
    tight = SimpleNamespace(summary={"macs": cost(seed).macs + 10, "rounds": 2}, rounds=[{"grew": True}, {"grew": False}])
    assert uniform_growth_recipe(load_recipe("growth-study-cpu"), seed, tight).grow.ratio == 1.5


@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_random_control_matches_the_macs_within_two_percent_and_differs_per_seed(rng_seed):
    seed = preset("vgg", width=(16, 32, 64, 64, 64))
    target = 14_000_000
    arch = random_architecture(seed, target, rng_seed=rng_seed)
    assert abs(cost(arch).macs / target - 1) <= 0.02
    assert arch != uniform_architecture(seed, target)
    assert arch != random_architecture(seed, target, rng_seed=rng_seed + 10)
    assert arch == random_architecture(seed, target, rng_seed=rng_seed)  # reproducible


def test_a_study_folder_takes_its_own_configuration_from_another_data_folder_and_names_what_differs(tmp_path):
    from grownet.study import check_study_config

    config = {"dataset": "cifar10", "recipe": load_recipe("smoke").to_dict(), "data_dir": "../shared/data"}
    check_study_config(tmp_path / "s", config)
    check_study_config(tmp_path / "s", {**config, "data_dir": "/elsewhere/data"})  # the same data, read elsewhere
    with pytest.raises(RunError, match=r"holds a study of another configuration \(dataset = 'cifar10', now 'mnist'; "
                                       r"see .*study\.json\); use another --out$"):
        check_study_config(tmp_path / "s", {**config, "dataset": "mnist"})
    with pytest.raises(RunError, match=r"\(settings = missing, now \{'epochs': 3\}; see "):
        check_study_config(tmp_path / "s", {**config, "settings": {"epochs": 3}})
    assert json.loads((tmp_path / "s" / "study.json").read_text()) == config  # as first written


def test_bad_seed_count_is_refused(tmp_path):
    with pytest.raises(UsageError, match="--seeds: must be an integer in"):
        run_study("cifar10", out=tmp_path / "s", seeds=0)
    assert not (tmp_path / "s").exists()


def test_study_runs_every_arm_writes_its_files_and_continues(tmp_path):
    dataset, data_dir = smoke_dataset(tmp_path)
    out = tmp_path / "study"
    over = {**FAST, "grow.local_epochs": 1, "budget.max_rounds": 2, "grow.tau": 0.5}
    args = dict(out=out, recipe=str(SMOKE), seeds=1, data_dir=data_dir, device="cpu", overrides=over)
    result = run_study(dataset, **args)
    assert [r["arm"] for r in result.rows] == ["grown", "scratch", "uniform", "random", "grown_uniform", "fixed_uniform"]
    grown = result.rows[0]
    for r in result.rows[1:4]:
        assert abs(r["macs"] / grown["macs"] - 1) <= 0.05  # tiny widths round coarsely; the real study checks 2%
        assert r["train_flops"] > 0
    # the second search: the same recipe and seed, every layer widened by the same factor
    # the second search: the same seed, every layer widened by one factor, as often as the grower
    # grew, to the grower's MACs, for the same epochs
    second = out / "seed-0" / "controls" / "grown_uniform"
    searched = json.loads((second / "config.json").read_text())
    assert searched["recipe"]["grow"]["signal"] == "uniform" and searched["seed"] == 0
    assert searched["recipe"]["budget"]["max_macs"] == grown["macs"] >= result.rows[4]["macs"]
    assert searched["recipe"]["budget"]["max_rounds"] == json.loads((out / "seed-0" / "summary.json").read_text())["rounds"]
    growths = [[r["grew"] for r in json.loads((d / "rounds.json").read_text())] for d in (out / "seed-0", second)]
    assert growths[0] == growths[1] and any(growths[0])
    rounds = json.loads((second / "rounds.json").read_text())
    assert {l["activity"] for l in rounds[0]["layers"]} == {1.0}
    epochs = [json.loads((d / "summary.json").read_text())["epochs"] for d in (out / "seed-0", second)]
    assert epochs[0] == epochs[1]
    assert "grown_uniform" in result.summary["grown_minus"]
    # the third search: the uniform control's widths from the first step, the grower's rounds, no growth
    fixed = out / "seed-0" / "controls" / "fixed_uniform"
    uniform_arch = Architecture.from_json(out / "seed-0" / "controls" / "uniform" / "architecture.json")
    assert Architecture.from_dict(json.loads((fixed / "summary.json").read_text())["seed_arch"]) == uniform_arch.with_meta()
    assert Architecture.from_json(fixed / "architecture.json").layer_widths() == uniform_arch.layer_widths()
    assert [r["grew"] for r in json.loads((fixed / "rounds.json").read_text())] == [False] * len(growths[0])
    assert json.loads((fixed / "summary.json").read_text())["epochs"] == epochs[0]
    assert json.loads((fixed / "config.json").read_text())["recipe"]["grow"]["signal"] == "off"
    assert set(result.summary["contrasts"]) == {"grown_uniform - fixed_uniform", "fixed_uniform - uniform"}
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(result.summary))
    with open(out / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["arm"] for r in rows] == ["grown", "scratch", "uniform", "random", "grown_uniform", "fixed_uniform"]
    assert float(rows[0]["test_acc"]) == grown["test_acc"]
    page = (out / "study.html").read_text()
    assert "<svg" in page and "random" in page
    from grownet.report import write_report

    assert "random allocation, equal MACs" in write_report(out / "seed-0").read_text()  # every arm in the run's report
    # a rerun trains nothing that is finished, and retrains a control that did not finish
    weights = {p: p.stat().st_mtime_ns for p in out.rglob("weights.pt")}
    (out / "seed-0" / "controls" / "random" / "summary.json").unlink()
    again = run_study(dataset, **args)
    assert again.summary["arms"]["grown"] == result.summary["arms"]["grown"]
    changed = {p for p in out.rglob("weights.pt") if p.stat().st_mtime_ns != weights.get(p)}
    assert changed == {out / "seed-0" / "controls" / "random" / "weights.pt"}
    # another configuration in the same folder is refused
    with pytest.raises(RunError, match=r"study of another configuration \(recipe\.grow\.tau = 0\.5, now 0\.7; see "):
        run_study(dataset, **{**args, "overrides": {**over, "grow.tau": 0.7}})


def test_cli_refuses_a_bad_seed_count_in_one_line(tmp_path, capsys):
    assert main(["study", "--out", str(tmp_path / "s"), "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds" in err[0]


def test_a_study_of_some_arms_runs_those_and_adds_more_later(tmp_path):
    from grownet.baseline import control_architecture
    from grownet.runfolder import load_run

    dataset, data_dir = smoke_dataset(tmp_path)
    out = tmp_path / "study"
    over = {**FAST, "data.limit_train": 500, "data.val_size": 200, "data.limit_test": 200, "grow.local_epochs": 1,
            "budget.max_rounds": 2, "grow.tau": 0.5}
    args = dict(out=out, recipe=str(SMOKE), seeds=1, data_dir=data_dir, device="cpu", overrides=over)
    result = run_study(dataset, arms=["fixed_uniform"], **args)  # grown runs without being named
    assert [r["arm"] for r in result.rows] == ["grown", "fixed_uniform"]
    assert not (out / "seed-0" / "controls" / "uniform").exists()  # its widths without training it
    fixed = json.loads((out / "seed-0" / "controls" / "fixed_uniform" / "summary.json").read_text())
    want = control_architecture(load_run(out / "seed-0"), "uniform")
    assert Architecture.from_dict(fixed["seed_arch"]).layer_widths() == want.layer_widths()
    assert set(result.summary["arms"]) == {"grown", "fixed_uniform"} and result.summary["contrasts"] == {}
    weights = {p: p.stat().st_mtime_ns for p in out.rglob("weights.pt")}
    more = run_study(dataset, arms=("uniform",), **args)  # the finished fixed_uniform arm is read back
    assert [r["arm"] for r in more.rows] == ["grown", "uniform", "fixed_uniform"]
    assert set(json.loads((out / "summary.json").read_text())["arms"]) == {"grown", "uniform", "fixed_uniform"}
    assert set(more.summary["contrasts"]) == {"fixed_uniform - uniform"}
    assert all(p.stat().st_mtime_ns == t for p, t in weights.items())  # nothing finished trained again
    uniform = Architecture.from_json(out / "seed-0" / "controls" / "uniform" / "architecture.json")
    assert uniform.layer_widths() == want.layer_widths()


@pytest.mark.parametrize("arms, message", [
    ("grown,bogus", "--arms: unknown arm 'bogus'; choose from grown, scratch, uniform, random, grown_uniform, fixed_uniform"),
    (",", "--arms: give one or more of grown, scratch,"),
])
def test_cli_refuses_unknown_or_no_arms_in_one_line_and_writes_nothing(tmp_path, capsys, arms, message):
    assert main(["study", "--out", str(tmp_path / "s"), "--arms", arms]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "s").exists()


def test_cli_refuses_arms_for_a_ticket_study(tmp_path, capsys):
    assert main(["study", "--kind", "ticket", "--out", str(tmp_path / "s"), "--arms", "grown"]) == 2
    assert capsys.readouterr().err.strip().endswith("--arms: applies to --kind growth only")
    assert not (tmp_path / "s").exists()

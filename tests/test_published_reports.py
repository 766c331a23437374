"""The result folders committed under reports/: their report, architecture and README quotes
agree with their summary.json files (issue 6: "its numbers match its summary.json")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grownet.arch import Architecture
from grownet.cost import cost
from grownet.report.formatting import duration, pct, si

REPO = Path(__file__).resolve().parents[1]
#: Published run folders (a study folder, with its study.json, is checked in tests/test_published_study.py).
FOLDERS = sorted(p.parent for p in (REPO / "reports").glob("*/summary.json") if not (p.parent / "study.json").exists())
CONTROLS = ("scratch", "uniform", "seed", "fixed_uniform", "random")  # the first version's three, then the others


def summaries(folder: Path) -> dict[str, dict]:
    """``{"grown": summary, "scratch": summary, ...}`` of a published folder."""
    out = {"grown": json.loads((folder / "summary.json").read_text())}
    for name in CONTROLS:
        path = folder / "controls" / name / "summary.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def test_reports_holds_the_cifar10_cpu_runs_with_their_controls():
    """The first version's run (Γ support signal) with its three controls, and the current
    recipe's run with the controls that were trained (see the README's Status)."""
    v1, now = REPO / "reports" / "cifar10-cpu-v1", REPO / "reports" / "cifar10-cpu"
    assert v1 in FOLDERS and set(summaries(v1)) == {"grown", "scratch", "uniform", "seed"}
    for folder in (v1, now):
        assert (folder / "report.html").is_file() and (folder / "architecture.json").is_file()
    assert now in FOLDERS and {"grown", "uniform", "fixed_uniform"} <= set(summaries(now))
    fixed = json.loads((now / "controls" / "fixed_uniform" / "summary.json").read_text())
    grown = json.loads((now / "summary.json").read_text())
    assert (fixed["epochs"], fixed["rounds"]) == (grown["epochs"], grown["rounds"])  # the grower's schedule
    fewer = json.loads((now / "controls" / "fixed_uniform_28ep" / "summary.json").read_text())  # one round fewer
    assert (fewer["epochs"], fewer["rounds"]) == (28, 3) and fewer["final_arch"]["stages"] == fixed["final_arch"]["stages"]
    assert f"| {100 * fewer['val_acc']:.2f}% | {100 * fewer['test_acc']:.2f}% |" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_report_shows_the_numbers_of_its_summaries(folder: Path):
    html = (folder / "report.html").read_text(encoding="utf-8")
    for name, s in summaries(folder).items():
        shown = [pct(s["val_acc"]), pct(s["test_acc"]), si(s["macs"]), si(s["params"]), si(s["train_flops"]),
                 duration(s["wall_time"])]
        missing = [text for text in shown if text not in html]
        assert not missing, f"{name}: {missing} not in {folder.name}/report.html"


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_architectures_cost_what_their_summaries_say(folder: Path):
    paths = {"grown": folder / "architecture.json",
             **{name: folder / "controls" / name / "architecture.json" for name in CONTROLS}}
    for name, s in summaries(folder).items():
        c = cost(Architecture.from_json(paths[name]))
        assert (c.macs, c.params) == (s["macs"], s["params"]), name


def test_readme_quotes_the_published_numbers():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name, s in [*summaries(REPO / "reports" / "cifar10-cpu-v1").items(), *summaries(REPO / "reports" / "cifar10-cpu").items()]:
        assert f"{100 * s['test_acc']:.2f}%" in readme, f"README lacks the {name} test accuracy"
        assert f"{s['macs'] / 1e6:.2f}M MACs" in readme, f"README lacks the {name} MACs"


def test_the_cpu_recipe_replays_the_published_growth():
    """The bundled cifar10-cpu recipe with the run's grow.width_multiple (1: the recipe rounds
    to 8 since the fourteenth session), replayed on the published run's recorded activity and
    importance at each check (grownet.policy.plan_growth with the search's rule), makes the
    same growth: its other settings (deepen on since the run) change nothing in that run."""
    from grownet._search_job import growth_rule
    from grownet.policy import plan_growth
    from grownet.recipe import load_recipe

    folder = REPO / "reports" / "cifar10-cpu"
    rounds = json.loads((folder / "rounds.json").read_text())
    assert load_recipe("cifar10-cpu").grow.width_multiple == 8
    recipe = load_recipe("cifar10-cpu").with_overrides({"grow.width_multiple": "1"})
    assert recipe.grow.deepen
    arch, previous = Architecture.from_dict(json.loads((folder / "summary.json").read_text())["seed_arch"]), None
    for check in rounds:
        activity = {row["layer"]: row["activity"] for row in check["layers"] if row["width"]}
        share = {layer: v["importance_share"] for layer, v in check["signal"]["layers"].items()}
        plan = plan_growth(arch, activity, hold=check["hold"], **growth_rule(recipe, importance=share, previous=previous))
        stored = Architecture.from_dict(check["new_arch"]) if check["new_arch"] else arch
        assert plan.arch == stored, check["round"]
        arch, previous = stored, activity
    assert arch.layer_widths() == Architecture.from_json(folder / "architecture.json").layer_widths()


def _ran_on_cuda_on_all_of_cifar10(run: Path) -> dict:
    """Assert that the search in ``run`` trained on CUDA on the whole of CIFAR-10; its config."""
    config = json.loads((run / "config.json").read_text())
    assert config["device"] == "cuda" and config["dataset"] == "cifar10", run
    assert (config["recipe"]["data"]["limit_train"], config["recipe"]["data"]["limit_test"]) == (0, 0), run
    assert "cifar10: 50000 train, 10000 test images" in (run / "grownet.log").read_text(), run
    return config


def test_the_gpu_run_is_the_reference_recipe_on_all_of_cifar10_with_four_controls():
    """reports/cifar10-gpu (issue 17): cifar10-vgg on the whole of CIFAR-10 on a named card,
    every control trained for the search's epochs, and the README quoting each."""
    folder = REPO / "reports" / "cifar10-gpu"
    assert "--recipe cifar10-vgg" in _ran_on_cuda_on_all_of_cifar10(folder)["command"]
    assert "NVIDIA H200" in (folder / "device" / "machine.txt").read_text()
    runs = summaries(folder)
    assert set(runs) == {"grown", "scratch", "uniform", "seed", "random"}
    assert {s["epochs"] for s in runs.values()} == {runs["grown"]["epochs"]}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## On a GPU"):readme.index("## Growth study (CPU)")]
    for name, s in runs.items():
        assert f"| {100 * s['test_acc']:.2f}% | {s['macs'] / 1e6:.2f}M MACs |" in section, f"README lacks the {name} row"


def test_the_gpu_study_ran_the_reference_recipe_on_all_of_cifar10_on_a_named_card():
    """reports/cifar10-gpu-study (issue 17): every run of the two-seed study and the
    time-budget search ran cifar10-vgg on CUDA on all of CIFAR-10; the time-budget search grew
    and still ended inside its budget; the README quotes the GPU data benchmark's line."""
    folder = REPO / "reports" / "cifar10-gpu-study"
    assert "NVIDIA H200" in (folder / "device" / "machine.txt").read_text()
    runs = [*sorted(folder.glob("seed-*")), *sorted(folder.glob("seed-*/controls/fixed_uniform")), folder / "time-budget"]
    assert len(runs) == 5
    configs = {run: _ran_on_cuda_on_all_of_cifar10(run) for run in runs}
    budget = configs[folder / "time-budget"]["recipe"]["budget"]["time_budget"]
    summary = json.loads((folder / "time-budget" / "summary.json").read_text())
    rounds = json.loads((folder / "time-budget" / "rounds.json").read_text())
    assert budget == 240 and summary["wall_time"] <= budget and rounds[0]["grew"] and not rounds[-1]["grew"]
    line = (folder / "device" / "data_throughput-cuda.log").read_text().strip().splitlines()[-1]
    assert line.startswith("data: ") and f"`{line}`" in (REPO / "README.md").read_text(encoding="utf-8")


def test_the_gpu_time_budget_runs_ended_inside_their_budgets_without_a_cut():
    """reports/cifar10-gpu-time-budget (fourteenth session): cifar10-vgg on CUDA on all of
    CIFAR-10 under --time-budget 240 and 200 at the code that cuts a growth; each ended inside
    its budget, and where it held, the present net's own round and fine-tune (the held round's
    median epoch times local_epochs + finetune.epochs) would have passed the budget too, so no
    cut was tried; the README quotes both."""
    from grownet._search_job import SearchState, _round_and_finetune_seconds
    from grownet.recipe import Recipe, upgrade_stored
    from grownet.runfolder import read_history

    folder = REPO / "reports" / "cifar10-gpu-time-budget"
    assert "NVIDIA H200" in (folder / "device" / "machine.txt").read_text()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for budget in (240, 200):
        run = folder / f"tb{budget}"
        config = _ran_on_cuda_on_all_of_cifar10(run)
        recipe = config["recipe"]
        assert recipe["budget"]["time_budget"] == budget
        summary = json.loads((run / "summary.json").read_text())
        assert summary["wall_time"] <= budget
        held = json.loads((run / "rounds.json").read_text())[-1]
        assert not held["grew"] and held["hold"].startswith(f"budget.time_budget {budget} s")
        present = _round_and_finetune_seconds(SearchState(round=held["round"], history=read_history(run / "history.csv")),
                                              Recipe.from_dict(upgrade_stored(recipe)))
        elapsed = float(held["hold"].split(": ")[1].split(" s elapsed")[0])
        assert elapsed + present > budget - 1
        assert "time budget: cap" not in (run / "grownet.log").read_text()
        assert f"{100 * summary['test_acc']:.2f}% in {summary['wall_time']:.0f} s" in readme


def test_the_cpu_recipe_with_its_width_multiple_grew_every_widened_layer_to_a_multiple_of_8():
    """reports/cifar10-cpu-epyc-width8 (fourteenth session): the main command with the bundled
    recipe's grow settings (width_multiple 8) widened every layer it widened to a multiple of 8,
    at every check; the run beside it without (width1) ran the same recipe with width_multiple 1."""
    from grownet.recipe import load_recipe

    bundled = load_recipe("cifar10-cpu").to_dict()
    for q in (8, 1):
        folder = REPO / "reports" / f"cifar10-cpu-epyc-width{q}"
        recipe = json.loads((folder / "config.json").read_text())["recipe"]
        assert recipe["grow"] == {**bundled["grow"], "width_multiple": q}, q
        assert {k: v for k, v in recipe.items() if k != "grow"} == {k: v for k, v in bundled.items() if k != "grow"}, q
    rounds = json.loads((REPO / "reports" / "cifar10-cpu-epyc-width8" / "rounds.json").read_text())
    widened = [row for check in rounds for row in check["layers"] if row["new_width"] > row["width"] > 0]
    assert len(widened) > 5 and all(row["new_width"] % 8 == 0 for row in widened)


def test_the_time_check_read_right_grew_what_the_width8_run_had_cut_and_its_ratios_held():
    """reports/cifar10-cpu-epyc-in-turn and -time-check (and its seed-1; fifteenth session): the main command with
    the bundled recipe on the EPYC of cifar10-cpu-epyc-width8, at the code that times the two
    nets in turn, then also takes a round's epochs after its first. Round 1 trained as in the
    width8 run (the same activities and validation accuracy at check 1), and where that run's
    probe read the full plan's step 6.80x the seed's and cut the growth to 11.08M MACs, both
    grew the full plan. The second cut nothing; each ratio it logged is within 10% of the next
    round's second epoch over this round's. Both ended inside the 35-minute budget, and the
    README's table quotes them."""
    import re

    from grownet.recipe import load_recipe
    from grownet.runfolder import read_history

    width8 = REPO / "reports" / "cifar10-cpu-epyc-width8"
    then = json.loads((width8 / "rounds.json").read_text())[0]
    assert then["new_macs"] == 11_078_832 and "check 1: time budget" in (width8 / "grownet.log").read_text()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("in-turn", "time-check", "time-check/seed-1"):
        folder = REPO / "reports" / f"cifar10-cpu-epyc-{name}"
        assert json.loads((folder / "config.json").read_text())["recipe"] == load_recipe("cifar10-cpu").to_dict()
        rounds = json.loads((folder / "rounds.json").read_text())
        now = rounds[0]
        assert now["grew"] and now["hold"] is None and "cut to" not in (folder / "grownet.log").read_text().split("check 2")[0]
        if not name.endswith("seed-1"):  # seed 0, as the width8 run
            assert now["val_acc"] == then["val_acc"] and now["new_macs"] == 15_133_872
            assert [(r["layer"], r["activity"]) for r in now["layers"]] == [(r["layer"], r["activity"]) for r in then["layers"]]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["wall_time"] <= 35 * 60
        widths = "-".join(str(w) for stage in summary["final_arch"]["stages"] for w in stage)
        assert (f"| {widths} | {summary['macs'] / 1e6:.2f}M | {summary['params']:,} | {100 * summary['val_acc']:.2f}% | "
                f"{100 * summary['test_acc']:.2f}% |") in readme
    log = (REPO / "reports" / "cifar10-cpu-epyc-time-check" / "grownet.log").read_text()
    ratios = [float(x) for x in re.findall(r"check \d: time budget: planned [\d,]+ MACs, step-time ratio ([\d.]+): fits", log)]
    assert len(ratios) == 3 and "cut to" not in log
    history = read_history(REPO / "reports" / "cifar10-cpu-epyc-time-check" / "history.csv")
    second = [history[i]["wall_time"] - history[i - 1]["wall_time"] for i in (1, 3, 5, 7)]  # each round's 2nd epoch
    assert all(abs(r - b / a) <= 0.1 * b / a for r, a, b in zip(ratios, second, second[1:]))

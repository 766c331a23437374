"""The committed growth studies (:data:`STUDIES`: the CPU studies at 12M and 24M MACs, per MAC,
with six rounds, with an 18-epoch fine-tune and with half the cost weight, the per-MAC study
on all of CIFAR-10, and the GPU study; some ran only some of the arms): each summary.json is
what its runs say, every control sits at the grown net's MACs, and the README quotes each
summary's numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from grownet.arch import Architecture
from grownet.cost import cost
from grownet.study import ARMS, CONTRASTS, summarize

REPO = Path(__file__).resolve().parents[1]
STUDIES = [REPO / "reports" / name for name in ("growth-study-cpu", "growth-study-cpu-24m", "growth-study-cpu-permac",
                                                "growth-study-cpu-permac-6rounds", "growth-study-cpu-ft18",
                                                "cifar10-gpu-study", "cifar10-cpu-permac-study",
                                                "growth-study-cpu-exp05")]


@pytest.fixture(params=STUDIES, ids=lambda p: p.name)
def study(request) -> Path:
    if not (request.param / "summary.json").is_file():
        pytest.skip(f"no committed study in {request.param}")
    return request.param


def _arms(study: Path) -> list[str]:
    """The arms the study ran (every one of ARMS in the full studies), in ARMS order."""
    return [arm for arm in ARMS if arm in json.loads((study / "summary.json").read_text())["arms"]]


def _rows(study: Path) -> list[dict]:
    """One row per run, rebuilt from each run's own summary.json and architecture.json."""
    rows, arms = [], _arms(study)
    for seed_dir in sorted(study.glob("seed-*")):
        seed = int(seed_dir.name.split("-")[1])
        grown = json.loads((seed_dir / "summary.json").read_text())
        seed_arch = Architecture.from_dict(grown["seed_arch"])
        for arm in arms:
            folder = seed_dir if arm == "grown" else seed_dir / "controls" / arm
            s = json.loads((folder / "summary.json").read_text())
            arch = Architecture.from_json(folder / "architecture.json")
            assert cost(arch).macs == s["macs"], f"{folder}: architecture.json does not cost its summary's MACs"
            widths, base = arch.layer_widths(), seed_arch.layer_widths()
            factors = {l: round(w / base[l], 6) for l, w in widths.items() if l in base}
            mean = sum(factors.values()) / len(factors)
            cv = (sum((f - mean) ** 2 for f in factors.values()) / len(factors)) ** 0.5 / mean
            rows.append({"arm": arm, "seed": seed, **{k: s[k] for k in ("val_acc", "test_acc", "macs", "params",
                                                                        "train_flops", "wall_time")},
                         "widths": widths, "growth_factors": factors, "growth_cv": cv})
    return rows


def test_summary_is_what_the_runs_say(study):
    rows = _rows(study)
    assert len({r["seed"] for r in rows}) >= 2  # the GPU study has two (one device session); the CPU ones 3-6
    stored = json.loads((study / "summary.json").read_text())
    again = json.loads(json.dumps(summarize(rows)))
    assert {"grown", "fixed_uniform"} <= set(_arms(study))
    for arm in _arms(study):
        for key, value in stored["arms"][arm].items():
            if key == "n":
                assert value == again["arms"][arm]["n"]
            else:
                assert value["mean"] == pytest.approx(again["arms"][arm][key]["mean"], rel=1e-9), (arm, key)
    for arm, d in stored["grown_minus"].items():
        assert d["mean"] == pytest.approx(again["grown_minus"][arm]["mean"], abs=1e-12)
    assert set(stored["contrasts"]) == set(again["contrasts"]) == {
        f"{a} - {b}" for a, b in CONTRASTS if {a, b} <= set(_arms(study))}
    for pair, d in stored["contrasts"].items():
        assert (d["mean"], d["std"]) == (pytest.approx(again["contrasts"][pair]["mean"], abs=1e-12),
                                         pytest.approx(again["contrasts"][pair]["std"], abs=1e-12))
    with open(study / "runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows)


def test_every_control_is_at_the_grown_macs_within_two_percent(study):
    """Every control within 2% of its seed's grown MACs; uniform growth (``grown_uniform``)
    never above them and at most 2.5% under: its budget is the grown MACs, and its widenings
    move every layer at once, so its last step can be coarser than 2% (seeds 3 and 5 of
    growth-study-cpu-exp05: 2.2% and 2.1% under)."""
    rows = _rows(study)
    grown = {r["seed"]: r["macs"] for r in rows if r["arm"] == "grown"}
    for r in rows:
        ratio = r["macs"] / grown[r["seed"]]
        if r["arm"] == "grown_uniform":
            assert 0.975 <= ratio <= 1, (r["arm"], r["seed"], ratio)
        else:
            assert abs(ratio - 1) <= 0.02, (r["arm"], r["seed"], ratio)


def test_readme_quotes_the_study(study):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    stored = json.loads((study / "summary.json").read_text())
    for arm, a in stored["arms"].items():
        text = f"{100 * a['test_acc']['mean']:.2f} ± {100 * a['test_acc']['std']:.2f}"
        assert text in readme, f"README lacks the {arm} arm's test accuracy {text}"
    for arm, d in stored["grown_minus"].items():
        text = f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f}"
        assert text in readme, f"README lacks grown - {arm} = {text}"
    for seed, entry in stored["seeds"].items():
        assert f"{entry['growth_cv']:.2f}" in readme, f"README lacks seed {seed}'s growth CV"
    for pair, d in stored["contrasts"].items():
        text = f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f}"
        assert text in readme, f"README lacks {pair} = {text}"


def test_the_searched_controls_trained_the_growers_rounds_and_epochs(study):
    """grown − grown_uniform compares allocations, and grown_uniform − fixed_uniform growing
    against not growing, only when the arms trained the same epochs: every published one did
    (budget.min_rounds holds them to the grower's rounds); fixed_uniform never grew."""
    for seed_dir in sorted(study.glob("seed-*")):
        grown = json.loads((seed_dir / "summary.json").read_text())
        for name in {"grown_uniform", "fixed_uniform"} & set(_arms(study)):
            arm = json.loads((seed_dir / "controls" / name / "summary.json").read_text())
            assert (arm["epochs"], arm["rounds"]) == (grown["epochs"], grown["rounds"]), (seed_dir, name)
        rounds = json.loads((seed_dir / "controls" / "fixed_uniform" / "rounds.json").read_text())
        assert not any(r["grew"] for r in rounds), seed_dir


@pytest.mark.parametrize(("name", "folder", "epochs", "rounds"), [
    ("growth-study-cpu", "fixed_uniform_10ep", 10, 2), ("growth-study-cpu-24m", "fixed_uniform_12ep", 12, 3),
    ("growth-study-cpu-ft18", "fixed_uniform_22ep", 22, 2)])
def test_the_fixed_widths_with_fewer_rounds_trained_less_and_the_readme_quotes_them(name, folder, epochs, rounds):
    """reports/<study>/seed-k/controls/<folder>/ (reports/growth-study-cpu/fixed_uniform_fewer_rounds.py):
    the fixed_uniform widths with fewer rounds than the grower, so fewer epochs; the README
    quotes their test accuracy and grown − them."""
    import statistics

    study = REPO / "reports" / name
    runs = sorted(study.glob(f"seed-*/controls/{folder}/summary.json"))
    if not runs:
        pytest.skip(f"no committed {folder} runs in {study}")
    tests, diffs = [], []
    for path in runs:
        arm = json.loads(path.read_text())
        grown = json.loads((path.parents[2] / "summary.json").read_text())
        fixed = json.loads((path.parents[1] / "fixed_uniform" / "summary.json").read_text())
        assert (arm["epochs"], arm["rounds"]) == (epochs, rounds) and arm["final_arch"]["stages"] == fixed["final_arch"]["stages"]
        assert arm["epochs"] < grown["epochs"] and arm["train_flops"] < fixed["train_flops"], path
        tests.append(arm["test_acc"])
        diffs.append(grown["test_acc"] - arm["test_acc"])
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"{100 * statistics.fmean(tests):.2f} ± {100 * statistics.stdev(tests):.2f}" in readme
    assert f"{100 * statistics.fmean(diffs):+.2f} ± {100 * statistics.stdev(diffs):.2f}" in readme

"""The committed allocation study (reports/allocation-study/): two skewed allocations trained as
controls of each seed of the published growth studies. Each summary is what the control folders
and the study's runs say, each architecture is the one reports/allocation-study/run.py makes, and
the README quotes the numbers."""

from __future__ import annotations

import csv
import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from grownet.arch import Architecture
from grownet.cost import cost

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "reports" / "allocation-study"
SUMMARIES = {"12m.json": REPO / "reports" / "growth-study-cpu", "24m.json": REPO / "reports" / "growth-study-cpu-24m"}


def _script():
    spec = importlib.util.spec_from_file_location("allocation_run", HERE / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(params=sorted(SUMMARIES), ids=lambda p: p)
def published(request) -> tuple[dict, Path]:
    path = HERE / request.param
    if not path.is_file():
        pytest.skip(f"no committed allocation summary {path}")
    return json.loads(path.read_text()), SUMMARIES[request.param]


def test_every_allocation_is_the_scripts_at_the_grown_macs(published):
    summary, study = published
    script = _script()
    for seed in summary["seeds"]:
        grown = json.loads((study / f"seed-{seed}" / "summary.json").read_text())
        seed_arch = Architecture.from_dict(grown["seed_arch"])
        for allocation in script.ALLOCATIONS:
            folder = study / f"seed-{seed}" / "controls" / allocation
            arch = Architecture.from_json(folder / "architecture.json")
            assert arch == script.skewed(seed_arch, grown["macs"], allocation)
            assert json.loads((folder / "summary.json").read_text())["control"] == allocation
            assert abs(cost(arch).macs / grown["macs"] - 1) <= 0.02
            assert list(arch.layer_widths().values()) == summary["widths"][allocation][str(seed)]


def test_summary_is_what_the_runs_say(published):
    summary, study = published
    with open(study / "runs.csv", newline="", encoding="utf-8") as fh:
        acc = {(r["arm"], int(r["seed"])): float(r["test_acc"]) for r in csv.DictReader(fh)}
    for seed in summary["seeds"]:
        for allocation in ("early", "late"):
            s = json.loads((study / f"seed-{seed}" / "controls" / allocation / "summary.json").read_text())
            acc[(allocation, seed)] = s["test_acc"]
    for arm, entry in summary["test_acc_percent"].items():
        values = [acc[(arm, s)] for s in summary["seeds"]]
        assert entry["per_seed"] == values
        assert entry["mean"] == pytest.approx(100 * statistics.fmean(values), abs=1e-9)
        assert entry["std"] == pytest.approx(100 * statistics.stdev(values), abs=1e-9)
    for key, entry in summary["differences_points"].items():
        a, b = key.split("-")
        diffs = [100 * (acc[(a, s)] - acc[(b, s)]) for s in summary["seeds"]]
        assert entry["mean"] == pytest.approx(statistics.fmean(diffs), abs=1e-9)


def test_readme_quotes_the_allocation_study(published):
    summary, _ = published
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for arm in ("early", "late"):
        a = summary["test_acc_percent"][arm]
        assert f"{a['mean']:.2f} ± {a['std']:.2f}" in readme, (arm, a)
    for key in ("early-late", "late-uniform", "early-uniform"):
        d = summary["differences_points"][key]
        assert f"{d['mean']:+.2f} ± {d['std']:.2f}" in readme, (key, d)

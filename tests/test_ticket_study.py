"""The ticket study (grownet.ticket.run_ticket_study) and its threshold (grownet.ticket.solve_keep)."""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

from grownet.cli import main
from grownet.cost import cost
from grownet.data import load_dataset
from grownet.errors import RunError, UsageError
from grownet.seeds import preset
from grownet.ticket import TICKET_ARMS, random_keep, reduced_arch, run_ticket_study, solve_keep

sys.path.insert(0, str(Path(__file__).parent))
from _signal_run import SEEDS, signal_after  # noqa: E402
from _smoke import smoke_dataset  # noqa: E402

ARCH = preset("vgg", width=(8, 16, 32, 32, 32))


@pytest.fixture(scope="module")
def rescaled(tmp_path_factory):
    """Per seed of tests/_signal_run.py, the per-filter importance after two DessiLBI epochs on
    a small CIFAR-10 slice, for the net as initialised (1.0) and with stages.2.0's kernel x4
    (BatchNorm: the same function)."""
    dataset, data_dir = smoke_dataset(tmp_path_factory.mktemp("data"))
    ds = load_dataset(dataset, data_dir=data_dir, limit_train=1000, limit_test=100)

    def run(scale: float, seed: int) -> dict[str, torch.Tensor]:
        return signal_after(ds, ARCH, scale=scale, mu=100.0, lam=1.0, seed=seed).importance

    return {seed: (run(1.0, seed), run(4.0, seed)) for seed in SEEDS}


@pytest.fixture(scope="module")
def importance(rescaled):
    """Seed 0's pair of :func:`rescaled`."""
    return rescaled[0]


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_the_kept_macs_land_within_10_points_of_the_target(importance, target):
    assert abs(solve_keep(ARCH, importance[0], target, relative_to="layer").macs_fraction - target) <= 0.10
    sol = solve_keep(ARCH, importance[0], target, relative_to="net")
    assert abs(sol.macs_fraction - target) <= 0.10
    assert sol.macs_fraction == pytest.approx(cost(reduced_arch(ARCH, sol.keep)).macs / cost(ARCH).macs, abs=1e-6)
    # one global threshold: every kept filter (beyond a layer's forced one) outranks every removed filter
    kept = [float(importance[0][l][i]) for l, idx in sol.keep.items() if len(idx) > 1 for i in idx]
    removed = [float(v) for l, idx in sol.keep.items() for i, v in enumerate(importance[0][l]) if i not in idx]
    assert min(kept) >= max(removed)
    mean = float(torch.cat(list(importance[0].values())).mean())
    assert sol.threshold == pytest.approx(min(kept) / mean, rel=1e-5)


@pytest.mark.parametrize("relative_to", ["layer", "net"])
def test_a_rescaled_layer_keeps_the_same_fraction(rescaled, relative_to):
    """Issue acceptance: stages.2.0's initial weights x4 change its kept fraction by at most
    0.15, on average over the seeds of tests/_signal_run.py (one seed's reading is a sample)."""
    moved = []
    for pair in rescaled.values():
        base, scaled = (solve_keep(ARCH, imp, 0.5, relative_to=relative_to) for imp in pair)
        moved.append(abs(base.kept_fraction["stages.2.0"] - scaled.kept_fraction["stages.2.0"]))
    assert statistics.mean(moved) <= 0.15, moved


def test_solve_keep_refuses_bad_targets_and_shapes(importance):
    with pytest.raises(UsageError, match=r"^target: the MACs fraction to keep must be in \(0, 1\], got 1.5$"):
        solve_keep(ARCH, importance[0], 1.5)
    with pytest.raises(UsageError, match=r"^importance\['stages.0.0'\]: needs 8 per-filter values$"):
        solve_keep(ARCH, {**importance[0], "stages.0.0": torch.ones(3)}, 0.5)
    assert solve_keep(ARCH, importance[0], 1.0).macs_fraction == 1.0
    with pytest.raises(UsageError, match=r"^relative_to: must be one of net, layer, got 'all'$"):
        solve_keep(ARCH, importance[0], 0.5, relative_to="all")


def test_the_layer_threshold_ranks_filters_against_their_own_layer(importance):
    """relative_to="layer": a filter is kept iff I_g / mean(I of its layer) >= θ (beyond a
    layer's forced one), and layers keep comparable fractions."""
    sol = solve_keep(ARCH, importance[0], 0.5, relative_to="layer")
    rel = {layer: v / v.mean() for layer, v in importance[0].items()}
    kept = [float(rel[l][i]) for l, idx in sol.keep.items() if len(idx) > 1 for i in idx]
    removed = [float(v) for l, idx in sol.keep.items() for i, v in enumerate(rel[l]) if i not in idx]
    assert min(kept) >= max(removed) and sol.threshold == pytest.approx(min(kept), rel=1e-5)


def test_random_keep_draws_the_counts_reproducibly():
    counts = {layer: max(1, w // 3) for layer, w in ARCH.layer_widths().items()}
    a, b = random_keep(ARCH, counts, seed=3), random_keep(ARCH, counts, seed=3)
    assert a == b and a != random_keep(ARCH, counts, seed=4)
    assert {k: len(v) for k, v in a.items()} == counts
    assert all(v == sorted(set(v)) and v[-1] < ARCH.width(k) for k, v in a.items())


# ---- the study, end to end ---------------------------------------------------------------------

TINY = {"data.limit_train": 300, "data.val_size": 100, "data.limit_test": 100, "data.batch_size": 50,
        "model.seed_width": "4,8,8,8,8", "finetune.warmup_epochs": 0}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    dataset, data_dir = smoke_dataset(root)
    out = root / "ticket"
    kw = dict(out=out, seeds=2, epochs=2, data_dir=data_dir, device="cpu", overrides=TINY)
    return run_ticket_study(dataset, **kw), kw, dataset


def test_the_study_trains_every_arm_and_summarizes_the_csv(study):
    result, kw, _ = study
    with open(result.path / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["arm"], int(r["seed"])) for r in rows] == [(a, s) for s in range(2) for a in TICKET_ARMS]
    s = json.loads((result.path / "summary.json").read_text())
    for arm in TICKET_ARMS:
        acc = [float(r["test_acc"]) for r in rows if r["arm"] == arm]
        assert s["arms"][arm]["n"] == 2
        assert s["arms"][arm]["test_acc"]["mean"] == pytest.approx(statistics.fmean(acc))
        assert s["arms"][arm]["test_acc"]["std"] == pytest.approx(statistics.stdev(acc))
    by = {(r["arm"], int(r["seed"])): r for r in rows}
    d = [float(by[("lbi", k)]["test_acc"]) - float(by[("sgd", k)]["test_acc"]) for k in range(2)]
    assert s["differences"]["lbi-sgd"]["mean"] == pytest.approx(statistics.fmean(d))
    for k in range(2):  # the ticket, its controls and the dense arms have the shapes the study says
        ticket = json.loads((result.path / f"seed-{k}" / "lbi" / "ticket.json").read_text())
        widths = " ".join(str(len(v)) for v in ticket["keep"].values())
        assert by[("rewound", k)]["widths"] == by[("finetuned", k)]["widths"] == by[("scratch", k)]["widths"] \
            == by[("random", k)]["widths"] == widths
        assert by[("sgd", k)]["widths"] == by[("lbi", k)]["widths"] == "4 8 8 8 8 8 8 8"
        assert abs(ticket["macs_fraction"] - 0.5) <= 0.10 and ticket["epoch"] == 1  # round(0.15 x 2) -> at least 1
        assert int(by[("finetuned", k)]["epochs"]) == 1 and int(by[("rewound", k)]["epochs"]) == 2
    assert s["ticket"]["target"] == 0.5 and set(s["ticket"]["kept_fraction"]) == set(ARCH.layer_widths())
    page = (result.path / "study.html").read_text()
    assert "<svg" in page and "Ticket study" in page and "stages.4.1" in page


def test_each_arm_records_its_optimizer_and_schedule(study):
    """SGD arms on the cosine schedule, the fine-tuned arm at 0.1x its rate, lbi with DessiLBI;
    the shared init and lbi's trained weights have the dense net's keys."""
    result, _, _ = study
    init = torch.load(result.path / "seed-0" / "init.pt", weights_only=True)
    sgd_first = json.loads((result.path / "seed-0" / "sgd" / "summary.json").read_text())
    assert sgd_first["optimizer"] == "sgd" and "cosine 0.1 -> 0 over 2 epochs" == sgd_first["schedule"]
    fine = json.loads((result.path / "seed-0" / "finetuned" / "summary.json").read_text())
    assert fine["schedule"] == "cosine 0.01 -> 0 over 1 epochs"
    lbi = json.loads((result.path / "seed-0" / "lbi" / "summary.json").read_text())
    assert lbi["optimizer"] == "dessilbi"
    assert set(init) == set(torch.load(result.path / "seed-0" / "lbi" / "weights.pt", weights_only=True))


def test_a_rerun_continues_and_retrains_only_what_is_missing(study):
    result, kw, dataset = study
    kept = {p: p.stat().st_mtime_ns for p in result.path.glob("seed-*/*/summary.json")}
    uniform = result.path / "seed-1" / "uniform"
    before = json.loads((uniform / "summary.json").read_text())
    (uniform / "summary.json").unlink()
    again = run_ticket_study(dataset, **kw)
    after = json.loads((uniform / "summary.json").read_text())
    assert after["test_acc"] == before["test_acc"] and after["val_acc"] == before["val_acc"]  # same seed, same net
    changed = [p for p, t in kept.items() if p.stat().st_mtime_ns != t]
    assert changed == [uniform / "summary.json"]
    assert again.summary["differences"] == result.summary["differences"]
    assert all(again.summary["arms"][a]["test_acc"] == result.summary["arms"][a]["test_acc"] for a in TICKET_ARMS)
    with pytest.raises(RunError, match="holds a study of another configuration"):
        run_ticket_study(dataset, **{**kw, "epochs": 3})


def test_a_seed_another_process_holds_is_left_to_it(study, tmp_path):
    import shutil

    from grownet.runfolder import RunLock

    result, kw, dataset = study
    copy = tmp_path / "copy"
    shutil.copytree(result.path, copy)
    (copy / "seed-1" / "uniform" / "summary.json").unlink()
    with RunLock(copy / "seed-1"):  # as a second worker would hold it
        partial = run_ticket_study(dataset, **{**kw, "out": copy})
    assert not (copy / "seed-1" / "uniform" / "summary.json").exists()
    assert {r["seed"] for r in partial.rows} == {0} and partial.summary["arms"]["sgd"]["n"] == 1
    assert json.loads((copy / "summary.json").read_text())["arms"]["sgd"]["n"] == 1


def test_a_damaged_arm_summary_is_named(study, tmp_path):
    result, kw, dataset = study
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(result.path, copy)
    f = copy / "seed-0" / "scratch" / "summary.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "test_acc": 1.5}))
    with pytest.raises(RunError, match=rf"^{f}: test_acc: must be a finite number in \[0, 1\], got 1.5; the file was "
                                      "changed or damaged$"):
        run_ticket_study(dataset, **{**kw, "out": copy})


def test_cli_refuses_ticket_flags_for_a_growth_study_and_bad_values(tmp_path, capsys):
    assert main(["study", "--out", str(tmp_path / "s"), "--target", "0.4"]) == 2
    assert capsys.readouterr().err == "grownet: error: --target: applies to --kind ticket only\n"
    assert main(["study", "--kind", "ticket", "--out", str(tmp_path / "s"), "--target", "1.5"]) == 2
    assert capsys.readouterr().err == "grownet: error: --target: must be a number in (0, 1], got 1.5\n"
    assert not (tmp_path / "s").exists()

"""The main job (grownet.search): a real smoke search on a small slice, its run folder, the
budget, resume after interruptions (in-process and SIGKILL), what a kill leaves behind and
resume completes (missing outputs, stale temporary files), divergence handling, and the
run-folder guards (existing folder, lock, corrupt checkpoint, other configuration)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import grownet.loop as loop
from _smoke import FAST, REPO, SMOKE, smoke_dataset
from grownet.arch import Architecture
from grownet.cost import cost
from grownet.errors import DivergenceError, RunError, UsageError
from grownet.policy import DECISIONS, macs_per_filter, widen_width
from grownet.recipe import load_recipe
from grownet.runfolder import HISTORY_COLUMNS, RunFolder, RunLock
from grownet.search import Reporter, SearchInterrupted, search
from grownet.seeds import preset
from grownet.train import EpochStats, compile_unsupported
from grownet.weights import load_model

RUN_FILES = ("config.json", "architecture.json", "weights.pt", "history.csv", "rounds.json", "summary.json",
             "grownet.log", "checkpoints/latest.json")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke_dataset(tmp_path_factory.mktemp("data"))


def run(out: Path, data, **kw):
    dataset, data_dir = data
    overrides = {**FAST, **kw.pop("overrides", {})}
    return search(dataset, data_dir=data_dir, recipe=SMOKE, overrides=overrides, out=out, seed=3, device="cpu", **kw)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data):
    return run(tmp_path_factory.mktemp("runs") / "smoke", data)


def history(path: Path) -> list[dict]:
    with open(path / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def comparable(run_dir: Path) -> dict:
    """Everything a run produced except wall-clock times."""
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("wall_time")
    rows = [{k: v for k, v in row.items() if k != "wall_time"} for row in history(run_dir)]
    return {
        "summary": summary,
        "history": rows,
        "rounds": json.loads((run_dir / "rounds.json").read_text()),
        "architecture": (run_dir / "architecture.json").read_text(),
        "weights": hashlib.sha256((run_dir / "weights.pt").read_bytes()).hexdigest(),
    }


# ---- the smoke run ------------------------------------------------------------------------------


def test_smoke_search_writes_every_file_of_the_run_folder(smoke):
    d = smoke.run_dir
    for name in RUN_FILES:
        assert (d / name).is_file(), name
    config = json.loads((d / "config.json").read_text())
    assert set(config) >= {"recipe", "seed", "dataset", "data_dir", "device", "versions", "command", "started"}
    assert config["seed"] == 3 and config["recipe"]["grow"]["local_epochs"] == 2
    assert set(config["versions"]) == {"grownet", "torch", "torchvision", "python"}
    rows = history(d)
    assert list(rows[0]) == list(HISTORY_COLUMNS)
    assert [int(r["epoch"]) for r in rows] == list(range(1, smoke.epochs + 1))
    assert [r["phase"] for r in rows] == ["grow"] * 6 + ["finetune"]
    summary = json.loads((d / "summary.json").read_text())
    assert set(summary) >= {"dataset", "classes", "seed", "val_acc", "test_acc", "macs", "params", "train_flops",
                            "wall_time", "rounds", "epochs", "seed_arch", "final_arch", "events"}
    assert len(summary["classes"]) == 10 and summary["events"] == []
    assert (summary["rounds"], summary["epochs"]) == (3, 7)
    assert "done: val acc" in (d / "grownet.log").read_text()


def test_smoke_search_grows_and_records_every_decision_with_its_numbers(smoke):
    rounds = json.loads((smoke.run_dir / "rounds.json").read_text())
    assert [r["grew"] for r in rounds] == [True, True, False]
    assert rounds[2]["hold"] == "budget.max_rounds 3 reached"
    recipe = load_recipe(SMOKE)
    arch = Architecture.from_dict(json.loads((smoke.run_dir / "summary.json").read_text())["seed_arch"])
    for r in rounds:
        assert (r["macs"], r["params"]) == (cost(arch).macs, cost(arch).params)
        assert [l["layer"] for l in r["layers"][: len(arch.layer_widths())]] == list(arch.layer_widths())
        for l in r["layers"]:
            assert l["decision"] in DECISIONS and l["reason"]
            if l["decision"] == "widen":
                assert l["activity"] >= l["tau"] == recipe.grow.tau
                assert l["new_width"] == widen_width(l["width"], ratio=recipe.grow.ratio, min_add=recipe.grow.min_add)
            if l["decision"] == "keep":
                assert l["activity"] < l["tau"] and l["new_width"] == l["width"]
        if r["grew"]:
            arch = Architecture.from_dict(r["new_arch"])
    assert arch == smoke.arch
    assert smoke.macs == cost(smoke.arch).macs > cost(Architecture.from_dict(json.loads(
        (smoke.run_dir / "summary.json").read_text())["seed_arch"])).macs


def test_the_uniform_signal_widens_every_layer_by_the_same_rule(tmp_path, data):
    """grow.signal = "uniform" (a control): every layer reads activity 1 at every check and
    widens by grow.ratio, whatever Γ or the filters' importance say."""
    result = run(tmp_path / "uniform", data, overrides={"grow.signal": "uniform", "grow.deepen": False, "budget.max_macs": 0,
                                                        "budget.max_rounds": 2, "finetune.epochs": 0})
    recipe = load_recipe(SMOKE)
    rounds = json.loads((result.run_dir / "rounds.json").read_text())
    assert [r["grew"] for r in rounds] == [True, False]
    for r in rounds[:1]:
        assert "signal" not in r  # no importance meter ran
        for l in r["layers"]:
            assert (l["activity"], l["decision"]) == (1.0, "widen")
            assert l["new_width"] == widen_width(l["width"], ratio=recipe.grow.ratio, min_add=recipe.grow.min_add)


def test_min_rounds_trains_the_same_net_on_when_nothing_grows_and_resumes_exactly(tmp_path, data):
    """budget.min_rounds = 3 with a MACs budget the seed already fills: no check grows, the
    first two lead to another round of the same net (each with its own importance meter), the
    third is held by max_rounds; the epochs are those of three rounds, as with growth, and a
    run stopped inside the second round resumes to the same files."""
    seed_macs = cost(preset("vgg", width=8)).macs
    over = {"budget.max_macs": seed_macs, "budget.min_rounds": 3, "finetune.epochs": 1}
    whole = run(tmp_path / "whole", data, overrides=over)
    rounds = json.loads((whole.run_dir / "rounds.json").read_text())
    assert [(r["round"], r["grew"], r["next_round"]) for r in rounds] == [(1, False, True), (2, False, True), (3, False, False)]
    assert rounds[2]["hold"] == "budget.max_rounds 3 reached"
    steps = [r["signal"]["steps"] for r in rounds]
    assert steps[0] == steps[1] == steps[2] > 0  # a new meter every round, not one summed over rounds
    assert [(int(h["round"]), h["phase"]) for h in history(whole.run_dir)] == [
        (1, "grow"), (1, "grow"), (2, "grow"), (2, "grow"), (3, "grow"), (3, "grow"), (3, "finetune")]
    assert whole.macs == seed_macs
    out = tmp_path / "stopped"
    with pytest.raises(SearchInterrupted):
        run(out, data, overrides=over, reporter=StopAt(3))
    again = run(out, data, overrides=over, resume=True)
    assert (again.val_acc, again.test_acc) == (whole.val_acc, whole.test_acc)
    assert comparable(out) == comparable(whole.run_dir)


def test_signal_off_keeps_the_seed_for_the_rounds_min_rounds_asks_for(tmp_path, data):
    """grow.signal = "off": every layer reads activity 0, nothing grows at any check; with
    budget.min_rounds the seed trains the growth phase's rounds, then the fine-tune."""
    result = run(tmp_path / "off", data, overrides={"grow.signal": "off", "budget.max_rounds": 2, "budget.min_rounds": 2,
                                                    "finetune.epochs": 0})
    rounds = json.loads((result.run_dir / "rounds.json").read_text())
    assert [(r["grew"], r["next_round"]) for r in rounds] == [(False, True), (False, False)]
    assert all(l["activity"] == 0.0 and l["decision"] == "keep" for r in rounds for l in r["layers"])
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert Architecture.from_dict(summary["seed_arch"]).layer_widths() == result.arch.layer_widths()
    assert summary["epochs"] == 4


def test_the_importance_per_mac_signal_weights_each_layer_by_its_filters_cost(tmp_path, data):
    """grow.activity_cost_exponent = e: the meter of every round tests importance / m^e, m the
    MACs one more filter of the layer adds in that round's net (recorded in rounds.json)."""
    result = run(tmp_path / "per-mac", data, overrides={"grow.activity_cost_exponent": 0.5, "grow.deepen": False,
                                                        "budget.max_rounds": 2, "finetune.epochs": 0})
    rounds = json.loads((result.run_dir / "rounds.json").read_text())
    arch = Architecture.from_dict(json.loads((result.run_dir / "summary.json").read_text())["seed_arch"])
    for r in rounds:
        per = macs_per_filter(arch, lambda a: (cost(a).macs, cost(a).params))
        assert r["signal"]["weights"] == pytest.approx({l: m ** -0.5 for l, m in per.items()}, rel=1e-5)
        if r["grew"]:
            arch = Architecture.from_dict(r["new_arch"])


def test_history_counts_training_flops_from_the_cost_of_each_epochs_net(smoke):
    rows = history(smoke.run_dir)
    rounds = json.loads((smoke.run_dir / "rounds.json").read_text())
    archs = [Architecture.from_dict(json.loads((smoke.run_dir / "summary.json").read_text())["seed_arch"])]
    archs += [Architecture.from_dict(r["new_arch"]) for r in rounds if r["grew"]]
    samples = (1000 - 300) // 64 * 64  # the training loader drops the last partial batch
    flops = 0
    for row in rows:
        arch = archs[int(row["round"]) - 1]
        flops += cost(arch).train_flops_per_sample * samples
        assert int(row["train_flops"]) == flops
        assert (int(row["macs"]), int(row["params"])) == (cost(arch).macs, cost(arch).params)
    assert float(rows[-1]["lr"]) < 0.05 == float(rows[0]["lr"])  # cosine fine-tune vs constant growing lr
    walls = [float(r["wall_time"]) for r in rows]
    assert walls == sorted(walls)


def test_saved_architecture_and_weights_reproduce_the_recorded_accuracy(smoke, data):
    from grownet.data import load_dataset, make_loaders
    from grownet.train import evaluate, prepare_model

    d = smoke.run_dir
    arch = Architecture.from_json(d / "architecture.json")
    meta = arch.meta
    assert (meta["macs"], meta["params"]) == (cost(arch).macs, cost(arch).params)
    assert (meta["val_acc"], meta["test_acc"]) == (smoke.val_acc, smoke.test_acc)
    assert meta["dataset"] == data[0] and meta["grownet_version"]
    model = load_model(d / "architecture.json", d / "weights.pt")
    prepare_model(model, torch.device("cpu"), channels_last=True)
    ds = load_dataset(data[0], data_dir=data[1], limit_train=1000, limit_test=300)
    _, val, test = make_loaders(ds, batch_size=64, val_fraction=300 / 1000, seed=3, eval_batch_size=500, channels_last=True)
    assert evaluate(model, val).acc == smoke.val_acc
    assert evaluate(model, test).acc == smoke.test_acc


# ---- budget ---------------------------------------------------------------------------------------


def test_a_macs_budget_is_never_exceeded_and_the_clipping_is_recorded(tmp_path, data, smoke):
    rounds = json.loads((smoke.run_dir / "rounds.json").read_text())
    seed_macs, grown_macs = rounds[0]["macs"], rounds[0]["new_macs"]
    budget = (seed_macs + grown_macs) // 2
    result = run(tmp_path / "budget", data, overrides={"budget.max_macs": budget, "budget.max_rounds": 2, "finetune.epochs": 0})
    assert result.macs <= budget
    got = json.loads((result.run_dir / "rounds.json").read_text())
    decisions = [l for r in got for l in r["layers"] if l["decision"] in ("clipped", "skipped")]
    assert decisions and all("budget.max_macs" in l["reason"] or "max_rounds" in l["reason"] for l in decisions)
    assert any(l["decision"] == "clipped" and "max_macs" in l["reason"] for l in decisions)
    assert all(r["new_macs"] <= budget for r in got)
    assert history(result.run_dir)[-1]["phase"] == "grow"  # no fine-tune: the last grown weights are kept


def test_the_time_budget_holds_growth_that_would_not_leave_room_for_the_fine_tune(tmp_path, data):
    result = run(tmp_path / "timed", data, overrides={"budget.time_budget": 0.001, "finetune.epochs": 0})
    (check,) = json.loads((result.run_dir / "rounds.json").read_text())
    assert not check["grew"] and check["hold"].startswith("budget.time_budget 0.001 s: ")
    saturated = [l for l in check["layers"] if l["activity"] is not None and l["activity"] >= l["tau"]]
    assert saturated and all(l["decision"] == "skipped" and "budget.time_budget" in l["reason"] for l in saturated)
    assert result.epochs == 2


# ---- resume ----------------------------------------------------------------------------------------


class StopAt(Reporter):
    """Raise KeyboardInterrupt (as Ctrl-C would) when epoch ``epoch`` ends."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_end(self, row):
        if row["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_resume_after_interruptions_gives_the_result_of_an_uninterrupted_run(tmp_path, data, smoke):
    out = tmp_path / "interrupted"
    # Epoch 2 ends round 1 (interrupted before its growth check was saved); epoch 7 is the fine-tune.
    with pytest.raises(SearchInterrupted, match=r"continue with: .*--resume"):
        run(out, data, reporter=StopAt(2))
    with pytest.raises(SearchInterrupted):
        run(out, data, resume=True, reporter=StopAt(7))
    result = run(out, data, resume=True)
    assert result.arch == smoke.arch
    assert (result.val_acc, result.test_acc, result.train_flops) == (smoke.val_acc, smoke.test_acc, smoke.train_flops)
    assert comparable(out) == comparable(smoke.run_dir)


def test_a_relative_data_dir_is_stored_absolute_so_a_resume_from_elsewhere_finds_the_data(tmp_path, data, monkeypatch):
    dataset, data_dir = data
    if data_dir is None:
        pytest.skip("needs a dataset read from a folder (../shared/data)")
    folder = os.path.abspath(data_dir)
    monkeypatch.chdir(os.path.dirname(folder))
    out = tmp_path / "relative"
    with pytest.raises(SearchInterrupted):
        search(dataset, data_dir=os.path.basename(folder), recipe=SMOKE, overrides=FAST, out=out, seed=3, device="cpu",
               reporter=StopAt(2))
    assert json.loads((out / "config.json").read_text())["data_dir"] == folder
    monkeypatch.chdir(tmp_path)  # where the relative name means nothing
    assert search(None, out=out, resume=True, device="cpu").test_acc > 0


def test_an_sgd_fine_tune_follows_its_schedule_and_resumes_exactly(tmp_path, data):
    import math

    sgd = {"budget.max_rounds": 1, "finetune.epochs": 2, "finetune.optimizer": "sgd", "finetune.lr": 0.1,
           "finetune.nesterov": True, "finetune.weight_decay": 5e-4, "finetune.warmup_epochs": 0.5,
           "finetune.label_smoothing": 0.1}
    whole = run(tmp_path / "whole", data, overrides=sgd)
    steps = (1000 - 300) // 64
    total = 2 * steps
    lrs = [float(r["lr"]) for r in history(whole.run_dir)]
    for k in range(2):  # the lr of each fine-tune epoch's last step: cosine after a half-epoch warm-up
        t = (k + 1) * steps - 1
        assert lrs[2 + k] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * t / total)))
    best = max(range(2), key=lambda k: float(history(whole.run_dir)[2 + k]["val_acc"]))
    assert json.loads((whole.run_dir / "summary.json").read_text())["best_epoch"] == 3 + best
    out = tmp_path / "parts"
    with pytest.raises(SearchInterrupted):
        run(out, data, overrides=sgd, reporter=StopAt(4))  # the epoch-3 checkpoint holds SGD's momentum
    assert RunFolder(out).load_checkpoint()["optimizer_kind"] == "sgd"
    run(out, data, overrides=sgd, resume=True)
    assert comparable(out) == comparable(whole.run_dir)


@pytest.mark.slow
@pytest.mark.skipif(compile_unsupported(torch.device("cpu")) is not None,
                    reason=f"torch.compile cannot run on this CPU: {compile_unsupported(torch.device('cpu'))}")
def test_a_compiled_fine_tune_checkpoints_resumes_and_saves_plain_module_weights(tmp_path, data):
    """run.compile = on: the fine-tune (not the growing round) trains a compiled net; its
    checkpoints and weights keep the plain module's keys, and a resume into the fine-tune
    compiles the restored net."""
    compiled = {"budget.max_rounds": 1, "finetune.epochs": 2, "run.compile": "on"}
    out = tmp_path / "compiled"
    with pytest.raises(SearchInterrupted):
        run(out, data, overrides=compiled, reporter=StopAt(4))  # the checkpoint: the first fine-tune epoch's
    ck = RunFolder(out).load_checkpoint()
    assert ck["state"]["phase"] == "finetune"
    arch = Architecture.from_dict(ck["arch"])
    plain = list(load_model(arch).state_dict())
    assert list(ck["model"]) == plain and list(ck["best_model"]) == plain
    result = run(out, data, overrides=compiled, resume=True)
    assert result.epochs == 4
    log = (out / "grownet.log").read_text()
    assert log.count("fine-tune: compiled (run.compile = on, inductor on cpu)") == 2  # the first run and the resume
    assert list(torch.load(out / "weights.pt", weights_only=True)) == plain
    load_model(out)  # strict: every key matches


def test_resume_after_sigkill_gives_the_same_result(tmp_path, data, smoke):
    out = tmp_path / "killed"
    dataset, data_dir = data
    cmd = [sys.executable, "-m", "grownet", "search", "--dataset", dataset, "--recipe", str(SMOKE), "--out", str(out),
           "--seed", "3", "--device", "cpu", "--quiet"]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    for key, value in FAST.items():
        cmd += [f"--{key}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "history.csv").exists() and len(history(out)) >= 3:  # mid round 2, after a growth
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    result = run(out, data, resume=True)
    assert result.arch == smoke.arch and result.val_acc == smoke.val_acc
    assert comparable(out) == comparable(smoke.run_dir)


def test_resuming_a_finished_run_returns_its_result_without_training(smoke, data, monkeypatch):
    monkeypatch.setattr(loop, "train_epoch", lambda *a, **k: pytest.fail("trained again"))
    before = comparable(smoke.run_dir)
    again = run(smoke.run_dir, data, resume=True)
    assert (again.arch, again.val_acc, again.test_acc) == (smoke.arch, smoke.val_acc, smoke.test_acc)
    assert comparable(smoke.run_dir) == before


# ---- what a kill at the wrong moment leaves, and what resume makes of it (issue 18, class 5) ----------
#
# A run killed after its final checkpoint and before its report, or with outputs deleted, gets
# them on resume; temporary files of writes killed mid-way (named as grownet.files names them)
# and checkpoint files an uninterrupted run would not keep are removed.


#: Files a resumed run writes byte for byte as an uninterrupted one (README "Reliability"); the
#: others hold wall-clock times (history.csv, summary.json, report.html, the checkpoints and so
#: latest.json), the start time (config.json) or each process's log (grownet.log).
UNTIMED = ("architecture.json", "weights.pt", "rounds.json")


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> SHA-256), the lock excluded."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def copy_of(whole: Path, tmp: Path) -> Path:
    """A copy of the run under the same folder name (the report shows the name and the path)."""
    out = tmp / whole.name
    shutil.copytree(whole, out)
    return out


def same_files(got: Path, want: Path) -> None:
    """The files of ``got`` are those of ``want``, byte for byte except ``grownet.log``;
    report.html up to the folder's path, which the page shows."""
    a, b = tree(got), tree(want)
    assert sorted(a) == sorted(b)
    page = (got / "report.html").read_text().replace(str(got.parent), str(want.parent))
    assert page == (want / "report.html").read_text()
    names = set(b) - {"grownet.log", "report.html"}
    assert {k: a[k] for k in names} == {k: b[k] for k in names}


def checkpoint_seq(run_dir: Path) -> int:
    return json.loads((run_dir / "checkpoints" / "latest.json").read_text())["seq"]


def plant_temporaries(run_dir: Path) -> list[Path]:
    """Temporary files as writes killed mid-way leave them: ``.<name>.<8 characters>.tmp`` next to
    their target (mkstemp's names), a checkpoint written but never named by the manifest, and
    one older than the two an uninterrupted run keeps."""
    seq = checkpoint_seq(run_dir)
    ck = run_dir / "checkpoints"
    planted = [ck / f".ckpt-{seq + 1:06d}.pt.k2j_h5g6.tmp", ck / ".latest.json.abcdefgh.tmp",
               run_dir / ".summary.json.x1y2z3w4.tmp", run_dir / ".report.html.q9q9q9q9.tmp",
               ck / f"ckpt-{seq + 1:06d}.pt", ck / "ckpt-000001.pt"]
    for path in planted:
        path.write_bytes(b"\x80half a pickle")
    return planted


def test_a_run_killed_after_its_last_checkpoint_gets_its_report_on_resume(tmp_path, data, smoke, monkeypatch):
    whole = smoke.run_dir
    out = copy_of(whole, tmp_path)
    (out / "report.html").unlink()  # killed after the final checkpoint, before write_report
    monkeypatch.setattr(loop, "train_epoch", lambda *a, **k: pytest.fail("trained again"))

    result = run(out, data, resume=True)

    assert result.val_acc == json.loads((whole / "summary.json").read_text())["val_acc"]
    same_files(out, whole)


def test_every_missing_output_of_a_complete_run_is_written_again_identically(tmp_path, data, smoke, monkeypatch):
    whole = smoke.run_dir
    out = copy_of(whole, tmp_path)
    outputs = ("architecture.json", "weights.pt", "history.csv", "rounds.json", "summary.json", "report.html")
    for name in outputs:
        (out / name).unlink()
    monkeypatch.setattr(loop, "train_epoch", lambda *a, **k: pytest.fail("trained again"))

    run(out, data, resume=True)

    same_files(out, whole)  # from the checkpoint: the same bytes, wall times included
    assert "wrote the missing architecture.json, weights.pt" in (out / "grownet.log").read_text()


def test_a_resume_removes_temporaries_and_checkpoints_an_uninterrupted_run_would_not_hold(tmp_path, data, smoke):
    whole = smoke.run_dir
    out = copy_of(whole, tmp_path)
    planted = plant_temporaries(out)

    run(out, data, resume=True)

    assert not any(p.exists() for p in planted)
    same_files(out, whole)


def test_a_run_killed_mid_way_with_temporaries_left_resumes_to_the_files_of_an_uninterrupted_run(tmp_path, data, smoke):
    whole = smoke.run_dir
    out = tmp_path / whole.name
    with pytest.raises(SearchInterrupted):
        run(out, data, reporter=StopAt(3))  # in round 2, after a growth
    plant_temporaries(out)

    run(out, data, resume=True)

    got, want = tree(out), tree(whole)
    assert sorted(got) == sorted(want)  # the same files: nothing stale, nothing missing
    assert {k: got[k] for k in UNTIMED} == {k: want[k] for k in UNTIMED}
    config, expected = (json.loads((d / "config.json").read_text()) for d in (out, whole))
    assert config.pop("started") and expected.pop("started")  # the start time of each run
    assert config == expected


# ---- run-folder guards -------------------------------------------------------------------------------


def test_an_existing_run_folder_is_never_overwritten_without_resume_or_force(smoke, data):
    with pytest.raises(RunError, match=r"already exists; pass --resume to continue that run or --force to overwrite it"):
        run(smoke.run_dir, data)
    with pytest.raises(UsageError, match=r"--resume and --force contradict"):
        run(smoke.run_dir, data, resume=True, force=True)


def test_force_clears_only_grownet_run_folders(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match=r"is not empty and is not a grownet run folder; refusing to delete it"):
        RunFolder(other).prepare(resume=False, force=True)
    assert (other / "notes.txt").exists()
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.json").write_text("{}")
    folder = RunFolder(old)
    folder.prepare(resume=False, force=True)
    assert [p.name for p in old.iterdir()] == [".replaced"]  # kept until the new run starts
    (old / "grownet.log").write_text("a start that failed\n")
    folder.restore_replaced()
    assert sorted(p.name for p in old.iterdir()) == ["checkpoints", "config.json"]
    assert (old / "config.json").read_text() == "{}"
    folder.prepare(resume=False, force=True)
    folder.drop_replaced()
    assert list(old.iterdir()) == []


def test_resume_refuses_another_configuration_a_corrupt_checkpoint_and_a_locked_folder(smoke, data, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(smoke.run_dir, copy)
    with pytest.raises(RunError, match=r"was started with another configuration \(grow\.tau = 0\.8, now 0\.9\)"):
        run(copy, data, resume=True, overrides={"grow.tau": 0.9})
    with pytest.raises(RunError, match=r"was started with --seed 3, not 4"):
        search(data[0], data_dir=data[1], out=copy, resume=True, seed=4)
    with RunLock(copy):
        with pytest.raises(RunError, match=r"is in use by another grownet process \(pid \d+\)"):
            run(copy, data, resume=True)
    manifest = json.loads((copy / "checkpoints" / "latest.json").read_text())
    ckpt = copy / "checkpoints" / manifest["file"]
    blob = bytearray(ckpt.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(blob))
    with pytest.raises(RunError, match=r"checkpoint is corrupt \(SHA-256 mismatch\)"):
        run(copy, data, resume=True)
    with pytest.raises(RunError, match=r"no such run folder to resume"):
        run(tmp_path / "missing", data, resume=True)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match=r"nothing to resume \(no checkpoints/latest\.json\)"):
        run(tmp_path / "empty", data, resume=True)


# ---- seeds from the recipe ------------------------------------------------------------------------------


def test_seed_width_and_depths_shape_the_preset_seed(tmp_path):
    from types import SimpleNamespace

    from grownet.errors import ConfigError
    from grownet.recipe import Recipe
    from grownet.job import seed_arch

    data = SimpleNamespace(num_classes=10, in_channels=3, input_size=32)

    def seed(**model):
        return seed_arch(Recipe.from_dict({"model": model}), data)

    assert seed().stages == ((16,), (16,), (16, 16), (16, 16), (16, 16))  # the preset's own
    assert seed(seed_width=[16, 32, 64, 64, 64]).stages == ((16,), (32,), (64, 64), (64, 64), (64, 64))
    assert seed(seed_width=16, seed_depths=[2, 2, 3, 3, 3]).stages == ((16,) * 2, (16,) * 2, (16,) * 3, (16,) * 3, (16,) * 3)
    res = seed(seed_arch="resnet", seed_width=16, seed_depths=3)
    assert res.stem == 16 and [(s.width, s.blocks) for s in res.stages] == [(16, (16, 16, 16))] * 3
    with pytest.raises(ConfigError, match=r"model\.seed_width: 3 values, but the vgg preset has 5 stages"):
        seed(seed_width=[8, 16, 32])
    with pytest.raises(ConfigError, match=r"model\.seed_width and model\.seed_depths apply to the vgg and resnet presets only"):
        seed(seed_arch="vgg16", seed_width=8)
    with pytest.raises(ConfigError, match=r"model\.seed_arch: must be a preset \(vgg, resnet, .*\) or an architecture JSON path"):
        seed(seed_arch="alexnet")
    path = tmp_path / "seed.json"
    Architecture("vgg", ((8,), (8,)), num_classes=100).save(path)
    with pytest.raises(ConfigError, match=r"has num_classes 100, the dataset needs 10"):
        seed(seed_arch=str(path))


# ---- divergence -----------------------------------------------------------------------------------------


def test_a_non_finite_loss_restores_the_last_checkpoint_and_lowers_the_lr(tmp_path, data, monkeypatch):
    real = loop.train_epoch
    calls = []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # epoch 2, first attempt: diverges half-way
            real(*args, **kw)
            return EpochStats(float("nan"), 0.1, 320, 0.1, False)
        return real(*args, **kw)

    monkeypatch.setattr(loop, "train_epoch", flaky)
    result = run(tmp_path / "nan", data, overrides={"budget.max_rounds": 1, "finetune.epochs": 0})
    assert len(calls) == 3
    (event,) = result.events
    assert event["event"] == "divergence" and event["epoch"] == 2 and "lr x 0.5" in event["detail"]
    assert [float(r["lr"]) for r in history(result.run_dir)] == [0.05, 0.025]
    assert json.loads((result.run_dir / "summary.json").read_text())["events"] == [event]


def test_a_loss_that_stays_non_finite_stops_with_divergence_error(tmp_path, data, monkeypatch):
    monkeypatch.setattr(loop, "train_epoch", lambda *a, **k: EpochStats(float("nan"), 0.0, 64, 0.1, False))
    out = tmp_path / "diverged"
    with pytest.raises(DivergenceError, match=r"the loss was non-finite 3 times \(run\.max_retries 2\).*lower optim\.lr"):
        run(out, data, overrides={"run.max_retries": 2})
    state = RunFolder(out).load_checkpoint()["state"]
    assert state["epoch"] == 0 and [e["event"] for e in state["events"]] == ["divergence"] * 3


# ---- checkpoints written before the one loop (issue 14) ------------------------------------------------


def test_a_checkpoint_written_before_the_one_loop_resumes_to_the_same_run(tmp_path, monkeypatch):
    """tests/data/issue14/v1-run: a search by the code before issue 14 (commit d631e73) on the generated
    npz set, stopped in its fine-tune (epoch 6 of 6; its last checkpoint holds epoch 5, the best
    fine-tune state and DessiLBI's V/Γ). Resumed now, it ends as that code's uninterrupted run did
    (tests/data/issue14/v1-run-final.json, per torch version, recorded with one thread). Floats
    compare to 1e-4: DessiLBI now keeps Γ as per-filter factors of V (issue 17), whose fused
    step rounds differently from the stored-Γ code in the 7th digit."""
    from test_refactor_equivalence import _folder, _same

    golden = json.loads((REPO / "tests" / "data" / "issue14" / "v1-run-final.json").read_text())
    key = f"torch {torch.__version__}"
    if key not in golden:
        pytest.skip(f"no values recorded for {key} (recorded: {', '.join(golden)})")
    monkeypatch.setenv("GROWNET_SHARED_DATA", str(tmp_path / "none"))  # the generated set, not CIFAR-10
    dataset, _ = smoke_dataset(tmp_path)
    out = Path(shutil.copytree(REPO / "tests" / "data" / "issue14" / "v1-run", tmp_path / "v1-run"))
    config = json.loads((out / "config.json").read_text())
    config["dataset"] = dataset  # the set was generated in another temporary folder
    (out / "config.json").write_text(json.dumps(config))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = search(out=out, resume=True, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert result.epochs == 6 and len(result.events) == 0
    got = _folder(out, "rounds.json")
    got.pop("weights_sha256", None)  # bytes of floats: not comparable once the 7th digit differs
    want = {k: v for k, v in golden[key].items() if k != "weights_sha256"}
    _same(got, want, "v1-run", tol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_cuda_search_with_bf16_autocast_grows_and_resumes(tmp_path, data):
    """The smoke search on CUDA with bf16 autocast grows, fine-tunes and writes every file; an
    interrupted run resumes from its checkpoint (the epochs before it kept as they were) to the
    end. (CUDA kernels are not bit-reproducible, so no comparison with a second run.)"""
    dataset, data_dir = data
    kw = dict(data_dir=data_dir, recipe=SMOKE, overrides={**FAST, "run.amp": "bf16"}, seed=3, device="cuda")
    out = tmp_path / "cuda"
    with pytest.raises(SearchInterrupted):
        search(dataset, out=out, reporter=StopAt(4), **kw)
    before = history(out)[:3]  # epoch 4 ended but its checkpoint was not written
    result = search(dataset, out=out, resume=True, **kw)
    assert (result.epochs, result.rounds, result.events) == (7, 3, ())
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    rows = history(out)
    assert rows[:3] == before and [r["phase"] for r in rows] == ["grow"] * 6 + ["finetune"]
    assert result.arch == Architecture.from_json(out / "architecture.json") and result.macs == cost(result.arch).macs

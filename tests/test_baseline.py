"""Controls (METHOD.md §4): their architectures, their schedule, and a control trained end to
end on a tiny npz dataset through the one training loop."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import grownet.baseline as baseline
import grownet.loop as loop
from grownet.arch import Architecture, ResStage
from grownet.baseline import CONTROLS, control_architecture, run_control, scale_widths, uniform_architecture
from grownet.train import compile_unsupported, cosine_lr
from grownet.cost import cost
from grownet.errors import ArchitectureError, DivergenceError, RunError, UsageError
from grownet.report import controls_info, load_run
from grownet.models import build_model
from grownet.weights import load_model

from _runfolder import FINAL, HISTORY_COLUMNS, SEED, write_synthetic_run

N_TRAIN, N_VAL, N_TEST = 96, 32, 40


# ---- architectures ----------------------------------------------------------------------------------


def test_scale_widths_rounds_every_width_and_keeps_depth() -> None:
    vgg = Architecture("vgg", ((16, 24), (40,)), meta={"macs": 1})
    assert scale_widths(vgg, 1.5) == Architecture("vgg", ((24, 36), (60,)))
    assert scale_widths(vgg, 1.5).meta == {}
    assert scale_widths(vgg, 0.01).stages == ((1, 1), (1,))  # never below one filter
    res = Architecture("resnet", (ResStage(16, (16, 10)), ResStage(32, (20,))), stem=16)
    assert scale_widths(res, 0.5) == Architecture("resnet", (ResStage(8, (8, 5)), ResStage(16, (10,))), stem=8)
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(UsageError, match="multiplier: must be a positive number"):
            scale_widths(vgg, bad)


def test_uniform_architecture_matches_the_target_macs_as_closely_as_whole_filters_allow() -> None:
    target = cost(FINAL).macs
    uni = uniform_architecture(SEED, target)
    assert [len(s) for s in uni.stages] == [len(s) for s in SEED.stages]  # the seed's layout
    widths = set(uni.layer_widths().values())
    assert len(widths) == 1  # the seed is uniform (16 everywhere), so is the control
    # No other single width comes closer (MACs grow with the width, so checking the two
    # neighbours proves it for all widths).
    (w,) = widths
    error = [abs(cost(scale_widths(SEED, v / 16)).macs - target) for v in (w - 1, w, w + 1)]
    assert error[1] <= min(error[0], error[2])
    assert abs(cost(uni).macs - target) / target < 0.05


def test_uniform_architecture_scales_a_resnet_seed_down_too() -> None:
    seed = Architecture("resnet", (ResStage(16, (16,)), ResStage(32, (32,))), stem=16)
    target = cost(scale_widths(seed, 0.5)).macs
    assert uniform_architecture(seed, target) == scale_widths(seed, 0.5)
    with pytest.raises(UsageError, match="target_macs: must be a positive number"):
        uniform_architecture(seed, 0)


def test_control_architectures(tmp_path: Path) -> None:
    run = write_synthetic_run(tmp_path / "run")
    assert control_architecture(run, "scratch") == FINAL and control_architecture(run, "scratch").meta == {}
    assert control_architecture(run, "seed") == SEED
    assert control_architecture(run, "uniform") == uniform_architecture(SEED, cost(FINAL).macs)
    with pytest.raises(UsageError, match="--control: must be one of scratch, uniform, random, seed"):
        control_architecture(run, "bigger")
    (run / "architecture.json").unlink()
    with pytest.raises(RunError, match="architecture.json is missing"):
        control_architecture(run, "scratch")


def test_cosine_lr_is_the_fine_tune_schedule() -> None:
    assert cosine_lr(0, 100, lr=0.1) == pytest.approx(0.1)
    assert cosine_lr(50, 100, lr=0.1) == pytest.approx(0.05)
    assert cosine_lr(25, 100, lr=0.1, min_lr=0.02) == pytest.approx(0.02 + 0.08 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(100, 100, lr=0.1, min_lr=0.02) == pytest.approx(0.02)
    assert cosine_lr(1, 100, lr=0.1, warmup=4) == pytest.approx(cosine_lr(1, 100, lr=0.1) * 2 / 4)
    assert cosine_lr(4, 100, lr=0.1, warmup=4) == pytest.approx(cosine_lr(4, 100, lr=0.1))


# ---- a control trained end to end ----------------------------------------------------------------------------


def _tiny_npz(path: Path) -> Path:
    """10 classes of 32x32 RGB images whose mean colour depends on the class (learnable)."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, size=n)
        x = rng.integers(0, 96, size=(n, 32, 32, 3)) + (y[:, None, None, None] * 16)
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = split(N_TRAIN + N_VAL)
    x_test, y_test = split(N_TEST)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    data = _tiny_npz(root / "tiny.npz")
    recipe = {"data": {"val_size": N_VAL, "batch_size": 32, "eval_batch_size": 64, "augment": False},
              "finetune": {"optimizer": "sgd", "lr": 0.05, "min_lr": 0.001},
              "run": {"channels_last": "off"}}  # 5x faster than channels-last for these tiny CPU batches
    return write_synthetic_run(root / "run", dataset=f"npz:{data}", data_dir=None, recipe=recipe)


@pytest.fixture(scope="module")
def seed_control(tiny_run: Path) -> baseline.ControlResult:
    return run_control(tiny_run, "seed", epochs=2, device="cpu")


def _history(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_control_folder_holds_summary_history_and_architecture(tiny_run: Path, seed_control: baseline.ControlResult) -> None:
    out = tiny_run / "controls" / "seed"
    assert seed_control.path == out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["control"] == "seed" and summary["epochs"] == 2
    for key in ("val_acc", "test_acc", "macs", "params", "train_flops", "wall_time", "epochs"):
        assert summary[key] == getattr(seed_control, key)
    c = cost(SEED)
    assert (summary["macs"], summary["params"]) == (c.macs, c.params)
    # Training FLOPs: forward + backward per sample x samples trained (the validation split held out).
    assert summary["train_flops"] == c.train_flops_per_sample * N_TRAIN * 2
    rows = _history(out / "history.csv")
    assert list(rows[0]) == HISTORY_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2] and {r["phase"] for r in rows} == {"control"}
    assert [int(r["train_flops"]) for r in rows] == [c.train_flops_per_sample * N_TRAIN * e for e in (1, 2)]
    assert Architecture.from_json(out / "architecture.json") == SEED
    assert summary["events"] == [] and "control seed: val acc" in (out / "grownet.log").read_text()


def test_control_keeps_the_best_validation_epoch_and_tests_it_once(tiny_run: Path, seed_control: baseline.ControlResult) -> None:
    out = tiny_run / "controls" / "seed"
    rows = _history(out / "history.csv")
    vals = [float(r["val_acc"]) for r in rows]
    assert seed_control.best_epoch == 1 + vals.index(max(vals))
    assert seed_control.val_acc == pytest.approx(max(vals))
    # The saved weights are the selected epoch's: they score the summary's accuracies.
    from grownet.data import load_dataset

    model = load_model(out / "architecture.json", out / "weights.pt").eval()
    ds = load_dataset(load_run(tiny_run).config["dataset"])
    x = (ds.x_test.float() / 255 - torch.tensor(ds.mean).view(1, 3, 1, 1)) / torch.tensor(ds.std).view(1, 3, 1, 1)
    with torch.no_grad():
        acc = (model(x).argmax(1) == ds.y_test).float().mean().item()
    assert acc == pytest.approx(seed_control.test_acc, abs=1e-6)


def test_control_uses_the_one_training_loop_with_the_fine_tune_schedule(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[float]] = []
    real = loop.train_epoch

    def spy(model, loader, optimizer, *, lr_at, **kw):  # type: ignore[no-untyped-def]
        calls.append([lr_at(i) for i in range(len(loader))])
        assert isinstance(optimizer, torch.optim.SGD)  # finetune.optimizer = "sgd" in this run's recipe
        return real(model, loader, optimizer, lr_at=lr_at, **kw)

    monkeypatch.setattr(loop, "train_epoch", spy)
    run_control(tiny_run, "scratch", epochs=2, device="cpu")
    steps = N_TRAIN // 32
    assert len(calls) == 2 and all(len(c) == steps for c in calls)
    flat = [lr for c in calls for lr in c]
    assert flat == pytest.approx([cosine_lr(t, 2 * steps, lr=0.05, min_lr=0.001) for t in range(2 * steps)])


def test_control_is_reproducible_and_refuses_to_overwrite(tiny_run: Path, seed_control: baseline.ControlResult) -> None:
    out = tiny_run / "controls" / "seed"
    before = (out / "history.csv").read_text()
    with pytest.raises(RunError, match="already holds a finished control; pass --force"):
        run_control(tiny_run, "seed", epochs=2, device="cpu")
    again = run_control(tiny_run, "seed", epochs=2, device="cpu", force=True)
    strip = lambda text: [r[:-1] for r in csv.reader(text.splitlines())]  # noqa: E731 - wall_time differs
    assert strip((out / "history.csv").read_text()) == strip(before)
    assert (again.val_acc, again.test_acc, again.best_epoch) == (seed_control.val_acc, seed_control.test_acc, seed_control.best_epoch)


def test_report_lists_the_control_beside_the_grown_net(tiny_run: Path, seed_control: baseline.ControlResult) -> None:
    points = {p.name: p for p in controls_info(load_run(tiny_run))}
    assert points["seed"].test_acc == seed_control.test_acc and points["seed"].macs == cost(SEED).macs
    assert points["grown"].macs == cost(FINAL).macs


def test_run_control_rejects_bad_arguments(tiny_run: Path) -> None:
    with pytest.raises(UsageError, match=r"--epochs: must be an integer in \[1, 9223372036854775807\], got 0"):
        run_control(tiny_run, "seed", epochs=0, device="cpu")
    with pytest.raises(UsageError, match="--control: must be one of"):
        run_control(tiny_run, "wider", device="cpu")
    assert CONTROLS == ("scratch", "uniform", "random", "seed", "fixed_uniform")
    with pytest.raises(UsageError, match=r"^--epochs: the fixed_uniform control trains the run's own rounds and "
                                         r"fine-tune; leave --epochs out$"):
        run_control(tiny_run, "fixed_uniform", epochs=3, device="cpu")
    assert not (tiny_run / "controls" / "fixed_uniform").exists()


def test_cli_baseline_trains_the_control_and_rewrites_the_report(tiny_run: Path, seed_control: baseline.ControlResult) -> None:
    from grownet.cli import main

    argv = ["baseline", str(tiny_run), "--control", "seed", "--epochs", "1", "--device", "cpu", "--quiet"]
    assert main(argv) == 2  # the control exists: --force is needed
    assert main(argv + ["--force"]) == 0
    assert json.loads((tiny_run / "controls" / "seed" / "summary.json").read_text())["epochs"] == 1
    assert "seed net alone" in (tiny_run / "report.html").read_text(encoding="utf-8")
    assert main(["baseline", str(tiny_run), "--control", "wider"]) == 2


# ---- a control of the user's own architecture ------------------------------------------------------------


def test_a_control_of_your_own_architecture_trains_exactly_as_the_builtin_ones(
    tiny_run: Path, seed_control: baseline.ControlResult, tmp_path: Path
) -> None:
    # The seed architecture as a control of one's own: the same net, seed, data and schedule as
    # the built-in seed control, so the same numbers (one thread: the suite's setting).
    path = tmp_path / "mine.json"
    SEED.with_meta(note="hand-picked").save(path)
    mine = run_control(tiny_run, "mine", arch=path, epochs=2, device="cpu")
    assert mine.path == tiny_run / "controls" / "mine" and mine.arch == SEED
    assert (mine.val_acc, mine.test_acc, mine.best_epoch) == (seed_control.val_acc, seed_control.test_acc,
                                                              seed_control.best_epoch)
    summary = json.loads((mine.path / "summary.json").read_text())
    assert summary["control"] == "mine" and summary["epochs"] == 2
    assert Architecture.from_json(mine.path / "architecture.json") == SEED

    # An Architecture object works too; reports list own controls after the built-in ones, by name.
    wide = SEED.with_widths({layer: 2 * w for layer, w in SEED.layer_widths().items()})
    run_control(tiny_run, "a-wide.v2", arch=wide, epochs=1, device="cpu")
    run = load_run(tiny_run)
    assert list(run.controls) == [*[n for n in CONTROLS if n in run.controls], "a-wide.v2", "mine"]
    points = controls_info(run)
    assert [p.name for p in points][-2:] == ["a-wide.v2", "mine"]
    assert points[-2].label == "a-wide.v2 (your architecture)" and points[-2].macs == cost(wide).macs
    with pytest.raises(RunError, match="already holds a finished control; pass --force"):
        run_control(tiny_run, "mine", arch=path, epochs=2, device="cpu")


def test_other_jobs_folders_under_controls_are_not_read_as_controls(tiny_run: Path, tmp_path: Path) -> None:
    # The study keeps a whole search under controls/grown_uniform; a folder whose summary names
    # another control (copied by hand) is not that control either.
    controls = tiny_run / "controls"
    for name, summary in (("grown_uniform", {"val_acc": 0.5, "test_acc": 0.5}),
                          ("copy", {"control": "seed", "val_acc": 0.5, "test_acc": 0.5})):
        (controls / name).mkdir(parents=True, exist_ok=True)
        (controls / name / "summary.json").write_text(json.dumps(summary))
    try:
        assert not {"grown_uniform", "copy"} & set(load_run(tiny_run).controls)
    finally:
        for name in ("grown_uniform", "copy"):
            (controls / name / "summary.json").unlink()
            (controls / name).rmdir()


@pytest.mark.parametrize("name, message", [
    ("seed", "'seed' is taken"),
    ("grown_uniform", "'grown_uniform' is taken"),
    ("fixed_uniform", "'fixed_uniform' is taken"),
    ("grown", "'grown' is taken"),
    ("../up", "'../up' is not a control name"),
    ("", "'' is not a control name"),
    ("-x", "'-x' is not a control name"),
    ("a" * 65, f"'{'a' * 65}' is not a control name"),
    ("wide net", "'wide net' is not a control name"),
])
def test_a_control_of_your_own_needs_a_name_of_its_own(tiny_run: Path, name: str, message: str) -> None:
    before = sorted(p.name for p in (tiny_run / "controls").iterdir())
    with pytest.raises(UsageError, match=rf"--control: {re.escape(message)}"):
        run_control(tiny_run, name, arch=SEED, epochs=1, device="cpu")
    assert sorted(p.name for p in (tiny_run / "controls").iterdir()) == before


def test_a_control_of_your_own_refuses_an_architecture_that_does_not_fit(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match="nope.json.*file not found"):
        run_control(tiny_run, "mine2", arch=tmp_path / "nope.json", epochs=1, device="cpu")
    hundred = Architecture("vgg", SEED.stages, num_classes=100)
    with pytest.raises(RunError, match="the architecture has num_classes 100 but the dataset gives 10"):
        run_control(tiny_run, "mine2", arch=hundred, epochs=1, device="cpu")
    assert not (tiny_run / "controls" / "mine2").exists()


def test_cli_baseline_trains_a_control_of_your_own(tiny_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from grownet.cli import main

    path = tmp_path / "late.json"
    SEED.with_widths({layer: 8 * (i + 1) for i, layer in enumerate(SEED.layer_widths())}).save(path)
    argv = ["baseline", str(tiny_run), "--control", "late", "--arch", str(path), "--epochs", "1", "--device", "cpu"]
    assert main(argv + ["--quiet"]) == 0
    assert "late (your architecture)" in (tiny_run / "report.html").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["baseline", str(tiny_run), "--control", "uniform", "--arch", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["grownet: error: --control: 'uniform' is taken (scratch, uniform, random, seed, fixed_uniform, grown, "
                   "grown_uniform, fresh are); choose another name for a control of your own architecture"]


# ---- divergence: the one policy of grownet.loop ----------------------------------------------------------


def _diverging_run(root: Path, **run: object) -> Path:
    """A run whose recipe makes the control's DessiLBI diverge within its first epoch (a coupling
    1/nu = 1e6 times the default's: W - Γ is amplified at every step) unless the rate drops."""
    recipe = {"data": {"val_size": N_VAL, "batch_size": 8, "eval_batch_size": 64, "augment": False},
              "optim": {"mu": 1e-6}, "finetune": {"optimizer": "dessilbi", "lr": 0.05},
              "run": {"channels_last": "off", **run}}
    return write_synthetic_run(root / "run", dataset=f"npz:{_tiny_npz(root / 'tiny.npz')}", data_dir=None, recipe=recipe)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_a_diverging_control_retries_at_the_lowered_rate_and_records_the_event(tmp_path: Path, device: str) -> None:
    run = _diverging_run(tmp_path, retry_lr_factor=1e-6)
    result = run_control(run, "seed", epochs=2, device=device)
    (event,) = result.events
    assert (event["epoch"], event["phase"], event["event"]) == (1, "control", "divergence")
    assert "non-finite training loss" in event["detail"] and "retrying with lr x 1e-06" in event["detail"]
    out = run / "controls" / "seed"
    assert json.loads((out / "summary.json").read_text())["events"] == [event]
    steps = N_TRAIN // 8
    lrs = [float(r["lr"]) for r in _history(out / "history.csv")]
    assert lrs == pytest.approx([cosine_lr(steps * e - 1, 2 * steps, lr=0.05) * 1e-6 for e in (1, 2)])
    assert "retrying with lr x 1e-06" in (out / "grownet.log").read_text()


def test_a_control_that_keeps_diverging_stops_with_a_divergence_error(tmp_path: Path) -> None:
    run = _diverging_run(tmp_path, max_retries=0)
    with pytest.raises(DivergenceError, match=r"the loss was non-finite 1 times \(run\.max_retries 0\); it stopped at its "
                                              r"last good state \(epoch 0\); lower finetune\.lr and start again"):
        run_control(run, "seed", epochs=2, device="cpu")
    out = run / "controls" / "seed"
    assert not (out / "summary.json").exists()
    assert "gave up after 0 retries" in (out / "grownet.log").read_text()


# ---- run.compile: a compiled control's files are a plain model's -----------------------------------------


@pytest.mark.skipif(compile_unsupported(torch.device("cpu")) is not None,
                    reason=f"torch.compile cannot run on this CPU: {compile_unsupported(torch.device('cpu'))}")
def test_a_compiled_control_writes_weights_that_load_into_a_plain_model(tmp_path: Path) -> None:
    """run.compile = on: the control trains through nn.Module.compile (in place), so its best
    state, its weights file and its architecture are those of the eager module."""
    from torch._dynamo.utils import counters

    recipe = {"data": {"val_size": N_VAL, "batch_size": 32, "eval_batch_size": 64, "augment": False},
              "finetune": {"optimizer": "sgd", "lr": 0.05}, "run": {"channels_last": "off", "compile": "on"}}
    run = write_synthetic_run(tmp_path / "run", dataset=f"npz:{_tiny_npz(tmp_path / 'tiny.npz')}", data_dir=None,
                              recipe=recipe)
    frames = counters["frames"]["ok"]
    result = run_control(run, "seed", epochs=2, device="cpu")
    assert counters["frames"]["ok"] > frames  # dynamo compiled the net's forward
    out = run / "controls" / "seed"
    assert "control seed: compiled (run.compile = on, inductor on cpu)" in (out / "grownet.log").read_text()
    state = torch.load(out / "weights.pt", weights_only=True)
    plain = build_model(result.arch)
    assert list(state) == list(plain.state_dict())  # no "_orig_mod." prefix
    model = load_model(out / "architecture.json", out / "weights.pt")  # strict: every key matches
    assert not any(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values())
                   if a.is_floating_point() and a.dim() == 4)  # trained weights, not a fresh init


def test_fixed_uniform_trains_the_uniform_widths_on_the_runs_own_schedule_and_the_report_lists_it(tmp_path: Path) -> None:
    import sys

    from grownet.cli import main
    from grownet.report import write_report
    from grownet.search import search

    sys.path.insert(0, str(Path(__file__).parent))
    from _smoke import FAST, SMOKE, smoke_dataset

    dataset, data_dir = smoke_dataset(tmp_path)
    over = {**FAST, "data.limit_train": 500, "data.val_size": 200, "data.limit_test": 200, "grow.local_epochs": 1,
            "budget.max_rounds": 2, "grow.tau": 0.5, "budget.time_budget": 1e6}
    run = search(dataset, data_dir=data_dir, recipe=SMOKE, overrides=over, out=tmp_path / "run", seed=1, device="cpu")
    result = run_control(run.run_dir, "fixed_uniform", device="cpu")
    folder = run.run_dir / "controls" / "fixed_uniform"
    assert result.path == folder and (folder / "summary.json").is_file()
    uniform = control_architecture(load_run(run.run_dir), "uniform")
    assert result.arch.layer_widths() == uniform.layer_widths() and result.macs == cost(uniform).macs
    # the run's schedule: its rounds (nothing grows), its epochs, its recipe and seed otherwise
    rounds = json.loads((folder / "rounds.json").read_text())
    assert [r["grew"] for r in rounds] == [False] * run.rounds and result.epochs == run.epochs
    config, own = (json.loads((d / "config.json").read_text()) for d in (folder, run.run_dir))
    assert config["seed"] == own["seed"] and config["recipe"]["grow"]["signal"] == "off"
    assert config["recipe"]["budget"]["time_budget"] == 0 < own["recipe"]["budget"]["time_budget"]  # rounds, not a clock
    assert config["recipe"]["optim"] == own["recipe"]["optim"] and config["recipe"]["finetune"] == own["recipe"]["finetune"]
    # read back as a control of the run, labelled in its report
    assert load_run(run.run_dir).controls["fixed_uniform"].summary["test_acc"] == result.test_acc
    assert "uniform width, this run&#x27;s schedule" in write_report(run.run_dir).read_text(encoding="utf-8")
    argv = ["baseline", str(run.run_dir), "--control", "fixed_uniform", "--device", "cpu", "--quiet", "--no-report"]
    assert main(argv) == 2  # finished: --force is needed
    mtime = (folder / "weights.pt").stat().st_mtime_ns
    assert main(argv + ["--force"]) == 0
    again = json.loads((folder / "summary.json").read_text())
    assert (folder / "weights.pt").stat().st_mtime_ns != mtime and again["test_acc"] == result.test_acc

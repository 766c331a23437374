"""The command line (grownet.cli): generated recipe flags, one-line errors with exit status 2,
the run-folder guard, a quiet and a rich search (plan, progress, summary), and Ctrl-C."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _smoke import FAST, REPO, SMOKE, smoke_dataset
from grownet.cli import COMMANDS, Command, build_parser, main, recipe_from_args
from grownet.recipe import recipe_keys


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke_dataset(tmp_path_factory.mktemp("data"))


def search_argv(out: Path, data, *extra: str) -> list[str]:
    dataset, data_dir = data
    argv = ["search", "--dataset", dataset, "--recipe", str(SMOKE), "--out", str(out), "--seed", "3", "--device", "cpu"]
    if data_dir:
        argv += ["--data-dir", data_dir]
    for key, value in FAST.items():
        argv += [f"--{key}", str(value)]
    return argv + list(extra)


def search_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return parser, sub.choices["search"]


def test_every_recipe_key_has_a_flag_and_the_budget_keys_their_short_ones():
    _, search = search_parser()
    flags = {s for a in search._actions for s in a.option_strings}
    for spec in recipe_keys():
        assert f"--{spec.path}" in flags, spec.path
    assert {"--max-macs", "--max-params", "--time-budget", "--max-rounds", "--seed-arch"} <= flags
    assert {"--dataset", "--data-dir", "--recipe", "--out", "--seed", "--device", "--resume", "--force", "--quiet", "--debug"} <= flags


def test_flags_override_the_recipe_file():
    parser, _ = search_parser()
    args = parser.parse_args(["search", "--recipe", str(SMOKE), "--grow.tau", "0.9,0.9,0.8,0.8,0.7", "--max-macs", "40M",
                              "--seed-arch", "resnet", "--finetune.nesterov", "true"])
    r = recipe_from_args(args)
    assert r.grow.tau == (0.9, 0.9, 0.8, 0.8, 0.7)
    assert r.budget.max_macs == 40_000_000 and r.model.seed_arch == "resnet" and r.finetune.nesterov is True
    assert (r.data.limit_train, r.optim.lam) == (1500, 0.15)  # from smoke.toml


def test_a_config_error_is_one_line_on_stderr_with_exit_status_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--out", str(out), "--grow.tau", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err == "grownet: error: grow.tau: must be in (0, 1], got 1.5\n"
    assert not out.exists()  # nothing written for a rejected configuration
    assert main(["search", "--out", str(out), "--recipe", str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err == f"grownet: error: {tmp_path / 'nope.toml'}: recipe file not found; give a TOML file or a bundled recipe's name (cifar10-cpu, cifar10-resnet, cifar10-vgg, growth-study-cpu, smoke, ticket-cpu, ticket-study-cpu)\n"


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["search", "--out", str(tmp_path / "r"), "--optim.lr", "fast", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("grownet: error: optim.lr: must be a number, got 'fast'")


def test_usage_errors_exit_2_and_help_exits_0(capsys):
    assert main(["search", "--no-such-flag"]) == 2
    assert main([]) == 2
    assert main(["search", "--resume", "--force", "--out", "x"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert main(["search", "--help"]) == 0
    assert "--grow.tau" in capsys.readouterr().out


def test_an_existing_run_folder_is_refused_without_resume_or_force(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main(["search", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"grownet: error: {out} already exists; pass --resume to continue that run or --force to overwrite it\n"
    assert (out / "config.json").read_text() == "{}"


def test_a_data_error_leaves_no_folder_that_would_need_force(tmp_path, capsys):
    out = tmp_path / "runs" / "run"
    assert main(["search", "--out", str(out), "--dataset", f"npz:{tmp_path / 'missing.npz'}", "--quiet"]) == 2
    assert capsys.readouterr().err.count("grownet: error: ") == 1
    assert list(tmp_path.iterdir()) == []  # the folders it made are gone too
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine\n")
    assert main(["search", "--out", str(out), "--dataset", f"npz:{tmp_path / 'missing.npz'}", "--quiet"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # a folder it did not make stays


def test_commands_are_a_table_of_small_classes():
    assert all(issubclass(c, Command) and c.name and c.help for c in COMMANDS)
    assert [c.name for c in COMMANDS][0] == "search"


def test_search_prints_a_plan_progress_tables_and_a_summary(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(search_argv(out, data)) == 0
    err = capsys.readouterr().err
    plan, rest = err.split("grownet search: growing in ", 1)
    plan = plan[plan.index("grownet search: plan"):]  # after any data warning (the shared CIFAR-10 copy's md5s)
    assert plan.startswith("grownet search: plan\n  device    cpu, ")
    assert f"\n  recipe    {SMOKE} (given with --recipe)\n" in plan
    assert "700 train / 300 val / 300 test images" in plan and "at most 3 rounds" in plan and "\n  estimate  about " in plan
    steps = "(run.compile = auto: 10 steps, fewer than the 1000 that pay for a compile)"  # 700 images, batch 64, last dropped
    assert f"\n  compile   fine-tune not compiled {steps}\n" in plan
    assert "growth check 1" in rest and "decision" in rest and "widen" in rest
    assert "round 2 of at most 3" in rest and " ETA " in rest  # the plain lines (capsys is no terminal)
    assert "grownet search: done" in rest and "test acc" in rest
    assert f"report:     {out / 'report.html'}" in rest
    assert rest.rstrip().endswith(f"import grownet\n    model = grownet.load_model({json.dumps(str(out))})")
    log = (out / "grownet.log").read_text(encoding="utf-8")
    assert "plan: estimate  about " in log  # the log keeps the plan
    assert f"fine-tune: not compiled {steps}" in log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 7 and summary["rounds"] == 3
    config = json.loads((out / "config.json").read_text())
    assert config["command"].startswith("grownet search --dataset ")


def test_quiet_shows_no_plan_and_no_progress(tmp_path, data, capsys):
    assert main(search_argv(tmp_path / "run", data, "--quiet", "--budget.max_rounds", "1", "--grow.local_epochs", "1")) == 0
    err = capsys.readouterr().err
    assert "grownet search: plan" not in err and "ETA" not in err and "growth check" not in err and "grownet search: done" not in err


@pytest.mark.parametrize("quiet", [True, False])
def test_ctrl_c_saves_says_how_to_resume_and_exits_130(tmp_path, data, quiet):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    extra = ["--quiet"] if quiet else []
    # SIGINT as a terminal delivers it: a test run started in the background of a shell without
    # job control inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen([sys.executable, "-m", "grownet", *search_argv(out, data, *extra)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not (out / "history.csv").exists():
            time.sleep(0.05)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    last = err.strip().splitlines()[-1]
    resume = shlex.join(["grownet", *search_argv(out, data, *extra), "--resume"])  # the exact command to continue
    assert last == f"grownet: interrupted; the last checkpoint is in {out / 'checkpoints'}; continue with: {resume}"
    assert "Traceback" not in err
    assert (out / "checkpoints" / "latest.json").is_file()

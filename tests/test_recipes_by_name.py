"""Bundled recipes: addressed by name, shipped inside the package (so a built wheel resolves
them), and the one ``grownet search`` picks for its device when no ``--recipe`` is given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from _smoke import FAST, REPO, smoke_dataset
from grownet.cli import main
from grownet.errors import ConfigError, RunError
from grownet.recipe import DEFAULT_RECIPES, RECIPE_DIR, Recipe, default_recipe, load_recipe, recipe_names, resolve_recipe
from grownet.train import resolve_device

BUNDLED = ["cifar10-cpu", "cifar10-resnet", "cifar10-vgg", "growth-study-cpu", "smoke", "ticket-cpu", "ticket-study-cpu"]


def test_the_bundled_recipes_live_in_the_package_and_nowhere_else():
    assert RECIPE_DIR == REPO / "grownet" / "recipes"
    assert recipe_names() == BUNDLED
    assert not list((REPO / "recipes").glob("*.toml"))  # one copy: the top-level folder only points here
    assert "grownet/recipes/" in (REPO / "recipes" / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", BUNDLED)
def test_a_name_loads_the_same_recipe_as_its_file(name):
    assert load_recipe(name) == load_recipe(RECIPE_DIR / f"{name}.toml")
    assert Recipe.from_toml(name) == load_recipe(name)


def test_resolve_recipe_takes_a_name_a_path_or_a_path_string():
    by_name = resolve_recipe("smoke", {"grow.tau": 0.9})
    assert by_name.grow.tau == 0.9 and by_name.data.limit_train == 1500  # smoke.toml's, then the override
    assert resolve_recipe(str(RECIPE_DIR / "smoke.toml"), {"grow.tau": 0.9}) == by_name
    assert resolve_recipe(RECIPE_DIR / "smoke.toml", {"grow.tau": 0.9}) == by_name


def test_tune_reads_a_bundled_recipe_by_name():
    from grownet.tune import load_space, tune_table

    for name in BUNDLED:
        assert tune_table(name) == tune_table(RECIPE_DIR / f"{name}.toml")
        assert load_space(name) == load_space(RECIPE_DIR / f"{name}.toml")


def test_an_unknown_name_lists_the_bundled_ones():
    with pytest.raises(ConfigError, match=r"^cifar11-cpu: no bundled recipe of that name \(bundled: cifar10-cpu, "
                                          r"cifar10-resnet, cifar10-vgg, growth-study-cpu, smoke, ticket-cpu, ticket-study-cpu\); give one of them or the "
                                          r"path of a TOML file$"):
        load_recipe("cifar11-cpu")


def test_a_path_is_never_taken_for_a_name(tmp_path, monkeypatch):
    """A ``/`` or a ``.toml`` suffix makes a file path, even where a bundled name matches."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke.toml").write_text("[grow]\ntau = 0.5\n", encoding="utf-8")
    assert load_recipe("smoke.toml").grow.tau == 0.5
    assert load_recipe("./smoke.toml").grow.tau == 0.5
    assert load_recipe("smoke").grow.tau == 0.8  # the bundled one
    with pytest.raises(ConfigError, match=r"^sub/smoke: recipe file not found; give a TOML file or a bundled "
                                          r"recipe's name \(cifar10-cpu, "):
        load_recipe("sub/smoke")


def test_the_default_recipe_follows_the_device(monkeypatch):
    assert default_recipe(torch.device("cpu")) == DEFAULT_RECIPES["cpu"]
    assert default_recipe(torch.device("cpu"))[0] == "cifar10-cpu"
    assert default_recipe(torch.device("cuda", 1))[0] == "cifar10-vgg"
    assert default_recipe("cuda:0")[0] == "cifar10-vgg"
    assert default_recipe("mps")[0] == "cifar10-cpu"  # anything but CUDA gets the CPU-sized recipe
    # the CLI asks resolve_device("auto"), whose answer follows torch's CUDA check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_recipe(resolve_device("auto"))[0] == "cifar10-cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_recipe(resolve_device("auto"))[0] == "cifar10-vgg"


def _fast_flags(dataset: str, data_dir: str | None) -> list[str]:
    argv = ["--dataset", dataset, *(["--data-dir", data_dir] if data_dir else [])]
    for key, value in {**FAST, "budget.max_rounds": 1, "grow.local_epochs": 1, "finetune.epochs": 0}.items():
        argv += [f"--{key}", str(value)]
    return argv


def test_search_without_recipe_runs_the_cpu_recipe_and_says_so_first(tmp_path, capsys):
    dataset, data_dir = smoke_dataset(tmp_path)
    out = tmp_path / "run"
    assert main(["search", "--quiet", "--device", "cpu", "--out", str(out), *_fast_flags(dataset, data_dir)]) == 0
    err = capsys.readouterr().err
    said = "recipe cifar10-cpu (no --recipe given; the run trains on the CPU: about 30 min on 2 cores)"
    assert said in err and "grownet: error" not in err
    assert said in (out / "grownet.log").read_text(encoding="utf-8")
    stored = json.loads((out / "config.json").read_text(encoding="utf-8"))["recipe"]
    overrides = {**FAST, "budget.max_rounds": 1, "grow.local_epochs": 1, "finetune.epochs": 0}
    assert stored == load_recipe("cifar10-cpu").with_overrides(overrides).to_dict()


def test_search_on_cuda_without_recipe_asks_for_the_reference_recipe(tmp_path, capsys, monkeypatch):
    """This machine has no GPU: CUDA is faked at torch's check, and grownet.search.search is
    replaced by a recorder that starts the reporter the CLI hands it."""
    calls = []

    def recorder(dataset, **kwargs):
        calls.append(kwargs)
        kwargs["reporter"].start(run_dir=Path("x"), arch=None, recipe=None, resumed=False)
        raise RunError("stopped here")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(sys.modules["grownet.search"], "search", recorder)
    assert main(["search", "--quiet", "--out", str(tmp_path / "run")]) == 2
    assert calls[0]["recipe"] == "cifar10-vgg"
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("recipe cifar10-vgg (no --recipe given; the run trains on a GPU: the reference setup of "
                           "METHOD.md §2)")
    assert err[1] == "grownet: error: stopped here"


def test_a_given_recipe_or_a_resume_is_not_replaced(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(sys.modules["grownet.search"], "search", lambda dataset, **kwargs: calls.append(kwargs) or _Done())
    assert main(["search", "--quiet", "--recipe", "smoke", "--out", str(tmp_path / "a")]) == 0
    assert main(["search", "--quiet", "--resume", "--out", str(tmp_path / "b")]) == 0
    assert [c["recipe"] for c in calls] == ["smoke", None]  # None: search resumes with the run's own
    assert "no --recipe given" not in capsys.readouterr().err


def test_a_seed_given_without_recipe_drops_the_default_recipe_s_seed_shape(tmp_path, monkeypatch):
    """cifar10-cpu widens its VGG preset per stage; a seed of the user's (a JSON file or
    another preset) is taken as it is, not refused for that shape."""
    from grownet.job import seed_arch_file

    calls = []
    monkeypatch.setattr(sys.modules["grownet.search"], "search", lambda dataset, **kwargs: calls.append(kwargs) or _Done())
    seed = str(Path(__file__).resolve().parent / "data" / "vgg_seed.json")
    assert main(["search", "--quiet", "--device", "cpu", "--seed-arch", seed, "--out", str(tmp_path / "a")]) == 0
    assert main(["search", "--quiet", "--device", "cpu", "--seed-arch", "resnet", "--model.seed_depths", "2",
                 "--out", str(tmp_path / "b")]) == 0
    first, second = (resolve_recipe(c["recipe"], c["overrides"]) for c in calls)
    assert (first.model.seed_arch, first.model.seed_width, first.model.seed_depths) == (seed, 0, 0)
    assert seed_arch_file(first).stages == ((16,), (16,), (16, 16), (16, 16), (16, 16))
    assert (second.model.seed_arch, second.model.seed_width, second.model.seed_depths) == ("resnet", 0, 2)
    assert first.budget == load_recipe("cifar10-cpu").budget  # the rest of the recipe stays


class _Done:
    run_dir = "done"


def test_a_refused_start_without_recipe_is_still_one_line(tmp_path, capsys):
    assert main(["search", "--device", "cpu", "--out", str(tmp_path / "run"), "--dataset", f"npz:{tmp_path / 'no.npz'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("grownet: error: ")


def test_a_built_wheel_ships_the_recipes_and_resolves_them_by_name(tmp_path):
    """Build the wheel from a copy of the sources, install it without dependencies into a
    throwaway virtual environment that sees this environment's packages, and load a recipe by
    name there, from a folder outside the repository."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (no build isolation: no network)")
    src = tmp_path / "src"
    shutil.copytree(REPO / "grownet", src / "grownet", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", str(src), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("grownet_lbi-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        for name in BUNDLED:
            assert zf.read(f"grownet/recipes/{name}.toml") == (RECIPE_DIR / f"{name}.toml").read_bytes()

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    code = ("import json, grownet; from grownet.recipe import load_recipe; "
            "print(json.dumps([grownet.__file__, load_recipe('cifar10-cpu').to_dict()]))")
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run([str(python), "-c", code], cwd=tmp_path, env=environ, check=True, capture_output=True, text=True)
    where, recipe = json.loads(found.stdout)
    assert Path(where).is_relative_to(env)  # the installed wheel, not this checkout
    assert recipe == load_recipe("cifar10-cpu").to_dict()

"""Recipes: defaults are the reference setup, every shipped TOML loads, errors name the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from grownet.errors import ConfigError
from grownet.recipe import Recipe, load_recipe, parse_value, recipe_keys

RECIPES = Path(__file__).resolve().parents[1] / "grownet" / "recipes"


def test_defaults_are_the_reference_setup_of_method_section_2():
    r = Recipe()
    assert (r.optim.lr, r.optim.kappa, r.optim.mu, r.optim.momentum, r.optim.weight_decay) == (0.05, 1.0, 100.0, 0.9, 0.0)
    assert (r.data.batch_size, r.grow.local_epochs, r.grow.tau, r.grow.ratio, r.grow.min_add) == (128, 10, 0.8, 1.1, 8)
    assert r.finetune.epochs == 40
    assert (r.budget.max_macs, r.budget.max_params, r.budget.time_budget, r.budget.max_rounds) == (0, 0, 0.0, 0)


@pytest.mark.parametrize("name", ["cifar10-vgg", "cifar10-resnet", "cifar10-cpu", "smoke"])
def test_shipped_recipes_load(name):
    assert isinstance(load_recipe(RECIPES / f"{name}.toml"), Recipe)


def test_reference_recipes_match_method_section_2():
    vgg, res = load_recipe(RECIPES / "cifar10-vgg.toml"), load_recipe(RECIPES / "cifar10-resnet.toml")
    for r in (vgg, res):
        assert (r.optim.lr, r.optim.kappa, r.optim.mu, r.optim.momentum, r.data.batch_size) == (0.05, 1.0, 100.0, 0.9, 128)
        assert (r.grow.local_epochs, r.grow.tau, r.grow.ratio, r.finetune.epochs) == (10, 0.8, 1.1, 40)
    assert (vgg.grow.min_add, res.grow.min_add) == (8, 4)
    assert (vgg.model.seed_arch, res.model.seed_arch) == ("vgg", "resnet")


@pytest.mark.parametrize("name", ["cifar10-vgg", "cifar10-resnet", "cifar10-cpu", "smoke"])
def test_every_key_of_the_search_recipes_has_a_comment(name):
    for path in [RECIPES / f"{name}.toml"]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*[a-z_]+\s*=", line):
                assert "#" in line, f"{path.name}:{n}: key without a comment: {line.strip()}"


def test_cpu_recipe_budget_is_within_the_issue_target():
    r = load_recipe(RECIPES / "cifar10-cpu.toml")
    assert 0 < r.budget.max_macs <= 40_000_000
    assert 0 < r.budget.time_budget <= 35 * 60


def test_every_schema_key_has_help():
    keys = list(recipe_keys())
    assert len({k.path for k in keys}) == len(keys)
    assert all(k.help for k in keys)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"grow": {"tau": 1.5}}, r"^grow\.tau: must be in \(0, 1\], got 1\.5$"),
        ({"grow": {"tau": 0}}, r"^grow\.tau: must be in \(0, 1\], got 0$"),
        ({"grow": {"tau": [0.8, 2.0]}}, r"^grow\.tau\[1\]: must be in \(0, 1\], got 2$"),
        ({"grow": {"tua": 0.8}}, r"^grow\.tua: unknown key \(keys of \[grow\]: local_epochs, tau, "),
        ({"trainer": {}}, r"^trainer: unknown section"),
        ({"optim": {"lr": "fast"}}, r"^optim\.lr: must be a number, got 'fast'$"),
        ({"optim": {"lr": 0.0}}, r"^optim\.lr: must be in \(0, 10\], got 0$"),
        ({"grow": {"local_epochs": 2.5}}, r"^grow\.local_epochs: must be an integer, got 2\.5$"),
        ({"grow": {"deepen": 1}}, r"^grow\.deepen: must be true or false, got 1$"),
        ({"data": {"batch_size": 0}}, r"^data\.batch_size: must be in \[1, 65536\], got 0$"),
        ({"grow": {"width_multiple": 0}}, r"^grow\.width_multiple: must be in \[1, 256\], got 0$"),
        ({"budget": {"max_macs": -1}}, r"^budget\.max_macs: must be >= 0, got -1$"),
        ({"finetune": {"optimizer": "adam"}}, r"^finetune\.optimizer: must be one of dessilbi, sgd, got 'adam'$"),
        ({"optim": {"momentum": 1.0}}, r"^optim\.momentum: must be in \[0, 1\), got 1$"),
        ({"grow": 3}, r"^grow: must be a table of keys, got int$"),
        ({"run": {"compile": "yes"}}, r"^run\.compile: must be one of auto, on, off, got 'yes'$"),
        ({"run": {"amp": "bf32"}}, r"^run\.amp: must be one of auto, off, bf16, fp16, got 'bf32'$"),
        ({"budget": {"min_rounds": 4, "max_rounds": 3}},
         r"^budget\.min_rounds: 4 is more than budget\.max_rounds 3; lower it or raise budget\.max_rounds$"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        Recipe.from_dict(data)


def test_toml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[grow]\ntau = 1.5  # too high\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: grow\.tau: must be in \(0, 1\], got 1\.5"):
        load_recipe(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[grow\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        load_recipe(broken)
    with pytest.raises(ConfigError, match=r"missing\.toml: recipe file not found"):
        load_recipe(tmp_path / "missing.toml")


def test_round_trip_and_ints_accepted_for_floats():
    r = Recipe.from_dict({"optim": {"lr": 1}, "grow": {"tau": [0.7, 0.8, 0.9]}})
    assert r.optim.lr == 1.0 and isinstance(r.optim.lr, float)
    assert r.grow.tau == (0.7, 0.8, 0.9)
    assert Recipe.from_dict(r.to_dict()) == r
    assert r.to_dict()["grow"]["tau"] == [0.7, 0.8, 0.9]


def test_overrides_parse_command_line_text():
    r = Recipe().with_overrides({"budget.max_macs": "40M", "grow.tau": "0.8,0.9", "grow.deepen": "off", "optim.lr": "0.1"})
    assert r.budget.max_macs == 40_000_000
    assert r.grow.tau == (0.8, 0.9)
    assert r.grow.deepen is False
    assert r.optim.lr == 0.1
    assert Recipe().with_overrides({"grow.ratio": 1.5}).grow.ratio == 1.5
    assert Recipe().diff(r) == ["optim.lr", "grow.tau", "grow.deepen", "budget.max_macs"]


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        ("budget.max_macs", "lots", r"^budget\.max_macs: must be an integer, got 'lots'$"),
        ("budget.max_macs", "1.5", r"^budget\.max_macs: must be an integer, got '1\.5'$"),
        ("grow.deepen", "maybe", r"^grow\.deepen: must be true or false, got 'maybe'$"),
        ("grow.nope", "1", r"^grow\.nope: unknown key"),
        ("nope.key", "1", r"^nope\.key: unknown recipe key"),
    ],
)
def test_bad_override_text(path, text, message):
    with pytest.raises(ConfigError, match=message):
        parse_value(path, text)


def test_parse_value_suffixes():
    assert parse_value("budget.max_macs", "1.5G") == 1_500_000_000
    assert parse_value("budget.max_params", "250k") == 250_000
    assert parse_value("budget.max_macs", "4e7") == 40_000_000
    assert parse_value("budget.time_budget", "1800") == 1800.0


def test_a_stored_recipe_without_grow_signal_reads_as_the_support_it_grew_on():
    from grownet.recipe import upgrade_stored

    old = Recipe().to_dict()
    del old["grow"]["signal"]
    assert Recipe.from_dict(upgrade_stored(old)).grow.signal == "support"
    assert Recipe.from_dict(old).grow.signal == "importance"  # a new recipe's default
    new = Recipe().to_dict()
    assert upgrade_stored(new) == new
    # a run folder written before grow.signal existed (commit d631e73)
    v1 = Path(__file__).resolve().parent / "data" / "issue14" / "v1-run"
    stored = json.loads((v1 / "config.json").read_text())["recipe"]
    assert "signal" not in stored["grow"]
    assert Recipe.from_dict(upgrade_stored(stored)).grow.signal == "support"


def test_a_stored_recipe_without_grow_width_multiple_reads_as_the_any_width_it_grew_with():
    from grownet.recipe import upgrade_stored

    old = Recipe().to_dict()
    del old["grow"]["width_multiple"]
    assert Recipe.from_dict(upgrade_stored(old)).grow.width_multiple == 1 == Recipe().grow.width_multiple


def test_a_stored_recipe_without_run_compile_or_amp_reads_as_the_eager_full_precision_it_ran():
    from grownet.recipe import upgrade_stored

    assert (Recipe().run.amp, Recipe().run.compile) == ("auto", "auto")  # a new recipe's defaults
    old = Recipe().to_dict()
    del old["run"]["compile"], old["run"]["amp"]
    upgraded = upgrade_stored(old)
    run = Recipe.from_dict(upgraded).run
    assert (run.amp, run.compile) == ("off", "off")
    assert list(upgraded["run"]) == [*old["run"], "amp", "compile"]  # the stored keys keep their order
    # the published CPU run (written before both keys had "auto"): amp stored as "off", compile absent
    stored = json.loads((Path(__file__).resolve().parents[1] / "reports" / "cifar10-cpu" / "config.json").read_text())["recipe"]
    assert "compile" not in stored["run"]
    assert Recipe.from_dict(upgrade_stored(stored)).run.compile == "off"
    chosen = Recipe().to_dict()
    chosen["run"].update(amp="bf16", compile="on")
    assert upgrade_stored(chosen) == chosen  # a stored value stays


# ---- extreme numbers (issue 18) ---------------------------------------------------------------------------


def test_integers_are_parsed_exactly_not_through_a_float():
    assert parse_value("budget.max_macs", "9007199254740993") == 2**53 + 1  # a float would round it to 2**53
    assert parse_value("budget.max_macs", "9223372036854775807") == 2**63 - 1
    assert parse_value("budget.max_macs", "2M") == 2_000_000 and parse_value("budget.max_macs", "1_000") == 1000
    assert Recipe().with_overrides({"budget.max_macs": str(2**63 - 1)}).budget.max_macs == 2**63 - 1


@pytest.mark.parametrize(("text", "message"), [
    (str(2**63), r"^budget\.max_macs: must be at most 9223372036854775807 \(a 64-bit integer\), got 9223372036854775808$"),
    ("9" * 40, r"^budget\.max_macs: must be at most 9223372036854775807 \(a 64-bit integer\), got an integer of 40 digits$"),
    ("9" * 41, r"^budget\.max_macs: must be an integer of at most 40 characters, got '9{41}'$"),
    ("9" * 5000, r"^budget\.max_macs: must be an integer of at most 40 characters"),
    ("1e400", r"^budget\.max_macs: must be an integer, got '1e400'$"),
])
def test_integers_past_64_bits_are_refused_in_one_short_line(text, message):
    with pytest.raises(ConfigError, match=message):
        Recipe().with_overrides({"budget.max_macs": text})


def test_floats_past_the_float_range_are_refused():
    with pytest.raises(ConfigError, match=r"^budget\.time_budget: must be finite, got inf$"):
        Recipe().with_overrides({"budget.time_budget": "1e400"})
    with pytest.raises(ConfigError, match=r"^budget\.time_budget: must be finite, got an integer of 400 digits$"):
        Recipe.from_dict({"budget": {"time_budget": 10**399}})


@pytest.mark.parametrize(("toml", "message"), [
    ("[grow]\nlocal_epochs = 100000000000000000000000\n", r"r\.toml: grow\.local_epochs: must be at most 9223372036854775807"),
    ("[grow]\nlocal_epochs = " + "9" * 5000 + "\n", r"r\.toml: a number has more than 40 digits$"),
    ("[grow]\ntau = " + "[" * 10_000 + "]" * 10_000 + "\n", r"r\.toml: nested deeper than 64 levels$"),
    ("[" + ".".join(["grow"] * 500) + "]\n", r"r\.toml: nested deeper than 64 levels"),
    ("[grow]\n" + "x" * 10_000 + " = 1\n", r"r\.toml: grow\.x{57}\.\.\.: unknown key"),
    ('["\\n"]\nx = 0\n', r"r\.toml: \\n: unknown section"),  # a newline in a name stays one line
])
def test_extreme_recipe_files_are_refused_naming_the_file(tmp_path, toml, message):
    (tmp_path / "r.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_recipe(tmp_path / "r.toml")

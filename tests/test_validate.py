"""grownet.validate: the reading limits (size, depth, digits, Unicode), the field checks, and
the run-folder schemas, checked against grownet's own files and against edited copies."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from grownet import validate as v
from grownet.errors import ConfigError, DataError, RunError, UsageError
from grownet.files import read_text
from grownet.runfolder import RunFolder

from _runfolder import write_control, write_synthetic_run, SEED

PUBLISHED = Path(__file__).resolve().parent.parent / "reports" / "cifar10-cpu-v1"


# ---- reading ------------------------------------------------------------------------------------------


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_nesting_up_to_the_limit_is_read_and_one_level_more_is_refused():
    assert v.parse_json(nested(v.MAX_DEPTH), error=RunError, where="f") is not None
    with pytest.raises(RunError, match=r"^f: nested deeper than 64 levels"):
        v.parse_json(nested(v.MAX_DEPTH + 1), error=RunError, where="f")


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_nesting_past_the_interpreter_stack_is_refused_not_a_recursion_error(depth):
    with pytest.raises(RunError, match="nested deeper than 64 levels"):
        v.parse_json(nested(depth), error=RunError, where="f")
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        v.parse_toml("x = " + nested(depth), error=ConfigError, where="f")


def test_toml_tables_nested_deep_are_refused():
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        v.parse_toml("[" + ".".join(["a"] * 200) + "]", error=ConfigError, where="f")


@pytest.mark.parametrize("digits, ok", [(40, True), (41, False), (5000, False), (100_000, False)])
def test_integers_longer_than_40_digits_are_refused(digits, ok):
    text = "9" * digits
    for parse, doc in ((v.parse_json, f"[{text}]"), (v.parse_toml, f"x = {text}")):
        if ok:
            assert parse(doc, error=ConfigError, where="f") in ([10**digits - 1], {"x": 10**digits - 1})
        else:
            with pytest.raises(ConfigError, match=r"^f: a number has more than 40 digits"):
                parse(doc, error=ConfigError, where="f")


def test_lone_surrogates_in_keys_and_values_are_refused():
    for doc in ('{"a": "\\udcff"}', '{"\\ud800": 1}'):
        with pytest.raises(RunError, match="is not valid Unicode"):
            v.parse_json(doc, error=RunError, where="f")
    assert v.parse_json('{"a": "\\u00e9\\ud83d\\ude00"}', error=RunError, where="f") == {"a": "é😀"}  # a pair is fine


def test_syntax_errors_name_the_file_and_position():
    with pytest.raises(RunError, match=r"^f: not valid JSON \(Expecting value at line 2, column 1\)$"):
        v.parse_json("[1,\n]", error=RunError, where="f")
    with pytest.raises(ConfigError, match=r"^f: invalid TOML"):
        v.parse_toml("[a\n", error=ConfigError, where="f")


def test_read_refuses_files_past_the_size_limit_without_reading_them_whole(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + " " * 100 + "]")
    assert read_text(path, error=RunError, missing="gone", max_bytes=102) == "[" + " " * 100 + "]"
    with pytest.raises(RunError, match=r"big\.json: larger than 0 MiB"):
        read_text(path, error=RunError, missing="gone", max_bytes=101)
    with pytest.raises(RunError, match=r"^/dev/zero: larger than 64 MiB"):  # never ends: read only to the limit
        v.read_json("/dev/zero", error=RunError, missing="gone")


def test_read_errors_are_one_line_of_the_callers_class(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: gone$"):
        v.read_json(tmp_path / "nope.json", error=DataError, missing="gone")
    (tmp_path / "latin1.json").write_bytes(b'["\xe9"]')
    with pytest.raises(DataError, match=r"latin1\.json: cannot read \('utf-8' codec can't decode"):
        v.read_json(tmp_path / "latin1.json", error=DataError, missing="gone")
    with pytest.raises(DataError, match="cannot read"):
        v.read_json(tmp_path, error=DataError, missing="gone")  # a folder


def test_show_keeps_messages_short():
    assert v.show(2**63 - 1) == "9223372036854775807"
    assert v.show(2**64) == "an integer of 20 digits"
    assert v.show(-(10**5000)) == "a negative integer of 5001 digits"
    assert v.show(10**100_000) == "an integer of 100001 digits"  # past the interpreter's str() limit
    assert v.show([10**5000] * 100) == "[" + "an integer of 5001 digits, " * 6 + "...]"
    assert len(v.show("x" * 10**6)) < 80
    assert v.cut("abc") == "abc" and v.cut("a" * 100) == "a" * 57 + "..."


# ---- fields --------------------------------------------------------------------------------------------


def test_check_int_bounds_and_types():
    assert v.check_int(3.0, "a.b", error=RunError) == 3
    assert v.check_int(None, "a.b", error=RunError, optional=True) is None
    with pytest.raises(RunError, match=r"^a\.b: must be an integer, got True$"):
        v.check_int(True, "a.b", error=RunError)
    with pytest.raises(RunError, match=r"^a\.b: must be an integer, got '3'$"):
        v.check_int("3", "a.b", error=RunError)
    with pytest.raises(RunError, match=r"^a\.b: must be an integer in \[0, 9223372036854775807\], got an integer of 20 digits$"):
        v.check_int(2**64, "a.b", error=RunError)
    with pytest.raises(RunError, match=r"must be an integer in \[1, 5\], got 0"):
        v.check_int(0, "a.b", error=RunError, low=1, high=5)


def test_check_number_is_finite_and_in_range():
    assert v.check_number(1, "x", error=RunError, low=0.0, high=1.0) == 1.0
    for bad in (float("nan"), float("inf"), 10**400, -0.5, 1.5):
        with pytest.raises(RunError, match=r"^x: must be a finite number in \[0, 1\]"):
            v.check_number(bad, "x", error=RunError, low=0.0, high=1.0)
    with pytest.raises(RunError, match="must be a number, got None"):
        v.check_number(None, "x", error=RunError)
    with pytest.raises(RunError, match=r"^x: must be a finite number in \[0, inf\], got -1$"):
        v.check_number(-1, "x", error=RunError, low=0.0)
    with pytest.raises(RunError, match=r"^x: must be a finite number in \[-inf, 2\.5\], got 3$"):
        v.check_number(3, "x", error=RunError, high=2.5)


def test_check_file_name_refuses_paths_nul_and_dots():
    assert v.check_file_name("ckpt-000001.pt", "file", error=RunError) == "ckpt-000001.pt"
    for bad in ("", ".", "..", "../x", "/etc/passwd", "a\0b", "x" * 256, "é" * 128, "a\udcffb"):
        with pytest.raises(RunError, match=r"^file: "):
            v.check_file_name(bad, "file", error=RunError)


def test_check_text_refuses_names_that_are_not_utf8_or_hold_nul():
    assert v.check_text("runs/ä $x^{$", "--out") == "runs/ä $x^{$"
    with pytest.raises(UsageError, match=r"^--out: 'runs/\\udcff' is not valid UTF-8; rename it"):
        v.check_text(b"runs/\xff".decode("utf-8", "surrogateescape"), "--out")
    for bad in ("a\0", "a\nb", "\t", "x\x7f"):
        with pytest.raises(UsageError, match=r"^--out: '.*' holds a control character \(newline, tab, NUL...\); rename it$"):
            v.check_text(bad, "--out")
    assert v.cut("line\nbreak") == "line\\nbreak"


def test_check_fields_names_the_nested_path_and_keeps_unknown_keys():
    spec = {"n": lambda x, p: v.check_int(x, p, error=RunError), "s": lambda x, p: v.check_str(x, p, error=RunError)}
    assert v.check_fields({"n": 1, "later": [1]}, spec, path="top", error=RunError) == {"n": 1, "later": [1]}
    with pytest.raises(RunError, match=r"^top\.n: must be an integer"):
        v.check_fields({"n": "1"}, spec, path="top", error=RunError)
    with pytest.raises(RunError, match=r"^top\.s: missing required key$"):
        v.check_fields({"n": 1}, spec, path="top", error=RunError, required=("s",))
    with pytest.raises(RunError, match=r"^top: must be an object, got list$"):
        v.check_fields([], spec, path="top", error=RunError)


# ---- run-folder schemas ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    run = write_synthetic_run(tmp_path_factory.mktemp("v") / "run")
    write_control(run, "seed", SEED, val_acc=0.5, test_acc=0.5)
    return run


def run_files(root: Path) -> list[tuple[Path, object]]:
    files = [(root / "config.json", v.check_config), (root / "summary.json", v.check_summary),
             (root / "rounds.json", v.check_rounds)]
    return files + [(p, v.check_summary) for p in sorted((root / "controls").glob("*/summary.json"))]


@pytest.mark.parametrize("root", ["published", "synthetic"])
def test_grownets_own_run_files_pass(root, synthetic):
    folder = PUBLISHED if root == "published" else synthetic
    for path, check in run_files(folder):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert v.read_run_file(path, check, missing="gone") == data


def test_a_manifest_written_by_save_checkpoint_passes(tmp_path):
    folder = RunFolder(tmp_path)
    folder.save_checkpoint({"x": 1})
    manifest = v.read_run_file(folder.checkpoints / "latest.json", v.check_manifest, missing="gone")
    assert manifest["seq"] == 1 and manifest["file"] == "ckpt-000001.pt"


SUMMARY = json.loads((PUBLISHED / "summary.json").read_text())
ROUNDS = json.loads((PUBLISHED / "rounds.json").read_text())
CONFIG = json.loads((PUBLISHED / "config.json").read_text())
MANIFEST = {"seq": 3, "file": "ckpt-000003.pt", "sha256": "0" * 64, "bytes": 10}


def edited(data, path, value):
    out = copy.deepcopy(data)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


EDITS = {
    # (check, original, path to edit, new value): the message's field path and reason
    "summary accuracy as text": (v.check_summary, SUMMARY, ("val_acc",), "0.87", "val_acc: must be a number, got '0.87'"),
    "summary accuracy above 1": (v.check_summary, SUMMARY, ("test_acc",), 87.0, "test_acc: must be a finite number in [0, 1]"),
    "summary macs past 64 bits": (v.check_summary, SUMMARY, ("macs",), 2**64, "macs: must be an integer in [0, 9223372036854775807]"),
    "summary classes not a list": (v.check_summary, SUMMARY, ("classes",), "cat,dog", "classes: must be a list, got str"),
    "summary class not text": (v.check_summary, SUMMARY, ("classes", 2), 7, "classes[2]: must be a string, got 7"),
    "summary final arch width": (v.check_summary, SUMMARY, ("final_arch", "stages", 1, 0), 0,
                                 "final_arch.stages[1][0]: width must be a positive integer"),
    "summary seed arch not an object": (v.check_summary, SUMMARY, ("seed_arch",), [1], "seed_arch: architecture must be a JSON object"),
    "summary event epoch": (v.check_summary, SUMMARY, ("events",), [{"epoch": -1}], "events[0].epoch: must be an integer in [0,"),
    "rounds width as text": (v.check_rounds, ROUNDS, (1, "layers", 2, "width"), "64", "rounds[1].layers[2].width: must be an integer"),
    "rounds activity above 1": (v.check_rounds, ROUNDS, (0, "layers", 0, "activity"), 3.0, "rounds[0].layers[0].activity: must be a finite"),
    "rounds layer without a name": (v.check_rounds, ROUNDS, (0, "layers", 0), {"width": 3}, "rounds[0].layers[0].layer: missing required key"),
    "rounds grew not a bool": (v.check_rounds, ROUNDS, (0, "grew"), "yes", "rounds[0].grew: must be true or false"),
    "rounds round zero": (v.check_rounds, ROUNDS, (0, "round"), 0, "rounds[0].round: must be an integer in [1,"),
    "config recipe value": (v.check_config, CONFIG, ("recipe", "grow", "tau"), 3, "recipe.grow.tau: must be in (0, 1], got 3"),
    "config recipe section": (v.check_config, CONFIG, ("recipe", "growth"), {}, "recipe.growth: unknown section"),
    "config seed negative": (v.check_config, CONFIG, ("seed",), -1, "seed: must be an integer in [0,"),
    "config seed of 30 digits": (v.check_config, CONFIG, ("seed",), 10**30, "seed: must be an integer in [0, 9223372036854775807], got an integer of 31 digits"),
    "config dataset not text": (v.check_config, CONFIG, ("dataset",), ["cifar10"], "dataset: must be a string"),
    "config versions not text": (v.check_config, CONFIG, ("versions", "torch"), 2.1, "versions.torch: must be a string"),
    "manifest file with NUL": (v.check_manifest, MANIFEST, ("file",), "ckpt\0.pt", "file: must be a plain file name"),
    "manifest file outside": (v.check_manifest, MANIFEST, ("file",), "../../x.pt", "file: must be a plain file name"),
    "manifest seq as text": (v.check_manifest, MANIFEST, ("seq",), "3", "seq: must be an integer, got '3'"),
    "manifest seq past 64 bits": (v.check_manifest, MANIFEST, ("seq",), 2**70, "seq: must be an integer in [1,"),
    "manifest sha256 short": (v.check_manifest, MANIFEST, ("sha256",), "abc", "sha256: must be 64 lowercase hexadecimal digits"),
}


@pytest.mark.parametrize("name", list(EDITS))
def test_an_edited_run_file_is_refused_naming_the_field(name):
    check, original, path, value, message = EDITS[name]
    check(copy.deepcopy(original), "the/file.json")  # the original passes
    with pytest.raises(RunError) as info:
        check(edited(original, path, value), "the/file.json")
    assert str(info.value).startswith("the/file.json: " + message), str(info.value)
    assert str(info.value).endswith("; the file was changed or damaged")


@pytest.mark.parametrize("check, required", [(v.check_config, "recipe"), (v.check_manifest, "file")])
def test_required_keys(check, required):
    data = copy.deepcopy(CONFIG if check is v.check_config else MANIFEST)
    del data[required]
    with pytest.raises(RunError, match=f"^f: {required}: missing required key"):
        check(data, "f")


@pytest.mark.parametrize("check", [v.check_config, v.check_summary, v.check_rounds, v.check_manifest])
def test_the_wrong_top_level_type_is_refused(check):
    with pytest.raises(RunError, match="^f: .*must be an? (object|list), got (str|dict)"):
        check("text" if check is not v.check_rounds else {"round": 1}, "f")

"""Specification of the architecture spec: JSON v1 round trips, validation, layer naming."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from grownet.arch import FORMAT, MAX_WIDTH, VERSION, Architecture, ResStage
from grownet.errors import ArchitectureError, GrownetError

DATA = Path(__file__).resolve().parent / "data"
EXAMPLES = sorted(DATA.glob("*.json"))

VGG = {
    "format": "grownet.architecture",
    "version": 1,
    "family": "vgg",
    "in_channels": 3,
    "input_size": 32,
    "num_classes": 10,
    "stages": [[16], [16], [16, 16], [16, 16], [16, 16]],
    "meta": {},
}
RESNET = {
    "format": "grownet.architecture",
    "version": 1,
    "family": "resnet",
    "in_channels": 3,
    "input_size": 32,
    "num_classes": 10,
    "stem": 16,
    "stages": [{"width": 16, "blocks": [16, 16]}, {"width": 32, "blocks": [32]}, {"width": 64, "blocks": [64, 48]}],
    "meta": {},
}


def edited(base: dict, path: tuple, value: object) -> dict:
    """A deep copy of ``base`` with the item at ``path`` set to ``value`` (``DELETE`` removes it)."""
    data = copy.deepcopy(base)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


DELETE = object()


# ---- round trips -------------------------------------------------------------------------


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"vgg_seed.json", "resnet20.json", "vgg_grown.json", "resnet_grown.json"} <= names


@pytest.mark.parametrize("data", [VGG, RESNET], ids=["vgg", "resnet"])
def test_dict_round_trip_is_exact(data):
    arch = Architecture.from_dict(data)
    assert arch.to_dict() == data
    assert list(arch.to_dict()) == list(data)  # documented key order
    assert Architecture.from_dict(arch.to_dict()) == arch


def test_meta_round_trips_and_becomes_plain_json():
    arch = Architecture.from_dict({**VGG, "meta": {"val_acc": 0.9, "classes": ["cat", "dog"], "nested": {"a": [1, 2]}}})
    assert arch.to_dict()["meta"] == {"val_acc": 0.9, "classes": ["cat", "dog"], "nested": {"a": [1, 2]}}
    odd = arch.with_meta(loss=float("nan"), path=Path("x"), pair=(1, 2))
    assert odd.to_dict()["meta"]["loss"] is None
    assert odd.to_dict()["meta"]["path"] == "x"
    assert odd.to_dict()["meta"]["pair"] == [1, 2]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_file_round_trip(path, tmp_path):
    arch = Architecture.from_json(path)
    # The stored examples are in canonical form: re-saving reproduces them byte for byte.
    assert path.read_text(encoding="utf-8") == arch.to_json()
    out = arch.save(tmp_path / "a.json")
    again = Architecture.from_json(out)
    assert again == arch
    assert again.to_dict() == arch.to_dict()  # meta included
    assert json.loads(out.read_text(encoding="utf-8")) == arch.to_dict()


def test_save_leaves_no_temporary_files(tmp_path):
    Architecture.from_dict(VGG).save(tmp_path / "a.json")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_json_text_is_compact_one_stage_per_line():
    vgg = Architecture.from_dict(VGG).to_json().splitlines()
    assert "    [16, 16]," in vgg
    assert vgg[-1] == "}"
    assert len(vgg) == 2 + 6 + 2 + 5 + 1  # braces, 6 scalar keys, "stages": [ and ], 5 stages, meta
    res = Architecture.from_dict(RESNET).to_json().splitlines()
    assert '    {"width": 16, "blocks": [16, 16]},' in res
    assert '    {"width": 64, "blocks": [64, 48]}' in res
    wide = Architecture.from_dict(VGG).with_meta(long=list(range(100))).to_json()
    assert max(len(line) for line in wide.splitlines()) <= 88
    assert json.loads(wide)["meta"]["long"] == list(range(100))


# ---- validation: every error, matched by message ---------------------------------------------

WIDTH = r"width must be a positive integer <= 65536"

CASES = [
    # (base, path, value, message regex)
    (VGG, ("format",), DELETE, r"^format: missing required key"),
    (VGG, ("format",), "grownet.arch", r"^format: must be 'grownet.architecture', got 'grownet.arch'$"),
    (VGG, ("version",), 2, r"^version: unsupported version 2; this grownet reads version 1$"),
    (VGG, ("version",), True, r"^version: unsupported version True"),
    (VGG, ("version",), "1", r"^version: unsupported version '1'"),
    (VGG, ("version",), DELETE, r"^version: unsupported version None"),
    (VGG, ("family",), "alexnet", r"^family: must be one of vgg, resnet, got 'alexnet'$"),
    (VGG, ("stem",), 16, r"^stem: only family 'resnet' has a stem"),
    (VGG, ("widths",), [16], r"^widths: unknown key \(extra information belongs under 'meta'\)$"),
    (VGG, ("in_channels",), DELETE, r"^in_channels: missing required key$"),
    (VGG, ("input_size",), DELETE, r"^input_size: missing required key$"),
    (VGG, ("num_classes",), DELETE, r"^num_classes: missing required key$"),
    (VGG, ("stages",), DELETE, r"^stages: missing required key$"),
    (RESNET, ("stem",), DELETE, r"^stem: missing required key$"),
    (VGG, ("in_channels",), 0, r"^in_channels: value must be a positive integer <= 4096, got 0$"),
    (VGG, ("in_channels",), "3", r"^in_channels: value must be a positive integer <= 4096, got '3'$"),
    (VGG, ("in_channels",), True, r"^in_channels: value must be a positive integer"),
    (VGG, ("input_size",), 3.0, r"^input_size: value must be a positive integer <= 8192, got 3.0$"),
    (VGG, ("input_size",), 10_000, r"^input_size: value must be a positive integer <= 8192"),
    (VGG, ("num_classes",), -1, r"^num_classes: value must be a positive integer <= 1000000, got -1$"),
    (VGG, ("meta",), [], r"^meta: must be an object, got list$"),
    (VGG, ("stages",), [], r"^stages: must be a non-empty list$"),
    (VGG, ("stages",), {"0": [16]}, r"^stages: must be a non-empty list$"),
    (VGG, ("stages", 1), 16, r"^stages\[1\]: must be a non-empty list of widths$"),
    (VGG, ("stages", 1), [], r"^stages\[1\]: must be a non-empty list of widths$"),
    (VGG, ("stages", 2, 1), 0, rf"^stages\[2\]\[1\]: {WIDTH}, got 0$"),
    (VGG, ("stages", 2, 1), 1.5, rf"^stages\[2\]\[1\]: {WIDTH}, got 1.5$"),
    (VGG, ("stages", 2, 1), "16", rf"^stages\[2\]\[1\]: {WIDTH}, got '16'$"),
    (VGG, ("stages", 2, 1), True, rf"^stages\[2\]\[1\]: {WIDTH}, got True$"),
    (VGG, ("stages", 4, 0), MAX_WIDTH + 1, rf"^stages\[4\]\[0\]: {WIDTH}, got 65537$"),
    (VGG, ("input_size",), 8, r"^input_size: 8 px is too small for 5 stages \(needs >= 16\)$"),
    (RESNET, ("stem",), 0, rf"^stem: {WIDTH}, got 0$"),
    (RESNET, ("stages", 0), [16, 16], r"^stages\[0\]: must be an object with 'width' and 'blocks'$"),
    (RESNET, ("stages", 1, "depth"), 2, r"^stages\[1\]\.depth: unknown key"),
    (RESNET, ("stages", 1, "width"), DELETE, r"^stages\[1\]\.width: missing required key$"),
    (RESNET, ("stages", 1, "blocks"), DELETE, r"^stages\[1\]\.blocks: missing required key$"),
    (RESNET, ("stages", 1, "blocks"), [], r"^stages\[1\]\.blocks: must be a non-empty list of widths$"),
    (RESNET, ("stages", 1, "blocks"), 32, r"^stages\[1\]\.blocks: must be a non-empty list of widths$"),
    (RESNET, ("stages", 1, "width"), -4, rf"^stages\[1\]\.width: {WIDTH}, got -4$"),
    (RESNET, ("stages", 2, "blocks", 1), None, rf"^stages\[2\]\.blocks\[1\]: {WIDTH}, got None$"),
    (RESNET, ("input_size",), 2, r"^input_size: 2 px is too small for 3 stages \(needs >= 4\)$"),
]


@pytest.mark.parametrize("base, path, value, message", CASES, ids=[c[3][1:40] for c in CASES])
def test_every_validation_error_names_its_field(base, path, value, message):
    with pytest.raises(ArchitectureError, match=message) as info:
        Architecture.from_dict(edited(base, path, value))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, GrownetError)


@pytest.mark.parametrize("data", [[VGG], "vgg", None], ids=["list", "str", "none"])
def test_non_object_is_rejected(data):
    with pytest.raises(ArchitectureError, match=r"^architecture must be a JSON object, got "):
        Architecture.from_dict(data)


def test_from_json_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ArchitectureError, match=r"nope\.json: file not found; pass the path of an architecture\.json$"):
        Architecture.from_json(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "grownet.architecture",\n  "version": 1,,}', encoding="utf-8")
    with pytest.raises(ArchitectureError, match=r"bad\.json: not valid JSON \(.* at line 2, column 16\)$"):
        Architecture.from_json(bad)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ArchitectureError, match=r"bin\.json: cannot read"):
        Architecture.from_json(binary)
    with pytest.raises(ArchitectureError, match=r": cannot read"):
        Architecture.from_json(tmp_path)  # a folder
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(edited(VGG, ("stages", 2, 1), 0)), encoding="utf-8")
    with pytest.raises(ArchitectureError, match=r"wrong\.json: stages\[2\]\[1\]: width must be a positive integer"):
        Architecture.from_json(wrong)


def test_constructor_validates_and_normalises():
    arch = Architecture("vgg", [[16], [16, 8]], input_size=8)
    assert arch.stages == ((16,), (16, 8))
    hash(arch)
    res = Architecture("resnet", [{"width": 16, "blocks": [8]}, ResStage(32, [32, 32])], stem=16)
    assert res.stages == (ResStage(16, (8,)), ResStage(32, (32, 32)))
    with pytest.raises(ArchitectureError, match=r"^stages\[1\]\[1\]: width must be a positive integer"):
        Architecture("vgg", [[16], [16, 0]])
    with pytest.raises(ArchitectureError, match=r"^stem: missing required key for family 'resnet'$"):
        Architecture("resnet", [ResStage(16, (16,))])
    with pytest.raises(ArchitectureError, match=r"^stages\[0\]: must be an object with 'width' and 'blocks'$"):
        Architecture("resnet", [(16, (16,))], stem=16)
    with pytest.raises(ArchitectureError, match=r"^family: must be one of vgg, resnet, got 'VGG'$"):
        Architecture("VGG", [[16]])
    with pytest.raises(ArchitectureError, match=r"^meta: must be an object, got str$"):
        Architecture("vgg", [[16]], meta="note")


def test_equality_and_hash_ignore_meta():
    a = Architecture.from_dict(VGG)
    b = a.with_meta(val_acc=0.5)
    assert a == b and hash(a) == hash(b)
    assert b.meta == {"val_acc": 0.5} and a.meta == {}
    assert a != a.with_width("stages.0.0", 24)


# ---- structure ---------------------------------------------------------------------------------


def test_layer_names_in_network_order():
    vgg = Architecture.from_dict(VGG)
    assert vgg.layer_widths() == {
        "stages.0.0": 16, "stages.1.0": 16, "stages.2.0": 16, "stages.2.1": 16,
        "stages.3.0": 16, "stages.3.1": 16, "stages.4.0": 16, "stages.4.1": 16,
    }  # fmt: skip
    res = Architecture.from_dict(RESNET)
    assert list(res.layer_widths().items()) == [
        ("stem", 16), ("stages.0.0", 16), ("stages.0.1", 16), ("stages.0", 16),
        ("stages.1.0", 32), ("stages.1", 32), ("stages.2.0", 64), ("stages.2.1", 48), ("stages.2", 64),
    ]  # fmt: skip
    assert res.stage_layers(2) == ["stages.2.0", "stages.2.1", "stages.2"]
    assert vgg.stage_layers(2) == ["stages.2.0", "stages.2.1"]
    assert res.width("stages.2.1") == 48 and res.num_stages == 3


def test_unknown_layer_is_an_error():
    with pytest.raises(ArchitectureError, match=r"^unknown layer 'stages.9.0'; known layers: stages.0.0, "):
        Architecture.from_dict(VGG).width("stages.9.0")
    with pytest.raises(ArchitectureError, match=r"^unknown layer 'stem'"):
        Architecture.from_dict(VGG).with_width("stem", 8)


def test_with_width_sets_one_layer_and_drops_meta():
    vgg = Architecture.from_dict(VGG).with_meta(macs=1)
    wide = vgg.with_width("stages.2.1", 24)
    assert wide.stages[2] == (16, 24) and wide.meta == {}
    assert wide.stages[:2] == vgg.stages[:2] and wide.stages[3:] == vgg.stages[3:]
    res = Architecture.from_dict(RESNET)
    assert res.with_width("stem", 8).stem == 8
    assert res.with_width("stages.1", 40).stages[1] == ResStage(40, (32,))
    assert res.with_width("stages.2.1", 56).stages[2] == ResStage(64, (64, 56))
    for bad in (0, -1, 1.5, True, MAX_WIDTH + 1):
        with pytest.raises(ArchitectureError, match=r"^stages.2.1: width must be a positive integer <= 65536, got "):
            res.with_width("stages.2.1", bad)


def test_with_extra_layer_appends_at_the_end_of_the_stage():
    vgg = Architecture.from_dict(edited(VGG, ("stages", 2), [16, 24])).with_meta(macs=1)
    deeper = vgg.with_extra_layer(2)
    assert deeper.stages[2] == (16, 24, 24) and deeper.meta == {}
    res = Architecture.from_dict(RESNET).with_extra_layer(2)
    assert res.stages[2] == ResStage(64, (64, 48, 48))
    for bad in (-1, 3, 5, "1"):
        with pytest.raises(ArchitectureError, match=r"^stage must be an integer in \[0, 2\], got "):
            Architecture.from_dict(RESNET).with_extra_layer(bad)


def test_constants():
    assert (FORMAT, VERSION) == ("grownet.architecture", 1)


# ---- extreme numbers and shapes (issue 18) ---------------------------------------------------------------


def raw_json(key: str, raw: str) -> str:
    """The VGG example's JSON with ``key``'s value replaced by the text ``raw``."""
    return json.dumps({**VGG, key: "@RAW@"}).replace('"@RAW@"', raw)


@pytest.mark.parametrize(("key", "raw", "message"), [
    ("stages", f"[[{2**64}]]", r"stages\[0\]\[0\]: width must be a positive integer <= 65536, got an integer of 20 digits$"),
    ("stages", "[[" + "9" * 5000 + "]]", r"a\.json: a number has more than 40 digits$"),
    ("num_classes", "1" + "0" * 40, r"a\.json: a number has more than 40 digits$"),
    ("meta", "[" * 100_000 + "]" * 100_000, r"a\.json: nested deeper than 64 levels$"),
    ("meta", '{"a":' * 70 + "0" + "}" * 70, r"a\.json: nested deeper than 64 levels$"),
    ("meta", '{"note": "\\udcff"}', r"a\.json: text '\\udcff' is not valid Unicode"),
    ("stages", "[" + ",".join(["[1]"] * 2000) + "]", r"input_size: 32 px is too small for 2000 stages"),
    ("stages", "[[" + ",".join(["1"] * 1025) + "]]", r"stages\[0\]: 1025 layers; a stage holds at most 1024$"),
])
def test_extreme_json_is_refused_naming_the_file_and_field(tmp_path, key, raw, message):
    (tmp_path / "a.json").write_text(raw_json(key, raw))
    with pytest.raises(ArchitectureError, match=message):
        Architecture.from_json(tmp_path / "a.json")


def test_extreme_values_through_the_constructor_give_short_messages():
    with pytest.raises(ArchitectureError, match=r"^stages\[0\]\[0\]: width must be a positive integer <= 65536, got an integer of 5001 digits$"):
        Architecture("vgg", ((10**5000,),))
    deep: dict = {}
    for _ in range(200):
        deep = {"a": deep}
    with pytest.raises(ArchitectureError, match=r"^meta: nested deeper than 64 levels"):
        Architecture("vgg", ((4,),), meta=deep)
    with pytest.raises(ArchitectureError, match=r"stages\[0\]\.blocks: 2000 layers"):
        Architecture("resnet", ({"width": 4, "blocks": [4] * 2000},), stem=4)

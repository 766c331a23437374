"""Property: whatever bytes or values a file holds, grownet's loaders either accept it or raise
one of grownet's own errors (:class:`grownet.errors.GrownetError`); no other exception type
escapes and no example runs long.

Generated inputs (hypothesis, derandomized so the suite is repeatable, about 30 s in all):
architecture JSON, recipe TOML, ``.npz`` datasets, and run-folder files (config.json,
summary.json, rounds.json, the checkpoint manifest) through :mod:`grownet.validate`. Each kind
mixes well-formed documents with edited ones (a field replaced by any JSON value, numbers past
64 bits, deep nesting, lone surrogates) and raw text.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from grownet import validate
from grownet.arch import Architecture
from grownet.data import load_dataset
from grownet.errors import GrownetError
from grownet.models import build_model, estimate_memory
from grownet.recipe import load_recipe, recipe_keys

PUBLISHED = Path(__file__).resolve().parent.parent / "reports" / "cifar10-cpu-v1"
#: Derandomized: the same examples every run (a failure reproduces); about 30 s in all on 2 cores.
SETTINGS = settings(max_examples=200, deadline=5000, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---- values -----------------------------------------------------------------------------------------

EXTREME_INTS = st.sampled_from([0, -1, 1, 3, 32, 65536, 65537, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**40, -(10**39)])
NUMBERS = st.one_of(st.integers(-(2**70), 2**70), EXTREME_INTS, st.floats(allow_nan=False, allow_infinity=False))
TEXT = st.text(max_size=12) | st.sampled_from(["", "vgg", "resnet", "\udcff", "a\0b", "$x^{", "../x", "ckpt-000001.pt"])
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON_VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
                           max_leaves=12)


def deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


ODD_VALUES = JSON_VALUES | st.integers(60, 300).map(deep)  # deeper: the raw "[[[..." text below


def dumps(value: Any) -> str:
    """JSON text of ``value`` as a careless writer would make it (NaN and surrogates included)."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


def leaf_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into ``value`` (objects and lists), the root included."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += leaf_paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += leaf_paths(v, path + (i,))
    return out


def replaced(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    out = json.loads(json.dumps(doc))
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def edited(doc: Any) -> st.SearchStrategy[Any]:
    """``doc`` with one field (any depth) replaced by an odd value, or ``doc`` itself."""
    paths = leaf_paths(doc)
    return st.one_of(st.just(doc), st.tuples(st.sampled_from(paths), ODD_VALUES).map(lambda pv: replaced(doc, *pv)))


def text_of(docs: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """The JSON text of ``docs``, sometimes cut short, or arbitrary text."""
    whole = docs.map(dumps)
    cut = st.tuples(whole, st.integers(0, 400)).map(lambda tc: tc[0][: tc[1]])
    return st.one_of(whole, whole, cut, st.text(max_size=40), st.integers(60, 50_000).map(lambda n: "[" * n + "]" * n))


def only_grownet_errors(fn: Callable[[], Any]) -> Any:
    """``fn()``'s result, or None when it raised a GrownetError; any other exception fails."""
    try:
        result = fn()
    except GrownetError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 2000, str(exc)
        event(f"refused: {type(exc).__name__}")  # shown by pytest --hypothesis-show-statistics
        return None
    event("accepted")
    return result


def in_file(name: str, content: str | bytes, read: Callable[[Path], Any]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogatepass")  # a lone surrogate makes invalid UTF-8: also a case
        path.write_bytes(content)
        return only_grownet_errors(lambda: read(path))


# ---- architecture JSON --------------------------------------------------------------------------------

WIDTHS = st.integers(1, 64) | st.just(65536)
VGG_DOCS = st.fixed_dictionaries(
    {"format": st.just("grownet.architecture"), "version": st.just(1), "family": st.just("vgg"),
     "in_channels": st.integers(1, 3), "input_size": st.sampled_from([8, 32]), "num_classes": st.integers(1, 10),
     "stages": st.lists(st.lists(WIDTHS, min_size=1, max_size=3), min_size=1, max_size=4)},
    optional={"meta": JSON_VALUES},
)
RES_DOCS = st.fixed_dictionaries(
    {"format": st.just("grownet.architecture"), "version": st.just(1), "family": st.just("resnet"),
     "in_channels": st.integers(1, 3), "input_size": st.sampled_from([8, 32]), "num_classes": st.integers(1, 10),
     "stem": WIDTHS, "stages": st.lists(st.fixed_dictionaries({"width": WIDTHS, "blocks": st.lists(WIDTHS, min_size=1, max_size=3)}),
                                        min_size=1, max_size=3)},
    optional={"meta": JSON_VALUES},
)
ARCH_DOCS = VGG_DOCS | RES_DOCS
ARCH_TEXT = text_of(ARCH_DOCS.flatmap(edited) | JSON_VALUES)


@settings(SETTINGS, max_examples=60)  # each accepted net is costed and built on the meta device
@given(text=ARCH_TEXT)
def test_architecture_json_gives_an_architecture_or_a_grownet_error(text):
    arch = in_file("a.json", text, Architecture.from_json)
    if arch is None:
        return
    assert Architecture.from_dict(json.loads(arch.to_json())) == arch  # what is accepted round-trips
    estimate = only_grownet_errors(lambda: estimate_memory(arch, batch_size=128))
    assert estimate is not None and estimate.params > 0
    with torch.device("meta"):  # builds whatever the estimate admits, allocating nothing
        assert sum(p.numel() for p in build_model(arch).parameters()) == estimate.params


# ---- recipe TOML ------------------------------------------------------------------------------------------

KEYS = [spec.path for spec in recipe_keys()]


def toml_value(value: Any) -> str:
    """``value`` as TOML (JSON's string escapes are TOML's; non-finite floats as inf/nan)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items() if v is not None) + "}"
    return '""'  # TOML has no null


def toml_text(entries: list[tuple[str, Any]]) -> str:
    lines = []
    for path, value in entries:
        section, _, key = path.partition(".")
        lines += [f"[{json.dumps(section)}]", f"{json.dumps(key or 'x')} = {toml_value(value)}"]
    return "\n".join(lines) + "\n"


RECIPE_VALUES = st.one_of(NUMBERS, st.booleans(), TEXT, st.floats(), st.lists(NUMBERS, max_size=4), JSON_VALUES)
RECIPE_ENTRIES = st.lists(st.tuples(st.sampled_from(KEYS) | TEXT, RECIPE_VALUES), max_size=4, unique_by=lambda e: e[0])
RECIPE_TEXT = st.one_of(RECIPE_ENTRIES.map(toml_text), RECIPE_ENTRIES.map(toml_text).flatmap(
    lambda t: st.integers(0, len(t)).map(lambda n: t[:n])), st.text(max_size=40),
    st.integers(60, 20_000).map(lambda n: "x = " + "[" * n + "]" * n), st.integers(60, 3000).map(lambda n: "[" + ".".join("a" * n) + "]"))


@SETTINGS
@given(text=RECIPE_TEXT)
def test_recipe_toml_gives_a_recipe_or_a_grownet_error(text):
    recipe = in_file("r.toml", text, load_recipe)
    if recipe is not None:
        assert type(recipe).from_dict(recipe.to_dict()) == recipe


# ---- npz datasets -------------------------------------------------------------------------------------

DTYPES = st.sampled_from([np.uint8, np.int8, np.int64, np.uint64, np.float16, np.float32, np.float64, np.bool_,
                          np.complex64, np.dtype("U3"), np.dtype("M8[s]"), np.dtype("m8[s]")])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5)
ARRAYS = st.tuples(DTYPES, SHAPES).flatmap(lambda ds: hnp.arrays(ds[0], ds[1]))
IMAGES = st.tuples(st.integers(1, 6), st.sampled_from([1, 3]), st.integers(1, 5)).flatmap(
    lambda s: hnp.arrays(st.sampled_from([np.uint8, np.float32, np.int64]), (s[0], s[2], s[2], s[1])))


ODD_LABELS = hnp.arrays(st.sampled_from([np.int64, np.uint64, np.float64, np.float16]), st.integers(0, 6)) | ARRAYS
PIXELS = {np.uint8: st.integers(0, 255), np.int64: st.integers(0, 255), np.float32: st.floats(0, 1, width=32)}


@st.composite
def npz_contents(draw: Any) -> dict[str, np.ndarray]:
    """A well-formed dataset (any image dtype grownet reads, labels 0..3), then maybe one array
    replaced by an odd one (any dtype, shape or value: huge, negative, NaN), a ``classes``
    array, or a key left out."""
    channels, side, dtype = draw(st.sampled_from([1, 3])), draw(st.integers(1, 5)), draw(st.sampled_from(list(PIXELS)))
    out = {}
    for split in ("train", "test"):
        n = draw(st.integers(1, 6))
        out[f"x_{split}"] = draw(hnp.arrays(dtype, (n, side, side, channels), elements=PIXELS[dtype]))
        out[f"y_{split}"] = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 3)))
    odd = draw(st.sampled_from([None, None, "x_train", "y_train", "x_test", "y_test"]))
    if odd is not None:
        out[odd] = draw(ODD_LABELS if odd.startswith("y") else ARRAYS)
    if draw(st.booleans()):
        out["classes"] = draw(hnp.arrays(np.dtype("U4"), st.integers(0, 6)) | ARRAYS)
    drop = draw(st.sampled_from([None] * 5 + ["x_train", "y_test"]))
    return {k: v for k, v in out.items() if k != drop}


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


NPZ_BYTES = st.one_of(npz_contents().map(npz_bytes), npz_contents().map(npz_bytes).flatmap(
    lambda b: st.integers(0, len(b)).map(lambda n: b[:n])), st.binary(max_size=64))


@SETTINGS
@given(content=NPZ_BYTES)
def test_npz_datasets_give_a_dataset_or_a_grownet_error(content):
    ds = in_file("d.npz", content, lambda path: load_dataset(f"npz:{path}"))
    if ds is not None:
        assert ds.num_classes <= 1_000_000 and int(ds.y_train.max()) < ds.num_classes
        assert all(validate.check_text(c, "class") == c for c in ds.classes)


# ---- run-folder files -----------------------------------------------------------------------------------

RUN_FILES: dict[str, tuple[Callable[[Any, Any], Any], Any]] = {
    "config.json": (validate.check_config, json.loads((PUBLISHED / "config.json").read_text())),
    "summary.json": (validate.check_summary, json.loads((PUBLISHED / "summary.json").read_text())),
    "rounds.json": (validate.check_rounds, json.loads((PUBLISHED / "rounds.json").read_text())[:2]),
    "latest.json": (validate.check_manifest, {"seq": 3, "file": "ckpt-000003.pt", "sha256": "0" * 64, "bytes": 10}),
}


@pytest.mark.parametrize("name", list(RUN_FILES))
def test_run_folder_files_pass_their_check_or_give_a_grownet_error(name):
    check, doc = RUN_FILES[name]

    @SETTINGS
    @given(text=text_of(edited(doc) | JSON_VALUES))
    def prop(text: str) -> None:
        result = in_file(name, text, lambda path: validate.read_run_file(path, check, missing="gone"))
        if result is not None:
            assert result == json.loads(text)

    prop()

"""Issue 9's bad-input suite: every refusal is one line on stderr, exit status 2, no
traceback, and the file tree is left exactly as it was (nothing written, nothing overwritten).
Issue 18 adds extreme numbers and shapes (integers past 64 bits or of thousands of digits,
nesting thousands deep, nets and arrays larger than the machine's memory) and names that are
not UTF-8.

Each case builds its inputs in a fresh folder, runs ``grownet ...`` in-process through
:func:`grownet.cli.main`, and compares a snapshot of the folder (paths, sizes, SHA-256)
taken before and after. Inputs with no command-line entry point (weights files) are
checked through the Python API for their exception type and message instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from grownet.cli import main
from grownet.errors import ArchitectureError, WeightsError
from grownet.search import search

DATA = Path(__file__).resolve().parent / "data"
SEED_JSON = json.loads((DATA / "vgg_seed.json").read_text())

#: A tiny search that still writes every file: 100 of the 120 npz images train, 2 epochs.
TINY = {
    "model.seed_width": 4,
    "data.limit_train": 120,
    "data.val_size": 20,
    "data.limit_test": 20,
    "data.batch_size": 50,
    "grow.local_epochs": 1,
    "finetune.epochs": 1,
    "budget.max_rounds": 1,
}


# ---- inputs -----------------------------------------------------------------------------------


def write_npz(path: Path, *, n: int = 120, shape=(32, 32, 3), classes: int = 10, **change: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n, *shape), dtype=np.uint8),
        "y_train": np.arange(n) % classes,
        "x_test": rng.integers(0, 256, size=(20, *shape), dtype=np.uint8),
        "y_test": np.arange(20) % classes,
    }
    arrays.update(change)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def arch_json(**change) -> str:
    return json.dumps({**SEED_JSON, **change})


def arch_json_raw(key: str, raw: str) -> str:
    """The seed architecture JSON with ``key``'s value replaced by the JSON text ``raw`` (for
    values ``json.dumps`` cannot write: a 5,000-digit integer, a lone surrogate escape)."""
    return arch_json(**{key: "@RAW@"}).replace('"@RAW@"', raw)


#: A non-UTF-8 byte in a file name, as Python decodes it from a Linux path (a lone surrogate).
NOT_UTF8 = b"\xff".decode("utf-8", "surrogateescape")
DIGITS_5000 = "9" * 5000


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run folder (with checkpoints) to copy into cases that resume."""
    root = tmp_path_factory.mktemp("run")
    write_npz(root / "d.npz")
    search(f"npz:{root / 'd.npz'}", overrides=TINY, out=root / "run", device="cpu")
    return root / "run"


# ---- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``setup(tmp)`` writes the inputs; ``argv`` is formatted with ``tmp``; ``match`` must
    appear in the error line."""

    argv: tuple[str, ...]
    match: str
    setup: Callable[[Path], None] = lambda tmp: None
    needs_run: bool = False


def text(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        data = content.encode() if isinstance(content, str) else content
        (tmp / name).write_bytes(data)

    return setup


def npz(**change) -> Callable[[Path], None]:
    return lambda tmp: write_npz(tmp / "d.npz", **change)


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)

    return setup


def image_folder(*, train_images: bool) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for split in ("train", "test"):
            (tmp / "imgs" / split / "cat").mkdir(parents=True)
        if not train_images:
            return
        from PIL import Image

        Image.new("RGB", (8, 8)).save(tmp / "imgs" / "train" / "cat" / "a.png")

    return setup


def npz_named(classes: list[str]) -> Callable[[Path], None]:
    """The default .npz with a ``classes`` array of names."""

    def setup(tmp: Path) -> None:
        write_npz(tmp / "d.npz")
        with np.load(tmp / "d.npz") as arrays:
            np.savez(tmp / "d.npz", **dict(arrays), classes=np.array(classes))

    return setup


def npz_header_only(tmp: Path) -> None:
    """A .npz whose x_train header promises a 10,000,000 x 3 x 1024 x 1024 array (29 TiB) that
    the file does not hold: a compressed archive can expand that far."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**7, 3, 1024, 1024)})
    with zipfile.ZipFile(tmp / "d.npz", "w") as z:
        z.writestr("x_train.npy", header.getvalue())
        for key in ("y_train", "x_test", "y_test"):
            buf = io.BytesIO()
            np.save(buf, np.zeros(3, np.int64))
            z.writestr(f"{key}.npy", buf.getvalue())


def folder_with_class(name: bytes) -> Callable[[Path], None]:
    """An image folder whose one class folder is named by the bytes ``name``."""

    def setup(tmp: Path) -> None:
        from PIL import Image

        for split in (b"train", b"test"):
            folder = os.path.join(os.fsencode(tmp), b"imgs", split, name)
            os.makedirs(folder)
            Image.new("RGB", (8, 8)).save(os.path.join(folder, b"a.png").decode("utf-8", "surrogateescape"))

    return setup


def existing_run(tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "config.json").write_text('{"mine": true}\n')


def other_files(tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "thesis.tex").write_text("do not delete\n")


_HELD: list = []  # locks held by this process for the "in use" cases (released by the fixture below)


def held_lock(tmp: Path) -> None:
    """Hold the run lock of ``tmp/out`` (an :func:`existing_run`), as a running grownet
    process would; flock locks are per open file, so a second open is refused."""
    from grownet.runfolder import RunLock

    existing_run(tmp)
    lock = RunLock(tmp / "out")
    lock.__enter__()
    _HELD.append(lock)


@pytest.fixture(autouse=True)
def _release_held_locks():
    yield
    while _HELD:
        _HELD.pop().__exit__(None, None, None)


SEARCH = ("search", "--device", "cpu", "--out", "{tmp}/out")
SEED_ARCH = (*SEARCH, "--seed-arch", "{tmp}/a.json")
NPZ = (*SEARCH, "--dataset", "npz:{tmp}/d.npz", *(arg for key, value in TINY.items() for arg in (f"--{key}", str(value))))
NPZ_ARCH = (*SEED_ARCH, "--dataset", "npz:{tmp}/d.npz",
            *(arg for key, value in TINY.items() if key != "model.seed_width" for arg in (f"--{key}", str(value))))
RECIPE = (*SEARCH, "--recipe", "{tmp}/r.toml")

CASES: dict[str, Case] = {
    # architecture JSON (through search --seed-arch)
    "json malformed": Case(SEED_ARCH, "a.json: not valid JSON", text("a.json", '{"format": "grownet.architecture", ')),
    "json truncated": Case(SEED_ARCH, "a.json: not valid JSON", text("a.json", arch_json()[:60])),
    "json empty file": Case(SEED_ARCH, "a.json: not valid JSON", text("a.json", "")),
    "json not an object": Case(SEED_ARCH, "a.json: architecture must be a JSON object, got list", text("a.json", "[16, 32]")),
    "json wrong version": Case(SEED_ARCH, "version", text("a.json", arch_json(version=99))),
    "json wrong format": Case(SEED_ARCH, "format", text("a.json", arch_json(format="keras"))),
    "json stages wrong type": Case(SEED_ARCH, "stages", text("a.json", arch_json(stages="16,32"))),
    "json width wrong type": Case(SEED_ARCH, "stages[0][0]", text("a.json", arch_json(stages=[["16"]]))),
    "json negative width": Case(SEED_ARCH, "width must be a positive integer", text("a.json", arch_json(stages=[[16, -3]]))),
    "json zero width": Case(SEED_ARCH, "width must be a positive integer", text("a.json", arch_json(stages=[[0]]))),
    "json huge width": Case(SEED_ARCH, "width must be a positive integer <= 65536", text("a.json", arch_json(stages=[[10**9]]))),
    "json unknown family": Case(SEED_ARCH, "family", text("a.json", arch_json(family="transformer"))),
    "json missing file": Case(SEED_ARCH, "a.json", lambda tmp: None),
    # recipes
    "recipe unknown key": Case((*SEARCH, "--recipe", "{tmp}/r.toml"), "grow.taux: unknown key", text("r.toml", "[grow]\ntaux = 0.5\n")),
    "recipe unknown table": Case((*SEARCH, "--recipe", "{tmp}/r.toml"), "growth", text("r.toml", "[growth]\ntau = 0.5\n")),
    "recipe wrong type": Case((*SEARCH, "--recipe", "{tmp}/r.toml"), "optim.lr: must be a number", text("r.toml", "[optim]\nlr = 'fast'\n")),
    "recipe malformed toml": Case((*SEARCH, "--recipe", "{tmp}/r.toml"), "r.toml", text("r.toml", "[optim\nlr = 0.1\n")),
    "recipe missing file": Case((*SEARCH, "--recipe", "{tmp}/none.toml"), "none.toml", lambda tmp: None),
    "tau above 1": Case((*SEARCH, "--grow.tau", "1.5"), "grow.tau: must be in (0, 1]"),
    "tau zero": Case((*SEARCH, "--grow.tau", "0"), "grow.tau: must be in (0, 1]"),
    "min rounds above max rounds": Case((*SEARCH, "--budget.min_rounds", "3", "--max-rounds", "2"),
                                        "budget.min_rounds: 3 is more than budget.max_rounds 2"),
    "tau in the file": Case((*SEARCH, "--recipe", "{tmp}/r.toml"), "grow.tau: must be in (0, 1]", text("r.toml", "[grow]\ntau = -0.2\n")),
    "lr zero": Case((*SEARCH, "--optim.lr", "0"), "optim.lr: must be in (0, 10]"),
    "lr negative": Case((*SEARCH, "--finetune.lr", "-0.1"), "finetune.lr"),
    "negative epochs": Case((*SEARCH, "--finetune.epochs", "-1"), "finetune.epochs: must be >= 0"),
    "epochs not a number": Case((*SEARCH, "--grow.local_epochs", "abc"), "grow.local_epochs: must be an integer"),
    "unknown seed preset": Case((*SEARCH, "--seed-arch", "alexnet"), "model.seed_arch"),
    "negative seed": Case((*SEARCH, "--seed", "-1"), "--seed: must be a non-negative integer"),
    "unknown flag": Case((*SEARCH, "--grow.speed", "2"), "unrecognized arguments: --grow.speed"),
    "resume and force": Case((*SEARCH, "--resume", "--force"), "not allowed with argument"),
    # data
    "unknown dataset": Case((*SEARCH, "--dataset", "imagenet9"), "unknown dataset 'imagenet9'; known: cifar10, cifar100"),
    "npz missing": Case(NPZ, "d.npz does not exist"),
    "npz empty file": Case(NPZ, "d.npz", text("d.npz", b"")),
    "npz corrupt": Case(NPZ, "d.npz", text("d.npz", b"PK\x03\x04 not really a zip archive" * 4)),
    "npz missing key": Case(NPZ, "y_test", npz(y_test=None)),
    "npz negative labels": Case(NPZ, "y_train: label -1 is negative", npz(y_train=np.full(120, -1))),
    "npz mismatched lengths": Case(NPZ, "y_train", npz(y_train=np.arange(50) % 10)),
    "npz wrong image shape": Case(NPZ, "x_train", npz(x_train=np.zeros((120, 32), np.uint8))),
    "empty image folder": Case((*SEARCH, "--dataset", "folder:{tmp}/imgs"), "imgs", image_folder(train_images=False)),
    "folder that does not exist": Case((*SEARCH, "--dataset", "folder:{tmp}/nowhere"), "nowhere"),
    # budgets
    "max_macs below the seed": Case((*NPZ, *("--max-macs", "1000")), "budget.max_macs: 1,000 is smaller than the seed net's", npz()),
    "max_params below the seed": Case((*NPZ, *("--max-params", "10")), "budget.max_params: 10 is smaller than the seed net's", npz()),
    # output folder
    "output folder exists": Case(SEARCH, "already exists; pass --resume to continue that run or --force", existing_run),
    "force on a foreign folder": Case((*SEARCH, "--force"), "is not a grownet run folder; refusing to delete it", other_files),
    "output path under a file": Case((*SEARCH[:-1], "{tmp}/f/out"), "cannot write there (Not a directory); pass a writable --out", text("f", "x")),
    "force with bad data keeps the old run": Case((*SEARCH, "--force", "--dataset", "npz:{tmp}/missing.npz"),
                                                  "missing.npz does not exist", needs_run=True),
    # resume
    "resume a missing folder": Case((*SEARCH, "--resume"), "no such run folder to resume"),
    "resume a folder without checkpoint": Case((*SEARCH, "--resume"), "nothing to resume", existing_run),
    "resume with another config": Case((*SEARCH, "--resume", "--grow.tau", "0.9"), "another configuration", needs_run=True),
    "resume a corrupt checkpoint": Case((*SEARCH, "--resume"), "checkpoint is corrupt (SHA-256 mismatch)", needs_run=True),
    # other commands
    "report of a missing folder": Case(("report", "{tmp}/nope"), "no such run folder"),
    "report of a foreign folder": Case(("report", "{tmp}/out"), "out", other_files),
    "baseline of a missing folder": Case(("baseline", "{tmp}/nope", "--control", "seed"), "no such run folder"),
    "unknown control": Case(("baseline", "{tmp}/nope", "--control", "cousin"), "--control: must be one of scratch, uniform, random, seed, fixed_uniform, got 'cousin'"),
    "own control without its architecture file": Case(("baseline", "{tmp}/nope", "--control", "mine", "--arch", "{tmp}/none.json"),
                                                      "none.json: file not found"),
    "own control named like a built-in": Case(("baseline", "{tmp}/nope", "--control", "seed", "--arch", "{tmp}/none.json"),
                                              "--control: 'seed' is taken"),
    "tune with a bad storage URL": Case(("tune", "--trials", "1", "--out", "{tmp}/t", "--storage", "foo://x"), "unknown database 'foo'"),
    "tune with negative trials": Case(("tune", "--trials", "-2", "--out", "{tmp}/t"), "--trials"),
    "ticket epoch after the end": Case(("ticket", "--epochs", "2", "--at-epoch", "3", "--out", "{tmp}/t"), "--at-epoch: must be at most --epochs"),
    "ticket into an existing folder": Case(("ticket", "--epochs", "1", "--out", "{tmp}/out"), "already exists", existing_run),
    "ticket into a folder in use": Case(("ticket", "--epochs", "1", "--out", "{tmp}/out"), "is in use by another grownet process",
                                        held_lock),
    "search into a folder in use": Case(SEARCH, "is in use by another grownet process", held_lock),
    "ticket with a bad architecture": Case(("ticket", "--epochs", "1", "--arch", "{tmp}/a.json", "--out", "{tmp}/t"), "width must be a positive integer", text("a.json", arch_json(stages=[[-1]]))),
    # issue 18, class 1: integers past 64 bits or of thousands of digits
    "seed past 64 bits": Case((*SEARCH, "--seed", str(2**64)), "--seed: must be a non-negative integer <= 9223372036854775807"),
    "seed of 5000 digits": Case((*SEARCH, "--seed", DIGITS_5000), "--seed: must be a non-negative integer"),
    "max-macs past 64 bits": Case((*SEARCH, "--max-macs", "9" * 26), "budget.max_macs: must be at most 9223372036854775807"),
    "max-macs of 5000 digits": Case((*SEARCH, "--max-macs", DIGITS_5000), "budget.max_macs: must be an integer"),
    "epochs past 64 bits in a flag": Case((*SEARCH, "--finetune.epochs", "1" + "0" * 30), "finetune.epochs: must be at most"),
    "ticket epochs past 64 bits": Case(("ticket", "--epochs", str(2**70), "--out", "{tmp}/t"), "--epochs: must be an integer <="),
    "tune heartbeat of a century": Case(("tune", "--trials", "1", "--heartbeat", "3155760000", "--out", "{tmp}/t"),
                                        "--heartbeat: must be an integer >= 1 <= 86400"),
    "baseline epochs of 5000 digits": Case(("baseline", "{tmp}/out", "--control", "seed", "--epochs", DIGITS_5000),
                                           "--epochs: must be an integer"),
    "ddp of a million processes": Case((*SEARCH, "--ddp", "1000000"), "--ddp: must be a non-negative integer <= 1024"),
    "recipe integer past 64 bits": Case(RECIPE, "grow.local_epochs: must be at most 9223372036854775807",
                                        text("r.toml", "[grow]\nlocal_epochs = 100000000000000000000000\n")),
    "recipe integer of 5000 digits": Case(RECIPE, "r.toml: a number has more than 40 digits",
                                          text("r.toml", f"[finetune]\nepochs = {DIGITS_5000}\n")),
    "recipe float past the float range": Case(RECIPE, "budget.time_budget: must be finite",
                                              text("r.toml", "[budget]\ntime_budget = 1e999\n")),
    "json width past 64 bits": Case(SEED_ARCH, "stages[0][0]: width must be a positive integer <= 65536, got an integer of 20 digits",
                                    text("a.json", arch_json(stages=[[2**64]]))),
    "json width of 5000 digits": Case(SEED_ARCH, "a.json: a number has more than 40 digits",
                                      text("a.json", arch_json_raw("stages", f"[[{DIGITS_5000}]]"))),
    "json version of 41 digits": Case(SEED_ARCH, "a.json: a number has more than 40 digits",
                                      text("a.json", arch_json_raw("version", "1" * 41))),
    # nesting thousands of levels deep
    "json nested 100000 deep": Case(SEED_ARCH, "a.json: nested deeper than 64 levels",
                                    text("a.json", arch_json_raw("meta", "[" * 100_000 + "]" * 100_000))),
    "json meta nested 100 deep": Case(SEED_ARCH, "a.json: nested deeper than 64 levels",
                                      text("a.json", arch_json_raw("meta", '{"a":' * 100 + "1" + "}" * 100))),
    "toml arrays nested 5000 deep": Case(RECIPE, "r.toml: nested deeper than 64 levels",
                                         text("r.toml", "[grow]\ntau = " + "[" * 5000 + "]" * 5000 + "\n")),
    "tune table nested 5000 deep": Case(("tune", "--trials", "1", "--out", "{tmp}/t", "--recipe", "{tmp}/r.toml", "--tune.lr", "0.1,0.2"),
                                        "r.toml: nested deeper than 64 levels",
                                        text("r.toml", "[tune]\nlr = " + "[" * 5000 + "]" * 5000 + "\n")),
    "toml tables nested 3000 deep": Case(RECIPE, "r.toml: nested deeper than 64 levels",
                                         text("r.toml", "[" + ".".join(["grow"] * 3000) + "]\n")),
    # nets and arrays larger than the machine
    # --max-macs 0: without --recipe the CPU default's 28M MACs budget would refuse these first
    "json net needing terabytes": Case((*NPZ_ARCH, "--max-macs", "0"), "the net has 2,435,257,270,282 parameters",
                                       both(npz(), text("a.json", arch_json(stages=[[65536] * 64])))),
    "preset far too wide": Case((*NPZ, "--max-macs", "0", "--model.seed_width", "65536"), "parameters, needing", npz()),
    "npz label past a million classes": Case(NPZ, "y_train: label 1099511627776 is too large",
                                             npz(y_train=np.where(np.arange(120) == 7, 2**40, np.arange(120) % 10))),
    "npz uint64 label": Case(NPZ, "y_test: label 18446744073709551615 is too large",
                             npz(y_test=np.full(20, 2**64 - 1, dtype=np.uint64))),
    "npz float label of 1e300": Case(NPZ, "y_train: label 1e+300 is too large", npz(y_train=np.full(120, 1e300))),
    "npz array header of 29 TiB": Case(NPZ, "x_train is a 10000000x3x1024x1024 uint8 array", npz_header_only),
    "json seed too big at the batch size": Case((*NPZ_ARCH, "--data.batch_size", "65536"), "at batch size 65536, more than",
                                                both(npz(), text("a.json", arch_json(stages=[[4096], [16], [16, 16], [16, 16], [16, 16]])))),
    "preset too big at the batch size": Case((*SEARCH, "--model.seed_width", "256", "--data.batch_size", "65536"),
                                             "lower data.batch_size"),
    # issue 18, class 3: names
    "output folder not UTF-8": Case((*SEARCH[:-1], "{tmp}/run" + NOT_UTF8), "/run\\udcff' is not valid UTF-8"),
    "npz path not UTF-8": Case((*SEARCH, "--dataset", "npz:{tmp}/d" + NOT_UTF8 + ".npz"), "is not valid UTF-8"),
    "recipe path not UTF-8": Case((*SEARCH, "--recipe", "{tmp}/r" + NOT_UTF8 + ".toml"), "is not valid UTF-8"),
    "output folder with a newline": Case((*SEARCH[:-1], "{tmp}/a\nb"), "holds a control character (newline, tab, NUL...)"),
    "report of a folder not UTF-8": Case(("report", "{tmp}/run" + NOT_UTF8), "is not valid UTF-8"),
    "image class folder not UTF-8": Case((*SEARCH, "--dataset", "folder:{tmp}/imgs"), "class folder", folder_with_class(b"c\xffat")),
    "npz class name not UTF-8": Case(NPZ, "classes[3]", npz_named(["c0", "c1", "c2", "c" + NOT_UTF8] + [f"c{i}" for i in range(4, 10)])),
    "json text not Unicode": Case(SEED_ARCH, "is not valid Unicode", text("a.json", arch_json_raw("meta", '{"note": "\\udcff"}'))),
}


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder under ``root``: size and SHA-256 (folders: -1, "")."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = (-1, "") if path.is_dir() else (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def test_the_suite_has_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, tmp_path, capsys, request):
    case = CASES[name]
    case.setup(tmp_path)
    if case.needs_run:
        shutil.copytree(request.getfixturevalue("finished_run"), tmp_path / "out")
        if "corrupt" in name:
            manifest = json.loads((tmp_path / "out" / "checkpoints" / "latest.json").read_text())
            ckpt = tmp_path / "out" / "checkpoints" / manifest["file"]
            data = bytearray(ckpt.read_bytes())
            data[len(data) // 2] ^= 0xFF
            ckpt.write_bytes(bytes(data))
    assert_refused([arg.format(tmp=tmp_path) for arg in case.argv], case.match, tmp_path, capsys)


def assert_refused(argv: list[str], match: str, root: Path, capsys) -> None:
    """``grownet argv`` exits 2 with one error line holding ``match``, no traceback, and
    ``root`` unchanged."""
    before = snapshot(root)
    capsys.readouterr()

    rc = main(argv)

    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("grownet: error: "), err
    assert match in lines[0], lines[0]
    # a 5,000-digit number or a 100,000-level file is not echoed (the test folder's own path, whose
    # length depends on the machine and on pytest-xdist, does not count)
    assert len(lines[0].replace(str(root), "<tmp>")) < 400, lines[0]
    assert "Traceback" not in err + out
    assert snapshot(root) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; 'output path under a file' covers this case")
def test_read_only_output_folder_is_refused(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        rc = main(["search", "--quiet", "--out", str(parent / "run")])
    finally:
        parent.chmod(0o755)
    assert rc == 2
    assert "cannot write there (Permission denied); pass a writable --out" in capsys.readouterr().err
    assert list(parent.iterdir()) == []


def test_data_missing_and_download_impossible_names_the_folder_and_the_flag(tmp_path, capsys, monkeypatch):
    import grownet.data._named as named

    def offline(name: str, data_dir: Path) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(named, "_download", offline)  # the one network call: this machine has none
    (tmp_path / "empty").mkdir()
    rc = main(["search", "--quiet", "--dataset", "cifar10", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"no data found in {tmp_path / 'empty'}" in err and "pass --data-dir DIR" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_debug_shows_the_traceback(tmp_path, capsys):
    rc = main(["search", "--quiet", "--debug", "--grow.tau", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" in err and err.rstrip().endswith("grownet: error: grow.tau: must be in (0, 1], got 2")


# ---- weights (Python API: no command reads a weights file) -----------------------------------


def seed_arch_file(tmp: Path) -> Path:
    path = tmp / "a.json"
    path.write_text(arch_json())
    return path


def test_weights_of_another_architecture_do_not_fit(tmp_path):
    import grownet

    wider = grownet.load_model(json.loads(arch_json(stages=[[24], [16], [16, 16], [16, 16], [16, 16]])))
    grownet.save_model(wider, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match=r"stages\.0\.0\.conv\.weight: expected shape \(16, 3, 3, 3\), found \(24, 3, 3, 3\)"):
        grownet.load_model(seed_arch_file(tmp_path), tmp_path / "w.pt")


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage", None], ids=["empty", "garbage", "truncated"])
def test_unreadable_weights_files(tmp_path, content):
    import grownet

    path = tmp_path / "w.pt"
    if content is None:
        grownet.save_model(grownet.load_model(seed_arch_file(tmp_path)), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match="w.pt"):
        grownet.load_model(seed_arch_file(tmp_path), path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_weights_with_pickled_code_are_refused_without_running_it(tmp_path):
    import grownet

    path = tmp_path / "w.pt"
    torch.save({"x": _Payload()}, path)
    assert pickle.dumps(_Payload())  # the payload really is executable pickle
    with pytest.raises(WeightsError, match="w.pt"):
        grownet.load_model(seed_arch_file(tmp_path), path)


def test_architecture_errors_name_the_field_through_the_api(tmp_path):
    import grownet

    path = tmp_path / "a.json"
    path.write_text(arch_json(num_classes=0))
    with pytest.raises(ArchitectureError, match="num_classes"):
        grownet.load_model(path)


# ---- names that are legitimate (issue 18, class 3) ---------------------------------------------------


def test_run_folders_named_with_mathtext_characters_are_compared_and_reported(tmp_path, capsys):
    """matplotlib would parse ``$...$`` in a label as mathtext (an unbalanced ``$x^{`` raises
    inside savefig); grownet's figures draw every label as plain text."""
    import html

    from _runfolder import write_synthetic_run

    names = ("a$x^{$b_", "$\\frac{", "50$ & $5")
    runs = [write_synthetic_run(tmp_path / name) for name in names]
    assert main(["compare", *map(str, runs), "--out", str(tmp_path / "c.html"), "--quiet"]) == 0, capsys.readouterr().err
    page = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert all(html.escape(name, quote=False) in page for name in names)
    assert main(["report", str(runs[0]), "--quiet"]) == 0, capsys.readouterr().err
    assert (runs[0] / "report.html").is_file()


# ---- issue 18, class 2: files grownet reads back from its own run folders ------------------------------
#
# Each case edits a copy of a finished run (``{tmp}/out``) the way a hand edit or a damaged disk
# would, then runs a command that reads it back: the refusal names the file and the field.


def edit_json(name: str, change: Callable[[object], object]) -> Callable[[Path], None]:
    """Rewrite ``out/<name>`` as ``change(parsed content)`` (which may edit it in place)."""

    def edit(tmp: Path) -> None:
        path = tmp / "out" / name
        data = json.loads(path.read_text())
        data = change(data) or data
        path.write_text(json.dumps(data))

    return edit


def set_key(name: str, key: str, value: object) -> Callable[[Path], None]:
    """Set the top-level ``key`` of ``out/<name>`` (a ``.``-path for nested objects)."""

    def change(data: dict) -> None:
        *parents, last = key.split(".")
        for k in parents:
            data = data[k]
        data[last] = value

    return edit_json(name, change)


def raw_key(name: str, key: str, raw: str) -> Callable[[Path], None]:
    """Set ``key`` of ``out/<name>`` to the raw JSON text ``raw`` (past what json.dumps writes)."""

    def edit(tmp: Path) -> None:
        set_key(name, key, "@RAW@")(tmp)
        path = tmp / "out" / name
        path.write_text(path.read_text().replace('"@RAW@"', raw))

    return edit


def control_summary(raw: str) -> Callable[[Path], None]:
    def edit(tmp: Path) -> None:
        (tmp / "out" / "controls" / "seed").mkdir(parents=True)
        (tmp / "out" / "controls" / "seed" / "summary.json").write_text(raw)

    return edit


def rehashed_payload(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit the latest checkpoint's payload and write a manifest that matches it (a checksum
    cannot catch this: the content itself must be checked)."""

    def edit(tmp: Path) -> None:
        import io

        folder = tmp / "out" / "checkpoints"
        manifest = json.loads((folder / "latest.json").read_text())
        payload = torch.load(folder / manifest["file"], weights_only=True)
        change(payload)
        buf = io.BytesIO()
        torch.save(payload, buf)
        (folder / manifest["file"]).write_bytes(buf.getvalue())
        manifest.update(sha256=hashlib.sha256(buf.getvalue()).hexdigest(), bytes=len(buf.getvalue()))
        (folder / "latest.json").write_text(json.dumps(manifest))

    return edit


def study_of(edit: Callable[[Path], None] | None) -> Callable[[Path], None]:
    """A one-seed study folder ``{tmp}/st`` whose ``seed-0`` is the finished run (after ``edit``)
    and whose study.json matches the command below."""

    def setup(tmp: Path) -> None:
        from grownet.recipe import resolve_recipe

        if edit is not None:
            edit(tmp)
        config = json.loads((tmp / "out" / "config.json").read_text())
        (tmp / "st").mkdir()
        shutil.copytree(tmp / "out", tmp / "st" / "seed-0")
        study = {"dataset": config["dataset"], "recipe": resolve_recipe(None, TINY).to_dict(), "data_dir": None}
        (tmp / "st" / "study.json").write_text(json.dumps(study))

    return setup


def study_json(raw: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / "st").mkdir()
        (tmp / "st" / "study.json").write_text(raw)

    return setup


RESUME = ("search", "--quiet", "--device", "cpu", "--out", "{tmp}/out", "--resume")
STUDY = ("study", "--quiet", "--device", "cpu", "--dataset", "{dataset}", "--out", "{tmp}/st", "--seeds", "1",
         *(arg for key, value in TINY.items() for arg in (f"--{key}", str(value))))
NUL_NAME = "ckpt\0.pt"

RUN_FILE_CASES: dict[str, Case] = {
    # report
    "summary accuracy a string": Case(("report", "{tmp}/out"), "summary.json: val_acc: must be a number, got 'high'",
                                      set_key("summary.json", "val_acc", "high")),
    "summary MACs past 64 bits": Case(("report", "{tmp}/out"), "summary.json: macs: must be an integer in [0, 9223372036854775807]",
                                      set_key("summary.json", "macs", 2**64)),
    "summary MACs of 5000 digits": Case(("report", "{tmp}/out"), "summary.json: a number has more than 40 digits",
                                        raw_key("summary.json", "macs", DIGITS_5000)),
    "summary final_arch invalid": Case(("report", "{tmp}/out"), "summary.json: final_arch", set_key("summary.json", "final_arch.stages", "x")),
    "rounds nested 100000 deep": Case(("report", "{tmp}/out"), "rounds.json: nested deeper than 64 levels",
                                      text("out/rounds.json", "[" * 100_000 + "]" * 100_000)),
    "rounds width a string": Case(("report", "{tmp}/out"), "rounds.json: rounds[0].layers[0].width: must be an integer",
                                  edit_json("rounds.json", lambda r: r[0]["layers"][0].update(width="16"))),
    "rounds trace step a string": Case(("report", "{tmp}/out"), "rounds[0].signal.trace[0].step: must be an integer",
                                       edit_json("rounds.json", lambda r: r[0].update(signal={"trace": [{"step": "x", "activity": {}}]}))),
    "config seed a string": Case(("report", "{tmp}/out"), "config.json: seed: must be an integer, got 'x'", set_key("config.json", "seed", "x")),
    "config text not Unicode": Case(("report", "{tmp}/out"), "config.json: text '\\udcff' is not valid Unicode",
                                    raw_key("config.json", "command", '"\\udcff"')),
    "control summary infinite": Case(("report", "{tmp}/out"), "controls/seed/summary.json: test_acc: must be a finite number",
                                     control_summary('{"test_acc": 1e999}')),
    "history with a NUL byte": Case(("report", "{tmp}/out"), "history.csv",
                                    lambda tmp: (tmp / "out" / "history.csv").write_bytes(b"round,epoch\0\n" + b"x" * 200_000)),
    # search --resume
    "manifest file name with NUL": Case(RESUME, "latest.json: file: must be a plain file name", set_key("checkpoints/latest.json", "file", NUL_NAME)),
    "manifest file name a path": Case(RESUME, "latest.json: file: must be a plain file name",
                                      set_key("checkpoints/latest.json", "file", "../../etc/passwd")),
    "manifest seq a string": Case(RESUME, "latest.json: seq: must be an integer", set_key("checkpoints/latest.json", "seq", "7")),
    "manifest seq past 64 bits": Case(RESUME, "latest.json: seq: must be an integer in [1,", set_key("checkpoints/latest.json", "seq", 2**70)),
    "manifest nested deep": Case(RESUME, "latest.json: nested deeper than 64 levels",
                                 raw_key("checkpoints/latest.json", "sha256", "[" * 5000 + "]" * 5000)),
    "resume config seed past 64 bits": Case(RESUME, "config.json: seed: must be an integer in [0,", set_key("config.json", "seed", 2**64)),
    "resume config recipe wrong type": Case(RESUME, "config.json: recipe.optim.lr: must be a number", set_key("config.json", "recipe.optim.lr", "fast")),
    "resume config not an object": Case(RESUME, "config.json: file: must be an object", text("out/config.json", "[1, 2]")),
    "resume with its dataset gone": Case(RESUME, "gone.npz does not exist",  # refused after the log opened
                                         set_key("config.json", "dataset", "npz:/nonexistent/gone.npz")),
    "payload state epoch a string": Case(RESUME, "checkpoint.state.epoch: must be an integer",
                                         rehashed_payload(lambda p: p["state"].update(epoch="x"))),
    "payload with an unknown state field": Case(RESUME, "checkpoint.state.bogus: unknown field",
                                                rehashed_payload(lambda p: p["state"].update(bogus=1))),
    "payload weights of another shape": Case(RESUME, "checkpoint.model does not fit checkpoint.arch",
                                             rehashed_payload(lambda p: p["model"].update({k: torch.zeros(1) for k in list(p["model"])[:1]}))),
    "payload model not tensors": Case(RESUME, "checkpoint.model.", rehashed_payload(lambda p: p["model"].update(x="y"))),
    "payload loader epoch negative": Case(RESUME, "checkpoint.loader.epoch: must be an integer in [0,",
                                          rehashed_payload(lambda p: p["loader"].update(epoch=-5))),
    # baseline, export, study
    "baseline: summary epochs a string": Case(("baseline", "{tmp}/out", "--control", "seed", "--device", "cpu"),
                                              "summary.json: epochs: must be an integer", set_key("summary.json", "epochs", "9")),
    "baseline: seed_arch not an architecture": Case(("baseline", "{tmp}/out", "--control", "seed", "--device", "cpu"),
                                                    "summary.json: seed_arch", set_key("summary.json", "seed_arch", {"format": "keras"})),
    "export: config recipe wrong type": Case(("export", "{tmp}/out", "--format", "torchscript"), "config.json: recipe.optim.lr: must be a number",
                                             set_key("config.json", "recipe.optim.lr", "fast")),
    "export: config nested deep": Case(("export", "{tmp}/out", "--format", "torchscript"), "config.json: nested deeper than 64 levels",
                                       raw_key("config.json", "versions", "[" * 100_000 + "]" * 100_000)),
    "study: study.json nested deep": Case(STUDY, "study.json: nested deeper than 64 levels", study_json("[" * 100_000 + "]" * 100_000)),
    "study: study.json with a huge number": Case(STUDY, "study.json: a number has more than 40 digits", study_json(f"[{DIGITS_5000}]")),
    "study: a seed's summary accuracy a string": Case(STUDY, "seed-0/summary.json: test_acc: must be a number",
                                                     study_of(set_key("summary.json", "test_acc", "high"))),
    "study: a seed's summary without final_arch": Case(STUDY, "seed-0/summary.json: final_arch: missing",
                                                      study_of(edit_json("summary.json", lambda s: s.pop("final_arch") and None))),
}


@pytest.mark.parametrize("name", list(RUN_FILE_CASES))
def test_an_edited_run_file_is_one_line_exit_2_and_changes_nothing(name, tmp_path, capsys, finished_run):
    case = RUN_FILE_CASES[name]
    shutil.copytree(finished_run, tmp_path / "out")
    dataset = json.loads((tmp_path / "out" / "config.json").read_text())["dataset"]
    case.setup(tmp_path)
    assert_refused([arg.format(tmp=tmp_path, dataset=dataset) for arg in case.argv], case.match, tmp_path, capsys)


# ---- the Python API's boundary (issue 18): names and numbers refused before any work ---------------------


def api_calls(tmp: Path, run: Path) -> dict[str, tuple[Callable[[], object], str]]:
    """One call per public entry point with a bad ``out``/``RUN_DIR`` name or number, and the
    message it must give."""
    from grownet.baseline import run_control
    from grownet.compare import write_compare
    from grownet.report import write_report
    from grownet.study import run_study
    from grownet.ticket import ticket
    from grownet.tune import tune

    bad = str(tmp / ("x" + NOT_UTF8))
    utf8, control = "is not valid UTF-8", "holds a control character"
    seed = "--seed: must be an integer"
    return {
        "search out": (lambda: search("cifar10", out=bad, device="cpu"), utf8),
        "search seed": (lambda: search("cifar10", out=tmp / "o", seed=2**64, device="cpu"), seed),
        "search seed a string": (lambda: search("cifar10", out=tmp / "o", seed="3", device="cpu"), seed),
        "control run_dir": (lambda: run_control(str(run) + "\n", "seed", device="cpu"), control),
        "control epochs": (lambda: run_control(run, "seed", epochs=2**70, device="cpu"),
                           "--epochs: must be an integer in [1, 9223372036854775807]"),
        "ticket out": (lambda: ticket("vgg", epochs=1, out=tmp / "a\tb", device="cpu"), control),
        "ticket seed": (lambda: ticket("vgg", epochs=1, seed=2**64, out=tmp / "o", device="cpu"), seed),
        "tune out": (lambda: tune(trials=1, out=bad, device="cpu"), utf8),
        "tune seed": (lambda: tune(trials=1, seed=-1, out=tmp / "o", device="cpu"), seed),
        "report run_dir": (lambda: write_report(bad), utf8),
        "report out": (lambda: write_report(run, out=bad + ".html"), utf8),
        "compare out": (lambda: write_compare([run], bad + ".html"), utf8),
        "compare run_dir": (lambda: write_compare([str(run) + "\n"], tmp / "c.html"), control),
        "study out": (lambda: run_study("cifar10", out=bad, device="cpu"), utf8),
        "study seeds": (lambda: run_study("cifar10", out=tmp / "o", seeds=2**64, device="cpu"),
                        "--seeds: must be an integer in [1, 100]"),
    }


@pytest.mark.parametrize("name", list(api_calls(Path("/t"), Path("/r"))))
def test_the_python_api_refuses_bad_names_and_numbers_before_any_work(name, tmp_path, finished_run):
    from grownet.errors import UsageError

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = snapshot(tmp_path)
    call, match = api_calls(tmp_path, run)[name]
    with pytest.raises(UsageError) as info:
        call()
    assert match in str(info.value)
    assert snapshot(tmp_path) == before


def test_a_control_too_big_for_its_batch_size_is_refused_before_its_folder_is_made(tmp_path, capsys):
    """A run whose grown net is fine at batch 1 but whose control cannot train at its recipe's
    data.batch_size (65536 images): refused before controls/ exists."""
    from _runfolder import write_synthetic_run

    from grownet.arch import Architecture

    run = write_synthetic_run(tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["recipe"]["data"]["batch_size"] = 65536
    (run / "config.json").write_text(json.dumps(config))
    wide = Architecture.from_dict(json.loads(arch_json(stages=[[4096], [16], [16, 16], [16, 16], [16, 16]])))
    wide.save(run / "architecture.json")
    assert_refused(["baseline", str(run), "--control", "scratch", "--device", "cpu"], "at batch size 65536, more than",
                   tmp_path, capsys)
    assert not (run / "controls").exists()


def test_a_ticket_too_big_for_its_batch_size_is_refused_before_its_folder_is_made(tmp_path):
    from grownet.ticket import ticket

    arch = json.loads(arch_json(stages=[[4096], [16], [16, 16], [16, 16], [16, 16]]))
    with pytest.raises(ArchitectureError, match="at batch size 65536, more than"):
        ticket(arch, epochs=1, overrides={"data.batch_size": 65536}, out=tmp_path / "t", device="cpu")
    assert list(tmp_path.iterdir()) == []


# ---- class 6 (issue 18): a storage URL's password never reaches the output --------------------------------


@pytest.mark.parametrize("url", [
    "postgresql://tuner:Zq9x@Kw7v/pLm3@db.example:5432/grownet",  # an unencoded '@' and '/' in the password
    "postgresql://tuner:Hx7q@Yz:R2d4@db.example/grownet",  # '@' and ':'
    "postgresql://tuner:hunter2@db.example:notaport/grownet",  # a port that is not a number
])
def test_a_hostile_storage_url_is_one_line_without_its_password(tmp_path, capsys, url):
    password = url.split("://tuner:", 1)[1].rsplit("@db.example", 1)[0]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["tune", "--dataset", "cifar10", "--trials", "1", "--storage", url, "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grownet: error: --storage: ") and "Traceback" not in captured.err
    for piece in {password, *password.replace("@", " ").replace(":", " ").replace("/", " ").split()} - {""}:
        assert piece not in captured.err + captured.out, piece
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written

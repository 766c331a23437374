"""Carry the CIFAR-10 copy to a lent GPU machine, losslessly, in parts that fit its tool.

The device tool moves at most 64 MiB of working tree per call and CIFAR-10's python batches
are 184 MB, so the pixels travel as lzma-compressed residuals of a lossless predictor (each
image's 2-D finite difference, left + up - up-left, then R and B taken relative to G, all mod
256: 56% of the raw size), split into parts that each fit one call; ``unpack`` on the
device inverts it (2-D cumulative sums mod 256) and writes ``cifar-10-batches-py`` as
grownet's reader expects (``data``, ``labels``, ``filenames``, ``batch_label`` per batch;
``batches.meta`` copied byte for byte). ``check`` compares an unpacked folder with the
original array by array.

    python reports/device-runs/cifar_pack.py pack ../shared/data/cifar-10-batches-py .gpu --parts 2
    python3 reports/device-runs/cifar_pack.py unpack .gpu/cifar10-part*.xz /tmp/data/cifar-10-batches-py
    python reports/device-runs/cifar_pack.py check ../shared/data/cifar-10-batches-py /tmp/data/cifar-10-batches-py
"""

from __future__ import annotations

import argparse
import io
import lzma
import pickle
import sys
from pathlib import Path

import numpy as np

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
FILES = [*TRAIN, "test_batch"]


def _read(folder: Path, name: str) -> dict:
    with open(folder / name, "rb") as fh:
        return pickle.load(fh, encoding="latin1")  # as grownet reads them: str keys


def residuals(x: np.ndarray) -> np.ndarray:
    """uint8 images (N, 3, 32, 32) -> uint8 residuals of the same shape (arithmetic mod 256)."""
    r = np.diff(x, axis=-1, prepend=np.uint8(0))  # x[j] - x[j-1], uint8 wraps
    r = np.diff(r, axis=-2, prepend=np.uint8(0))  # ... - (x[i-1, j] - x[i-1, j-1])
    r[:, 0] -= r[:, 1]
    r[:, 2] -= r[:, 1]
    return r


def images(r: np.ndarray) -> np.ndarray:
    """The inverse of :func:`residuals`."""
    r = r.copy()
    r[:, 0] += r[:, 1]
    r[:, 2] += r[:, 1]
    return np.cumsum(np.cumsum(r, axis=-2, dtype=np.uint8), axis=-1, dtype=np.uint8)


def pack(src: Path, out: Path, parts: int) -> None:
    batches = {name: _read(src, name) for name in FILES}
    x = np.concatenate([batches[n]["data"] for n in FILES]).reshape(-1, 3, 32, 32)
    assert np.array_equal(images(residuals(x)), x)
    meta = {
        "files": FILES,
        "labels": {n: list(batches[n]["labels"]) for n in FILES},
        "filenames": {n: list(batches[n]["filenames"]) for n in FILES},
        "batch_label": {n: batches[n]["batch_label"] for n in FILES},
        "batches.meta": (src / "batches.meta").read_bytes(),
        "images": len(x),
        "parts": parts,
    }
    r = residuals(x)
    out.mkdir(parents=True, exist_ok=True)
    for k, chunk in enumerate(np.array_split(r, parts)):
        buf = io.BytesIO()
        np.save(buf, chunk)
        payload = {"part": k, "array": buf.getvalue(), **(meta if k == 0 else {})}
        data = lzma.compress(pickle.dumps(payload, protocol=4), preset=9 | lzma.PRESET_EXTREME)
        path = out / f"cifar10-part{k}.xz"
        path.write_bytes(data)
        print(f"{path}: {len(data) / 2**20:.1f} MiB")


def _text(v: str | bytes) -> str:
    """A python-2 string of the original batches as grownet's reader decodes it (latin-1)."""
    return v.decode("latin1") if isinstance(v, bytes) else v


def unpack(paths: list[Path], dest: Path) -> None:
    loaded = sorted((pickle.loads(lzma.decompress(p.read_bytes())) for p in paths), key=lambda d: d["part"])
    meta = loaded[0]
    if [d["part"] for d in loaded] != list(range(meta["parts"])):
        raise SystemExit(f"need parts 0..{meta['parts'] - 1}, got {[d['part'] for d in loaded]}")
    x = images(np.concatenate([np.load(io.BytesIO(d["array"])) for d in loaded])).reshape(meta["images"], -1)
    dest.mkdir(parents=True, exist_ok=True)
    start = 0
    for name in meta["files"]:
        n = len(meta["labels"][name])
        batch = {"batch_label": _text(meta["batch_label"][name]), "labels": meta["labels"][name],
                 "data": x[start:start + n], "filenames": [_text(f) for f in meta["filenames"][name]]}
        with open(dest / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=4)
        start += n
    (dest / "batches.meta").write_bytes(meta["batches.meta"])
    print(f"{dest}: {start} images in {len(meta['files'])} files")


def check(a: Path, b: Path) -> None:
    for name in FILES:
        x, y = _read(a, name), _read(b, name)
        for key in ("data", "labels", "filenames", "batch_label"):
            same = np.array_equal(x[key], y[key]) if key == "data" else x[key] == y[key]
            if not same:
                raise SystemExit(f"{name}: {key!r} differs")
    if (a / "batches.meta").read_bytes() != (b / "batches.meta").read_bytes():
        raise SystemExit("batches.meta differs")
    print(f"{b}: identical to {a} ({len(FILES)} batches, every key)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--parts", type=int, default=2)
    u = sub.add_parser("unpack")
    u.add_argument("parts", type=Path, nargs="+")
    u.add_argument("dest", type=Path)
    c = sub.add_parser("check")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.src, args.out, args.parts)
    elif args.cmd == "unpack":
        unpack(args.parts, args.dest)
    else:
        check(args.a, args.b)
    return 0


if __name__ == "__main__":
    sys.exit(main())

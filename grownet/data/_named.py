"""Readers for the named datasets, in the on-disk layouts torchvision downloads.

Files are parsed here (not through torchvision's dataset classes) so that a local copy is
checked for structure (keys, shapes, dtype, label range, counts) rather than only for the
md5 of the official download; torchvision is used only to download what is missing.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from ._dataset import describe
from ._torchvision import import_torchvision

__all__ = ["KNOWN_DATASETS", "read_named"]

log = logging.getLogger(__name__)

#: Dataset names :func:`~grownet.data.load_dataset` accepts besides ``folder:PATH`` and ``npz:PATH``.
KNOWN_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "svhn", "mnist", "fashion-mnist")

Arrays = tuple[Tensor, Tensor, Tensor, Tensor, list[str], str]  # x_train, y_train, x_test, y_test, classes, source

_FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


@dataclass(frozen=True)
class _Cifar:
    folder: str
    train: tuple[tuple[str, str], ...]  # (file, official md5)
    test: tuple[tuple[str, str], ...]
    meta: tuple[str, str, str]  # (file, official md5, key of the class names)
    label_key: str
    num_classes: int
    per_file: dict[str, int] = field(default_factory=dict)  # images in each official file


_CIFAR = {
    "cifar10": _Cifar(
        folder="cifar-10-batches-py",
        train=(
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        test=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888", "label_names"),
        label_key="labels",
        num_classes=10,
        per_file={f"data_batch_{i}": 10000 for i in range(1, 6)} | {"test_batch": 10000},
    ),
    "cifar100": _Cifar(
        folder="cifar-100-python",
        train=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta=("meta", "7973b15100ade9c7d40fb424638fde48", "fine_label_names"),
        label_key="fine_labels",
        num_classes=100,
        per_file={"train": 50000, "test": 10000},
    ),
}


def read_named(name: str, data_dir: Path, *, download: bool, limit_train: int | None, limit_test: int | None) -> Arrays:
    """Read dataset ``name`` (one of :data:`KNOWN_DATASETS`) from ``data_dir``, downloading
    it there first when it is missing and ``download`` is true."""
    reader, candidates, marker, describe_layout = _LAYOUTS[name]
    folder = _locate(candidates(data_dir), marker)
    if folder is None:
        looked = [str(p) for p in candidates(data_dir)]
        searched = ", ".join(looked[:-1]) + " or " + looked[-1]
        hint = f"pass --data-dir DIR where DIR holds {describe_layout}"
        if not download:
            raise DataError(f"{name}: no data found in {searched} (downloads are off); {hint}")
        try:
            _download(name, data_dir)
        except Exception as exc:  # noqa: BLE001 - any download failure becomes one DataError
            raise DataError(
                f"{name}: no data found in {searched} and the download failed ({describe(exc)}); {hint}"
            ) from None
        folder = _locate(candidates(data_dir), marker)
        if folder is None:
            raise DataError(f"{name}: the download finished but {searched} still holds no {marker}; {hint}")
    return reader(name, folder, limit_train, limit_test)


def _locate(candidates: list[Path], marker: str) -> Path | None:
    for folder in candidates:
        if (folder / marker).is_file() or (folder / f"{marker}.gz").is_file():
            return folder
    return None


# ---- CIFAR ------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only: a data file cannot run code."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a data file")


def _unpickle(name: str, path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"{name}: {path} is missing; the folder is incomplete, replace it with a full copy") from None
    except Exception as exc:  # noqa: BLE001 - a truncated/corrupt pickle can raise nearly anything
        raise DataError(
            f"{name}: cannot read {path}, truncated or corrupt ({describe(exc)}); replace it with a good copy"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"{name}: {path} holds a {type(obj).__name__}, expected a dict; the file is not in the CIFAR python "
            "layout"
        )
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_cifar_file(name: str, spec: _Cifar, path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(name, path)
    for key in ("data", spec.label_key):
        if key not in batch:
            raise DataError(
                f"{name}: {path} has no {key!r} entry (keys: {', '.join(map(str, batch))}); not the CIFAR python "
                "layout"
            )
    data, labels = batch["data"], batch[spec.label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{name}: {path}: 'data' must be uint8 of shape (N, 3072), got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{name}: {path}: {spec.label_key!r} must be a list of integers") from None
    if labels.shape != (len(data),):
        raise DataError(f"{name}: {path}: {len(data)} images but {spec.label_key!r} has shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(f"{name}: {path}: label {bad} out of range; labels must be in [0, {spec.num_classes})")
    expected = spec.per_file.get(path.name)
    if expected is not None and len(data) != expected:
        raise DataError(
            f"{name}: {path} holds {len(data)} images, the official file holds {expected}; replace it with a full "
            "copy"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar_split(
    name: str, spec: _Cifar, folder: Path, files: tuple[tuple[str, str], ...], limit: int | None, changed: list[str]
) -> tuple[Tensor, Tensor]:
    """Images and labels of ``files`` in order, up to ``limit``; appends files whose md5
    differs from the official one to ``changed``."""
    xs, ys, count = [], [], 0
    for filename, md5 in files:
        if limit is not None and count >= limit:
            break
        path = folder / filename
        data, labels = _read_cifar_file(name, spec, path)
        if _md5(path) != md5:
            changed.append(filename)
        xs.append(data)
        ys.append(labels)
        count += len(data)
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(xs)[:limit]))
    y = torch.from_numpy(np.concatenate(ys)[:limit])
    return x, y


def _read_cifar(name: str, folder: Path, limit_train: int | None, limit_test: int | None) -> Arrays:
    spec = _CIFAR[name]
    meta_file, meta_md5, meta_key = spec.meta
    meta = _unpickle(name, folder / meta_file)
    classes = meta.get(meta_key)
    if not isinstance(classes, list) or len(classes) != spec.num_classes:
        raise DataError(f"{name}: {folder / meta_file}: {meta_key!r} must list {spec.num_classes} class names")
    changed = [] if _md5(folder / meta_file) == meta_md5 else [meta_file]
    x_train, y_train = _read_cifar_split(name, spec, folder, spec.train, limit_train, changed)
    x_test, y_test = _read_cifar_split(name, spec, folder, spec.test, limit_test, changed)
    if changed:
        log.warning(
            "%s: %s differs from the official archive (md5 of %s); accepted after a structure check "
            "(keys, shapes, dtype, label range, counts)", name, folder, ", ".join(changed),
        )
    return x_train, y_train, x_test, y_test, [str(c) for c in classes], str(folder)


# ---- MNIST / Fashion-MNIST (idx files) ----------------------------------------------------


def _read_idx(name: str, folder: Path, stem: str, ndim: int) -> np.ndarray:
    path = folder / stem
    if not path.is_file() and (folder / f"{stem}.gz").is_file():
        path = folder / f"{stem}.gz"
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"{name}: {folder / stem} is missing; the folder is incomplete, replace it with a full copy"
        ) from None
    except (OSError, EOFError) as exc:
        raise DataError(
            f"{name}: cannot read {path}, truncated or corrupt ({describe(exc)}); replace it with a good copy"
        ) from None
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        raise DataError(f"{name}: {path} is not an idx file of {ndim}-D unsigned bytes; replace it with a good copy")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(
            f"{name}: {path} is truncated or corrupt ({len(body)} bytes of data, header says {int(np.prod(dims))}); "
            "replace it with a good copy"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _read_mnist(name: str, folder: Path, limit_train: int | None, limit_test: int | None) -> Arrays:
    out = []
    for prefix, count, limit in (("train", 60000, limit_train), ("t10k", 10000, limit_test)):
        images = _read_idx(name, folder, f"{prefix}-images-idx3-ubyte", 3)
        labels = _read_idx(name, folder, f"{prefix}-labels-idx1-ubyte", 1)
        if images.shape != (count, 28, 28) or labels.shape != (count,):
            raise DataError(
                f"{name}: {folder}/{prefix}-*: expected {count} images of 28x28 and {count} labels, got "
                f"{images.shape} and {labels.shape}"
            )
        if labels.max() > 9:
            raise DataError(
                f"{name}: {folder}/{prefix}-labels-idx1-ubyte: label {int(labels.max())} out of range; labels must "
                "be in [0, 10)"
            )
        out.append(torch.from_numpy(images[:limit, None].copy()))
        out.append(torch.from_numpy(labels[:limit].astype(np.int64)))
    classes = _FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return out[0], out[1], out[2], out[3], list(classes), str(folder)


# ---- SVHN (.mat files) ---------------------------------------------------------------------


def _read_svhn(name: str, folder: Path, limit_train: int | None, limit_test: int | None) -> Arrays:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"{name}: reading the .mat files needs scipy; pip install scipy") from None
    out = []
    for split, count, limit in (("train", 73257, limit_train), ("test", 26032, limit_test)):
        path = folder / f"{split}_32x32.mat"
        try:
            mat = loadmat(path)
        except FileNotFoundError:
            raise DataError(
                f"{name}: {path} is missing; the folder is incomplete, replace it with a full copy"
            ) from None
        except Exception as exc:  # noqa: BLE001 - scipy raises many types for a damaged file
            raise DataError(
                f"{name}: cannot read {path}, truncated or corrupt ({describe(exc)}); replace it with a good copy"
            ) from None
        x, y = mat.get("X"), mat.get("y")
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape != (32, 32, 3, count):
            got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else "nothing"
            raise DataError(f"{name}: {path}: 'X' must be uint8 of shape (32, 32, 3, {count}), got {got}")
        if not isinstance(y, np.ndarray) or y.size != count:
            raise DataError(f"{name}: {path}: 'y' must hold {count} labels")
        labels = y.reshape(-1).astype(np.int64)
        if labels.min() < 1 or labels.max() > 10:
            bad = int(labels.min()) if labels.min() < 1 else int(labels.max())
            raise DataError(
                f"{name}: {path}: label {bad} out of range; SVHN labels must be in [1, 10] (10 is the digit 0)"
            )
        labels[labels == 10] = 0
        out.append(torch.from_numpy(np.ascontiguousarray(x[..., :limit].transpose(3, 2, 0, 1))))
        out.append(torch.from_numpy(labels[:limit].copy()))
    return out[0], out[1], out[2], out[3], [str(i) for i in range(10)], str(folder)


# ---- where each dataset lives, and how to download it ------------------------------------

_Layout = tuple[Callable[..., Arrays], Callable[[Path], list[Path]], str, str]

_LAYOUTS: dict[str, _Layout] = {
    "cifar10": (_read_cifar, lambda d: [d / "cifar-10-batches-py", d], "data_batch_1", "cifar-10-batches-py/"),
    "cifar100": (_read_cifar, lambda d: [d / "cifar-100-python", d], "train", "cifar-100-python/"),
    "mnist": (_read_mnist, lambda d: [d / "MNIST" / "raw", d / "raw", d], "train-images-idx3-ubyte", "MNIST/raw/"),
    "fashion-mnist": (
        _read_mnist,
        lambda d: [d / "FashionMNIST" / "raw", d / "raw", d],
        "train-images-idx3-ubyte",
        "FashionMNIST/raw/",
    ),
    "svhn": (_read_svhn, lambda d: [d / "svhn", d], "train_32x32.mat", "svhn/train_32x32.mat and svhn/test_32x32.mat"),
}


def _download(name: str, data_dir: Path) -> None:
    """Download ``name`` into ``data_dir`` in the layout :data:`_LAYOUTS` expects."""
    tv = import_torchvision()
    data_dir.mkdir(parents=True, exist_ok=True)
    if name == "cifar10":
        tv.datasets.CIFAR10(str(data_dir), train=True, download=True)
    elif name == "cifar100":
        tv.datasets.CIFAR100(str(data_dir), train=True, download=True)
    elif name == "mnist":
        tv.datasets.MNIST(str(data_dir), train=True, download=True)
    elif name == "fashion-mnist":
        tv.datasets.FashionMNIST(str(data_dir), train=True, download=True)
    elif name == "svhn":
        for split in ("train", "test"):
            tv.datasets.SVHN(str(data_dir / "svhn"), split=split, download=True)

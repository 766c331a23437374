"""Readers for user data: ``folder:PATH`` (image folders) and ``npz:PATH`` (numpy arrays)."""

from __future__ import annotations

import itertools
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..arch import MAX_CLASSES
from ..errors import DataError
from ..validate import check_text
from ._dataset import check_labels, describe

__all__ = ["read_folder", "read_npz", "IMAGE_SUFFIXES"]

#: File endings read as images in ``folder:PATH`` datasets (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

Arrays = tuple[Tensor, Tensor, Tensor, Tensor, list[str], str]


# ---- folder:PATH ------------------------------------------------------------------------------


def read_folder(
    name: str, root: Path, *, image_size: int | None, limit_train: int | None, limit_test: int | None
) -> Arrays:
    """Read ``root/train/<class>/*`` and ``root/test/<class>/*`` (or ``root/val/<class>/*``).

    Classes are the sorted names of the train class folders; images may sit in nested
    folders under their class folder; images come round-robin over the classes, so the
    leading slice that ``limit_*`` takes holds every class. Every image is converted to RGB
    (to grayscale when all of them are grayscale) and resized (squashed, bilinear) to
    ``image_size`` squares; when ``image_size`` is None all images must already be squares
    of one size.
    """
    if not root.is_dir():
        raise DataError(
            f"{name}: {root} is not a folder; expected train/<class>/<image> and test/<class>/<image> in it"
        )
    train_dir = root / "train"
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not train_dir.is_dir():
        raise DataError(f"{name}: {train_dir} does not exist; expected {root}/train/<class>/<image>")
    if test_dir is None:
        raise DataError(f"{name}: neither {root}/test nor {root}/val exists; expected {root}/test/<class>/<image>")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{name}: {len(classes)} class folders in {train_dir}; grownet takes at most {MAX_CLASSES:,} classes")
    for cls in classes:  # class names reach summary.json, the log and the report
        check_text(cls, f"{name}: class folder {train_dir}", error=DataError)
    train_files = _list_images(name, train_dir, classes, limit_train, require_all=True)
    test_classes = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [c for c in test_classes if c not in classes]
    if unknown:
        raise DataError(
            f"{name}: {test_dir}/{unknown[0]} is a class with no folder in {train_dir}; every test class needs "
            "training images"
        )
    test_files = _list_images(name, test_dir, classes, limit_test, require_all=False)
    if not test_files:
        raise DataError(
            f"{name}: no images found in {test_dir} (expected {test_dir}/<class>/<image>, endings "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    files = train_files + test_files
    # Headers first (mode, size; no pixels decoded), then one image at a time.
    headers = [_header(name, path) for path, _ in files]
    gray = all(mode in _GRAY_MODES for mode, _ in headers)
    if image_size is None:
        sizes = sorted({size for _, size in headers})
        if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
            a, b = sizes[0], sizes[-1]
            raise DataError(
                f"{name}: images are not squares of one size ({a[0]}x{a[1]} ... {b[0]}x{b[1]}); pass image_size to "
                "resize them"
            )
        image_size = sizes[0][0]
    x = torch.from_numpy(np.stack([_pixels(name, path, "L" if gray else "RGB", image_size) for path, _ in files]))
    x = (x[..., None] if gray else x).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor([label for _, label in train_files + test_files], dtype=torch.int64)
    n = len(train_files)
    return x[:n].clone(), y[:n].clone(), x[n:].clone(), y[n:].clone(), classes, str(root)


def _list_images(
    name: str, split_dir: Path, classes: list[str], limit: int | None, *, require_all: bool
) -> list[tuple[Path, int]]:
    """Image files of one split with their labels, round-robin over the classes (the first
    image of every class, then the second, ...), so a leading slice holds every class."""
    per_class: list[list[tuple[Path, int]]] = []
    for label, cls in enumerate(classes):
        folder = split_dir / cls
        if not folder.is_dir():
            continue
        found = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
        )
        if require_all and not found:
            raise DataError(
                f"{name}: class folder {folder} holds no images (endings {', '.join(IMAGE_SUFFIXES)}); add images or "
                "remove it"
            )
        for p in found:  # file names reach error messages and the log
            check_text(str(p), f"{name}: image file", error=DataError)
        per_class.append([(p, label) for p in found])
    files = [item for rank in itertools.zip_longest(*per_class) for item in rank if item is not None]
    if require_all and not files:
        raise DataError(
            f"{name}: no images found in {split_dir} (expected {split_dir}/<class>/<image>, endings "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    return files[:limit]


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _header(name: str, path: Path) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a damaged file
        raise DataError(
            f"{name}: cannot read image {path}, truncated or corrupt ({describe(exc)}); fix or remove it"
        ) from None


def _pixels(name: str, path: Path, mode: str, size: int) -> np.ndarray:
    """``(size, size)`` or ``(size, size, 3)`` uint8 pixels of one image, converted to ``mode``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a damaged file
        raise DataError(
            f"{name}: cannot read image {path}, truncated or corrupt ({describe(exc)}); fix or remove it"
        ) from None


# ---- npz:PATH ---------------------------------------------------------------------------------


def read_npz(name: str, path: Path, *, limit_train: int | None, limit_test: int | None) -> Arrays:
    """Read ``x_train, y_train, x_test, y_test`` (and optional ``classes``) from a ``.npz``.

    Images: 4-D NHWC or NCHW (the channel axis is whichever of axes 3 and 1 has 1 or 3
    entries, axis 3 first) or 3-D ``(N, H, W)`` grayscale; uint8, or any integer type within
    0..255, or float in ``[0, 1]`` (scaled by 255) or ``[0, 255]``. Labels: integers ``(N,)``.
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{name}: {path} does not exist; pass npz:PATH with the path of a .npz file") from None
    except Exception as exc:  # noqa: BLE001 - numpy raises many types for a damaged file
        raise DataError(f"{name}: cannot read {path}, truncated or corrupt ({describe(exc)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{name}: {path} is a single .npy array; expected a .npz with x_train, y_train, x_test, y_test")
    with archive:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive.files]
        if missing:
            raise DataError(f"{name}: {path} lacks {', '.join(missing)} (has: {', '.join(archive.files[:8]) or 'nothing'})")
        for key in ("x_train", "y_train", "x_test", "y_test", "classes"):
            if key in archive.files:
                _check_size(name, key, archive)
        try:
            arrays = {k: archive[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            classes = archive["classes"] if "classes" in archive.files else None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise DataError(f"{name}: cannot read {path}, truncated or corrupt ({describe(exc)})") from None
    x_train = _images(name, "x_train", arrays["x_train"])[:limit_train]
    x_test = _images(name, "x_test", arrays["x_test"])[:limit_test]
    y_train = _labels(name, "y_train", arrays["y_train"], len(arrays["x_train"]))[:limit_train]
    y_test = _labels(name, "y_test", arrays["y_test"], len(arrays["x_test"]))[:limit_test]
    if classes is not None:
        classes = np.asarray(classes).reshape(-1)
        if len(classes) > MAX_CLASSES:
            raise DataError(f"{name}: classes has {len(classes):,} names; grownet takes at most {MAX_CLASSES:,} classes")
        names = [check_text(str(c), f"{name}: classes[{i}]", error=DataError) for i, c in enumerate(classes)]
    else:
        names = [str(i) for i in range(int(arrays["y_train"].max()) + 1 if arrays["y_train"].size else 0)]
    check_labels(f"{name}: y_train", y_train, len(names))
    check_labels(f"{name}: y_test", y_test, len(names))
    return x_train, y_train, x_test, y_test, names, str(path)


def _images(name: str, key: str, x: np.ndarray) -> Tensor:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"{name}: {key} has shape {x.shape}; expected (N, H, W, C) or (N, C, H, W) with C = 1 or 3, or (N, H, W)"
        )
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x))
    if x.dtype.kind in "iub":  # not numpy's "integer" alone: it holds timedelta64 too
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataError(f"{name}: {key} holds integers in [{lo}, {hi}]; integer images must be in [0, 255]")
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8))
    if x.dtype.kind == "f":
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255:
            raise DataError(f"{name}: {key} holds floats in [{lo}, {hi}]; float images must be in [0, 1] or [0, 255]")
        scale = 255.0 if hi <= 1.0 else 1.0
        out = np.rint(x.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)
        return torch.from_numpy(np.ascontiguousarray(out))
    raise DataError(f"{name}: {key} has dtype {x.dtype}; expected uint8, integers or floats")


def _labels(name: str, key: str, y: np.ndarray, n: int) -> Tensor:
    y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{name}: {key} has shape {y.shape}; expected ({n},), one label per image")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{name}: {key} holds non-integer values; labels must be class indices")
    elif y.dtype.kind not in "iu":  # numpy's "integer" holds timedelta64 too
        raise DataError(f"{name}: {key} has dtype {y.dtype}; labels must be integer class indices")
    if y.size:  # before the int64 cast (which would wrap a uint64 or a float past 2**63)
        lo, hi = y.min(), y.max()
        if lo < 0:
            raise DataError(f"{name}: {key}: label {_label(lo)} is negative; labels must be class indices 0, 1, ..., K-1")
        if hi >= MAX_CLASSES:
            raise DataError(f"{name}: {key}: label {_label(hi)} is too large; labels are class indices below {MAX_CLASSES:,}")
    return torch.from_numpy(y.astype(np.int64))


def _label(value: np.generic) -> str:
    return str(int(value)) if abs(float(value)) < 1e30 else f"{float(value):.3g}"


def _check_size(name: str, key: str, archive: np.lib.npyio.NpzFile) -> None:
    """Refuse an array whose header promises more bytes than half this machine's memory
    (a compressed .npz can expand a few kB into terabytes), before reading it."""
    from ..models import memory_limit

    fmt = np.lib.format
    try:
        with archive.zip.open(f"{key}.npy") as fh:
            read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(fmt.read_magic(fh))
            if read is None:
                return
            shape, _, dtype = read(fh)
    except Exception:  # noqa: BLE001 - a damaged header: np.load's own read reports it
        return
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    limit = memory_limit("cpu")
    if limit is not None and nbytes > limit:
        raise DataError(
            f"{name}: {key} is a {'x'.join(map(str, shape))} {dtype} array of {nbytes / 2**30:,.1f} GiB, more than "
            f"half this machine's memory; use a smaller dataset"
        )

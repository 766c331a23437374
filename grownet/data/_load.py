"""``load_dataset``: one entry point from a dataset name to a checked :class:`Dataset`."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import DataError, UsageError
from ..validate import check_text
from ._dataset import Dataset, channel_stats, default_data_dir, resize_uint8
from ._local import read_folder, read_npz
from ._named import KNOWN_DATASETS, read_named

__all__ = ["load_dataset"]

log = logging.getLogger(__name__)


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    download: bool = True,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Dataset:
    """Load a dataset by name into CPU uint8 tensors.

    Args:
        name: one of :data:`KNOWN_DATASETS` (``cifar10``, ``cifar100``, ``svhn``, ``mnist``,
            ``fashion-mnist``; case and ``_``/``-`` do not matter), ``folder:PATH`` (image
            folders ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` or
            ``PATH/val/<class>/*``) or ``npz:PATH`` (arrays ``x_train, y_train, x_test,
            y_test``).
        data_dir: where named datasets are read from and downloaded to: the folder holding
            e.g. ``cifar-10-batches-py``, or that folder itself (default
            :func:`default_data_dir`). Ignored for ``folder:`` and ``npz:``.
        image_size: resize images to ``image_size`` squares (default: keep the native size;
            required for image folders whose images differ in size).
        download: download a missing named dataset through torchvision.
        limit_train, limit_test: keep only this many leading images of each split (smoke runs
            and tests); ``mean``/``std`` are computed on what is kept.

    Returns:
        A :class:`Dataset`; ``mean``/``std`` are per-channel statistics of ``x_train``.

    Raises:
        DataError: unknown name, data missing and not downloadable, corrupt or truncated
            files, wrong shapes, labels out of range, empty image folders.
        UsageError: a limit or image_size that is not a positive integer.
    """
    for field, value in (("limit_train", limit_train), ("limit_test", limit_test), ("image_size", image_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UsageError(f"{field}: must be a positive integer or None, got {value!r}")
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"dataset name must be a non-empty string, got {name!r}; known: {_known()}")
    check_text(name, "dataset", error=DataError)  # the name reaches config.json, the log and the report
    kind, sep, rest = name.partition(":")
    if sep and kind.strip().lower() in ("folder", "npz"):
        path = Path(rest).expanduser()
        if not rest:
            raise DataError(f"{name}: missing PATH; use {kind}:PATH")
        if kind.strip().lower() == "folder":
            arrays = read_folder(name, path, image_size=image_size, limit_train=limit_train, limit_test=limit_test)
        else:
            arrays = read_npz(name, path, limit_train=limit_train, limit_test=limit_test)
        label = name
    else:
        label = name.strip().lower().replace("_", "-")
        label = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(label, label)
        if label not in KNOWN_DATASETS:
            raise DataError(f"unknown dataset {name!r}; known: {_known()}")
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        arrays = read_named(label, root, download=download, limit_train=limit_train, limit_test=limit_test)
    x_train, y_train, x_test, y_test, classes, source = arrays
    if image_size is not None:
        x_train, x_test = resize_uint8(x_train, image_size), resize_uint8(x_test, image_size)
    if len(x_train) == 0 or len(x_test) == 0:
        split = "train" if len(x_train) == 0 else "test"
        raise DataError(f"{label}: the {split} split is empty ({source})")
    mean, std = channel_stats(x_train)
    ds = Dataset(label, x_train, y_train, x_test, y_test, classes, mean, std, source)
    log.info(
        "%s: %d train, %d test images of %dx%dx%d, %d classes, from %s",
        label, len(x_train), len(x_test), ds.in_channels, ds.image_size, ds.image_size, ds.num_classes, source,
    )
    return ds


def _known() -> str:
    return ", ".join(KNOWN_DATASETS + ("folder:PATH", "npz:PATH"))

"""The in-memory dataset record, its structure check, and per-channel statistics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError
from ..validate import check_text

__all__ = ["Dataset", "channel_stats", "default_data_dir", "resize_uint8", "describe"]


@dataclass
class Dataset:
    """One dataset as CPU tensors, checked on construction.

    Attributes:
        name: what :func:`~grownet.data.load_dataset` was asked for (``cifar10``, ``npz:PATH``...).
        x_train, x_test: images, ``uint8`` tensors ``(N, C, H, W)`` (square, H == W).
        y_train, y_test: labels, ``int64`` tensors ``(N,)`` in ``[0, len(classes))``.
        classes: class names; index = label.
        mean, std: per-channel mean and standard deviation of ``x_train`` in ``[0, 1]`` units.
        source: where the arrays were read from (a path), for logs and run configs.

    Raises:
        DataError: wrong dtype or shape, mismatched lengths, labels out of range.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        check_arrays(self.name, self.x_train, self.y_train, self.x_test, self.y_test, len(self.classes))
        c = self.in_channels
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(
                f"{self.name}: mean and std need {c} values (one per channel), got {len(self.mean)} and "
                f"{len(self.std)}"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


def check_arrays(name: str, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int) -> None:
    """Raise :class:`DataError` unless both splits are uint8 ``(N, C, S, S)`` images with
    matching int64 labels in ``[0, num_classes)`` and the same image shape."""
    if num_classes < 1:
        raise DataError(f"{name}: no classes")
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise DataError(f"{name}: x_{split} must be a uint8 tensor (N, C, H, W), got {got}")
        if x.shape[2] != x.shape[3]:
            raise DataError(
                f"{name}: x_{split} images must be square, got {x.shape[2]}x{x.shape[3]}; pass image_size to resize "
                "them"
            )
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.dim() != 1:
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
            raise DataError(f"{name}: y_{split} must be an int64 tensor (N,), got {got}")
        if len(x) != len(y):
            raise DataError(f"{name}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
        if len(y) == 0:
            raise DataError(f"{name}: the {split} split is empty")
        check_labels(f"{name}: y_{split}", y, num_classes)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{name}: train images are {tuple(x_train.shape[1:])} but test images are "
            f"{tuple(x_test.shape[1:])} (C, H, W)"
        )


def check_labels(what: str, y: Tensor, num_classes: int) -> None:
    """Raise :class:`DataError` unless every label is in ``[0, num_classes)``."""
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise DataError(f"{what}: label {lo} is negative; labels must be class indices 0, 1, ..., K-1")
    if hi >= num_classes:
        raise DataError(f"{what}: label {hi} out of range; labels must be in [0, {num_classes})")


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images ``(N, C, H, W)``, in ``[0, 1]``
    units, exact (from each channel's 256-bin histogram, so no float copy of the images).

    A channel with zero spread gets std 1.0, so normalising by it is the identity scale.
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        count = max(1.0, float(hist.sum()))
        mean = float((hist * values).sum()) / count
        var = max(0.0, float((hist * values.square()).sum()) / count - mean * mean)
        means.append(mean / 255.0)
        stds.append(var**0.5 / 255.0 if var > 0 else 1.0)
    return tuple(means), tuple(stds)


def resize_uint8(x: Tensor, size: int, *, chunk: int = 1024) -> Tensor:
    """Resize uint8 images ``(N, C, H, W)`` to ``(N, C, size, size)`` (bilinear, antialiased
    when shrinking; rounded back to uint8). Returns ``x`` itself when it already has that size."""
    if x.shape[2] == size and x.shape[3] == size:
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].to(torch.float32)
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def default_data_dir() -> Path:
    """Where named datasets live and are downloaded to: ``$GROWNET_DATA`` if set, else
    ``~/.cache/grownet/data``."""
    env = os.environ.get("GROWNET_DATA")
    if env:
        check_text(env, "GROWNET_DATA", error=DataError)  # the path reaches the log and config files
    return Path(env).expanduser() if env else Path.home() / ".cache" / "grownet" / "data"


def describe(exc: BaseException) -> str:
    """``"TypeName: message"`` of an exception on one line (for one-line DataErrors)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""Batched augmentation as tensor ops, and the per-epoch random plan that drives it.

Every random number an epoch needs (the order, each sample's crop offset, flip and cutout
centre) is drawn up front on the CPU from a generator seeded by ``(seed, epoch)``. The
k-th sample of the epoch always gets the k-th entries, whatever the device, the batch size
or the loader (in-memory or DataLoader), so a run resumed at an epoch boundary sees the
same batches, and CPU and CUDA see the same augmentations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = ["Augment", "EpochPlan", "make_plan", "derive_seed", "batch_crop_flip", "crop_flip_padded", "batch_cutout"]


@dataclass(frozen=True)
class Augment:
    """Training augmentation (applied on the device, per batch).

    Attributes:
        crop_padding: random crop of the original size from the image zero-padded (black) by
            this many pixels on each side; 0 turns cropping off. (default: 4, the CIFAR standard)
        flip: random horizontal flip with probability 1/2. (default: True)
        cutout: side of a square set to 0 after normalisation (the mean colour), centred
            uniformly on the image and clipped at its border (DeVries & Taylor 2017); 0 is off.
    """

    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0

    def __post_init__(self) -> None:
        for field in ("crop_padding", "cutout"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"augment.{field}: must be a non-negative integer, got {value!r}")
        if not isinstance(self.flip, bool):
            raise ConfigError(f"augment.flip: must be true or false, got {self.flip!r}")

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.cutout > 0


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (stable across processes and platforms, unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's random draws, all CPU tensors of length ``n`` (None where unused).

    ``order[k]`` is the sample index at epoch position ``k``; ``dy[k], dx[k]`` in
    ``[0, 2 * padding]`` the crop window's corner in padded coordinates; ``flip[k]``
    whether to mirror; ``cut_y[k], cut_x[k]`` the cutout centre.
    """

    order: Tensor | None
    dy: Tensor | None
    dx: Tensor | None
    flip: Tensor | None
    cut_y: Tensor | None
    cut_x: Tensor | None


def make_plan(
    n: int, *, height: int, width: int, seed: int, epoch: int, shuffle: bool, augment: Augment | None
) -> EpochPlan:
    """Draw epoch ``epoch``'s plan for ``n`` samples of ``height x width`` (see :class:`EpochPlan`)."""
    g = torch.Generator().manual_seed(derive_seed("grownet.data.epoch", seed, epoch))
    order = torch.randperm(n, generator=g) if shuffle else None
    dy = dx = flip = cut_y = cut_x = None
    if augment is not None and augment.crop_padding > 0:
        span = 2 * augment.crop_padding + 1
        dy = torch.randint(0, span, (n,), generator=g)
        dx = torch.randint(0, span, (n,), generator=g)
    if augment is not None and augment.flip:
        flip = torch.rand(n, generator=g) < 0.5
    if augment is not None and augment.cutout > 0:
        cut_y = torch.randint(0, height, (n,), generator=g)
        cut_x = torch.randint(0, width, (n,), generator=g)
    return EpochPlan(order, dy, dx, flip, cut_y, cut_x)


def batch_crop_flip(
    x: Tensor, idx: Tensor, *, padding: int, dy: Tensor | None, dx: Tensor | None, flip: Tensor | None
) -> Tensor:
    """Crop-with-zero-padding and horizontal flip of ``x[idx]``, as tensor ops.

    ``out[k]`` is the ``H x W`` window with top-left corner ``(dy[k], dx[k])`` of ``x[idx[k]]``
    zero-padded by ``padding`` on each side, mirrored left-right where ``flip[k]``.

    Args:
        x: images ``(N, C, H, W)``, any dtype, on any device.
        idx: ``(B,)`` int64 sample indices, on ``x``'s device.
        padding: zero padding in pixels (``dy``/``dx`` are ignored when 0).
        dy, dx: ``(B,)`` integer offsets in ``[0, 2 * padding]``, on the CPU (None: no crop).
        flip: ``(B,)`` bool on the CPU (None: no flip).

    Returns:
        ``(B, C, H, W)`` tensor of ``x``'s dtype on ``x``'s device.
    """
    crop = padding > 0 and dy is not None and dx is not None
    if crop:
        x = F.pad(x, (padding, padding, padding, padding))
    return crop_flip_padded(x, idx, padding=padding if crop else 0, dy=dy, dx=dx, flip=flip)


def crop_flip_padded(
    xp: Tensor, idx: Tensor, *, padding: int, dy: Tensor | None, dx: Tensor | None, flip: Tensor | None
) -> Tensor:
    """:func:`batch_crop_flip` of images already zero-padded by ``padding`` (``xp`` is
    ``(N, C, H + 2 * padding, W + 2 * padding)``), which the in-memory loader pads once.

    Samples sharing an (offset, flip) pair are gathered together into a contiguous block,
    then one gather puts every sample at its place: at most ``2 * (2 * padding + 1) ** 2``
    block copies per call, whatever ``B`` is, which is why callers pass thousands of samples.
    """
    b = idx.numel()
    n, c, hp, wp = xp.shape
    crop = padding > 0 and dy is not None and dx is not None
    h, w = hp - 2 * padding, wp - 2 * padding
    if not crop and flip is None:
        return xp[:, :, padding : padding + h, padding : padding + w].index_select(0, idx)
    span = 2 * padding + 1
    key = torch.zeros(b, dtype=torch.int64)
    if crop:
        key += (dy.to(torch.int64) * span + dx.to(torch.int64)) * 2
    else:
        key += (padding * span + padding) * 2  # centre window
    if flip is not None:
        key += flip.to(torch.int64)
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=2 * span * span).tolist()
    place = torch.empty_like(order)
    place[order] = torch.arange(b)  # where each sample sits in the group-sorted block
    src = idx.index_select(0, order.to(xp.device))
    grouped = xp.new_empty((b, c, h, w))
    start = 0
    for k, count in enumerate(counts):
        if count == 0:
            continue
        sy, sx = divmod(k >> 1, span)
        block = grouped[start : start + count]
        torch.index_select(xp[:, :, sy : sy + h, sx : sx + w], 0, src[start : start + count], out=block)
        if k & 1:
            block.copy_(block.flip(3))
        start += count
    return grouped.index_select(0, place.to(xp.device))


def batch_cutout(x: Tensor, size: int, cut_y: Tensor, cut_x: Tensor, *, value: float = 0.0) -> Tensor:
    """Set a ``size x size`` square centred at ``(cut_y[k], cut_x[k])`` (clipped at the border)
    of every image ``x[k]`` (``(B, C, H, W)``) to ``value``, in place; returns ``x``."""
    h, w = x.shape[-2:]
    y0 = (cut_y.to(x.device) - size // 2)[:, None]
    x0 = (cut_x.to(x.device) - size // 2)[:, None]
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    inside = ((rows >= y0) & (rows < y0 + size))[:, :, None] & ((cols >= x0) & (cols < x0 + size))[:, None, :]
    return x.masked_fill_(inside[:, None], value)

"""Batched iterators over a split: in-memory on the device (:class:`Loader`) or, for data
too large for that, a torch ``DataLoader`` over host memory (:class:`StreamLoader`).

Both yield the same batches for the same ``(seed, epoch)``: float ``(B, C, H, W)`` images
normalised as ``(x / 255 - mean) / std`` and int64 labels, on the device.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UsageError
from ._augment import Augment, EpochPlan, batch_crop_flip, batch_cutout, crop_flip_padded, derive_seed, make_plan
from ._dataset import Dataset

__all__ = ["Loader", "StreamLoader", "Loaders", "make_loaders", "split_validation", "DEFAULT_MAX_MEMORY_BYTES"]

log = logging.getLogger(__name__)

#: Above this many bytes of uint8 images (train + test), :func:`make_loaders` streams from
#: host memory through a DataLoader instead of holding the splits on the device. 4 GiB
#: holds CIFAR-scale sets (180 MB) with room to spare on a small GPU.
DEFAULT_MAX_MEMORY_BYTES = 4 * 2**30

#: Bytes of uint8 images augmented per device call: large enough that the per-call overhead
#: of the crop (one copy per offset/flip group, whatever the chunk size) vanishes, small
#: enough to stay modest on the device (21,845 CIFAR images).
_CHUNK_BYTES = 64 * 2**20
#: Samples normalised per call (a few batches; ~6 MB of float32 for CIFAR, so it stays in cache).
_SLAB_SAMPLES = 512


def split_validation(n: int, *, fraction: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` into disjoint, sorted index tensors ``(train_idx, val_idx)``.

    ``val_idx`` holds ``round(n * fraction)`` indices (at least one when ``fraction > 0`` and
    ``n > 1``; never all of them) drawn by a permutation seeded by ``seed`` alone, so the same
    ``(n, fraction, seed)`` always gives the same split.

    Raises:
        UsageError: ``n`` not a non-negative integer or ``fraction`` outside ``[0, 1)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UsageError(f"n: must be a non-negative integer, got {n!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise UsageError(f"val_fraction: must be a number in [0, 1), got {fraction!r}")
    n_val = int(round(n * fraction))
    if fraction > 0 and n > 1:
        n_val = min(max(n_val, 1), n - 1)
    g = torch.Generator().manual_seed(derive_seed("grownet.data.validation", seed))
    perm = torch.randperm(n, generator=g)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class _Base:
    """Argument checks and the per-batch finishing steps shared by both loaders."""

    def __init__(
        self,
        x_uint8: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        shuffle: bool,
        augment: Augment | None,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(x_uint8, Tensor) or x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
            got = f"{x_uint8.dtype} {tuple(x_uint8.shape)}" if isinstance(x_uint8, Tensor) else type(x_uint8).__name__
            raise UsageError(f"x_uint8: must be a uint8 tensor (N, C, H, W), got {got}")
        if not isinstance(y, Tensor) or y.dim() != 1 or len(y) != len(x_uint8) or y.dtype != torch.int64:
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
            raise UsageError(f"y: must be an int64 tensor ({len(x_uint8)},), got {got}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size: must be a positive integer, got {batch_size!r}")
        c = x_uint8.shape[1]
        if len(mean) != c or len(std) != c or any(not s > 0 for s in std):
            raise UsageError(
                f"mean, std: need {c} values each (one per channel) with std > 0, got {tuple(mean)} and {tuple(std)}"
            )
        if augment is not None and not isinstance(augment, Augment):
            raise UsageError(f"augment: must be an Augment or None, got {type(augment).__name__}")
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.augment = augment if augment is not None and augment.active else None
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.num_samples = len(x_uint8)
        self._shape = tuple(x_uint8.shape[1:])
        self._epoch = 0
        # float32, applied as written in (x / 255 - mean) / std: batches are bit-identical to
        # that expression evaluated by hand (tests and reports rely on it).
        self._mean = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, c, 1, 1).to(self.device)
        self._std = torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, c, 1, 1).to(self.device)
        self._store(x_uint8, y)

    def _store(self, x_uint8: Tensor, y: Tensor) -> None:
        raise NotImplementedError

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``: its order and augmentation are a function
        of ``(seed, epoch)`` only. Without calls, iterations use epochs 0, 1, 2, ..."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise UsageError(f"epoch: must be a non-negative integer, got {epoch!r}")
        self._epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def _next_plan(self) -> tuple[EpochPlan, int]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        h, w = self._shape[1:]
        plan = make_plan(
            self.num_samples, height=h, width=w, seed=self.seed, epoch=epoch, shuffle=self.shuffle, augment=self.augment
        )
        used = len(self) * self.batch_size if self.drop_last else self.num_samples
        return plan, used

    def _finish(self, u8: Tensor, plan: EpochPlan, start: int) -> Tensor:
        """Normalise a uint8 batch whose first sample sits at epoch position ``start``."""
        x = u8.to(torch.float32).div_(255.0).sub_(self._mean).div_(self._std)
        if self.augment is not None and self.augment.cutout > 0:
            end = start + len(x)
            x = batch_cutout(x, self.augment.cutout, plan.cut_y[start:end], plan.cut_x[start:end])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, augment={self.augment}, device={self.device}, epoch={self._epoch})"
        )


class Loader(_Base):
    """The whole split as a uint8 tensor on ``device``; batches are cut, augmented and
    normalised there with tensor ops (no per-sample Python, no worker processes).

    Args:
        x_uint8: images ``(N, C, H, W)`` uint8 (moved to ``device`` once; not modified).
        y: labels ``(N,)`` int64.
        batch_size: samples per batch (the last one may be smaller unless ``drop_last``).
        mean, std: per-channel statistics in ``[0, 1]`` units; batches are
            ``(x / 255 - mean) / std``.
        device: where the data lives and the batches are made.
        shuffle: a fresh order every epoch (else the stored order).
        augment: training augmentation, or None.
        seed: with the epoch (see :meth:`set_epoch`), fixes order and augmentation.
        drop_last: drop the last, smaller batch.
        channels_last: yield batches in ``torch.channels_last`` memory format.

    Iterating yields ``(images float32 (B, C, H, W), labels int64 (B,))`` on ``device``.
    """

    def _store(self, x_uint8: Tensor, y: Tensor) -> None:
        x = x_uint8.to(self.device)
        # Cropping reads windows of the zero-padded images: pad once here, not per batch.
        self._pad = self.augment.crop_padding if self.augment is not None else 0
        self._x = F.pad(x, (self._pad,) * 4) if self._pad else x
        self._y = y.to(self.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        plan, used = self._next_plan()
        bs, aug = self.batch_size, self.augment
        order = plan.order.to(self.device) if plan.order is not None else None
        chunk = bs * max(1, _CHUNK_BYTES // max(1, math.prod(self._x.shape[1:])) // bs)
        for c0 in range(0, used, chunk):
            c1 = min(c0 + chunk, used)
            if order is None:
                idx = torch.arange(c0, c1, device=self.device)
                labels = self._y[c0:c1]
            else:
                idx = order[c0:c1]
                labels = self._y.index_select(0, idx)
            if aug is not None and (aug.crop_padding > 0 or aug.flip):
                sl = slice(c0, c1)
                u8 = crop_flip_padded(
                    self._x, idx, padding=self._pad,
                    dy=plan.dy[sl] if plan.dy is not None else None,
                    dx=plan.dx[sl] if plan.dx is not None else None,
                    flip=plan.flip[sl] if plan.flip is not None else None,
                )
            elif order is None:
                u8 = self._x[c0:c1]
            else:
                u8 = self._x.index_select(0, idx)
            # Normalise a slab of several batches per call: fewer, larger ops (each parallel
            # region costs a thread wake-up, which dominates on a busy CPU).
            slab = bs * max(1, _SLAB_SAMPLES // bs)
            for s0 in range(0, c1 - c0, slab):
                s1 = min(s0 + slab, c1 - c0)
                xs = self._finish(u8[s0:s1], plan, c0 + s0)
                for b0 in range(s0, s1, bs):
                    b1 = min(b0 + bs, s1)
                    yield xs[b0 - s0 : b1 - s0], labels[b0:b1]


class _BatchedTensors(torch.utils.data.Dataset):
    """Map-style dataset over CPU tensors that also fetches whole batches at once
    (``__getitems__``), so the DataLoader does one gather per batch, not one per sample."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.x.index_select(0, idx), self.y.index_select(0, idx)


def _keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch


class StreamLoader(_Base):
    """Same interface and same batches as :class:`Loader`, for splits too large to hold on
    the device: the uint8 split stays in host memory and a standard
    ``torch.utils.data.DataLoader`` (``num_workers`` processes, pinned memory on CUDA) hands
    over one batch at a time; augmentation and normalisation then run on ``device``.
    """

    def __init__(self, x_uint8: Tensor, y: Tensor, *, num_workers: int = 0, **kwargs) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise UsageError(f"num_workers: must be a non-negative integer, got {num_workers!r}")
        self.num_workers = num_workers
        super().__init__(x_uint8, y, **kwargs)

    def _store(self, x_uint8: Tensor, y: Tensor) -> None:
        self._data = _BatchedTensors(x_uint8.cpu(), y.cpu())

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        plan, used = self._next_plan()
        bs, aug = self.batch_size, self.augment
        positions = plan.order.tolist() if plan.order is not None else list(range(self.num_samples))
        batches = [positions[b0 : min(b0 + bs, used)] for b0 in range(0, used, bs)]
        loader = torch.utils.data.DataLoader(
            self._data,
            batch_sampler=batches,
            collate_fn=_keep_batch,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for b, (xb, yb) in enumerate(loader):
            b0 = b * bs
            xb = xb.to(self.device, non_blocking=True)
            yb = yb.to(self.device, non_blocking=True)
            if aug is not None and (aug.crop_padding > 0 or aug.flip):
                sl = slice(b0, b0 + len(xb))
                xb = batch_crop_flip(
                    xb, torch.arange(len(xb), device=self.device), padding=aug.crop_padding,
                    dy=plan.dy[sl] if plan.dy is not None else None,
                    dx=plan.dx[sl] if plan.dx is not None else None,
                    flip=plan.flip[sl] if plan.flip is not None else None,
                )
            yield self._finish(xb, plan, b0), yb


class Loaders(NamedTuple):
    """The three iterators of a run: ``train`` (shuffled, augmented), ``val`` (held out
    from the training set, not augmented) and ``test`` (final reporting only)."""

    train: Loader | StreamLoader
    val: Loader | StreamLoader
    test: Loader | StreamLoader


def make_loaders(
    ds: Dataset,
    *,
    batch_size: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    augment: Augment | None = Augment(),
    eval_batch_size: int | None = None,
    channels_last: bool = False,
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES,
    num_workers: int = 0,
) -> Loaders:
    """Split ``ds``'s training set (:func:`split_validation` with ``val_fraction`` and
    ``seed``) and build the train, validation and test iterators.

    The training iterator shuffles and augments (seeded by ``seed`` and the epoch) and drops
    the last partial batch when there is at least one full batch, so every step sees
    ``batch_size`` samples. ``val`` and ``test`` keep the stored order, are not augmented, and
    use ``eval_batch_size`` (default ``2 * batch_size``; no gradients are kept in eval). When
    the uint8 images (train + test) exceed ``max_memory_bytes``, all three are
    :class:`StreamLoader` (``num_workers`` processes) instead of :class:`Loader`.
    """
    if isinstance(max_memory_bytes, bool) or not isinstance(max_memory_bytes, int) or max_memory_bytes < 0:
        raise UsageError(f"max_memory_bytes: must be a non-negative integer, got {max_memory_bytes!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size: must be a positive integer, got {batch_size!r}")
    if eval_batch_size is None:
        eval_batch_size = 2 * batch_size
    train_idx, val_idx = split_validation(len(ds.y_train), fraction=val_fraction, seed=seed)
    needed = ds.x_train.numel() + ds.x_test.numel()
    streaming = needed > max_memory_bytes
    if streaming:
        log.info(
            "%s: %.1f MB of images exceed max_memory_bytes=%d; streaming batches through a DataLoader",
            ds.name, needed / 1e6, max_memory_bytes,
        )

    def build(x: Tensor, y: Tensor, **kw) -> Loader | StreamLoader:
        common = dict(mean=ds.mean, std=ds.std, device=device, seed=seed, channels_last=channels_last)
        if streaming:
            return StreamLoader(x, y, num_workers=num_workers, **common, **kw)
        return Loader(x, y, **common, **kw)

    n_train = len(train_idx)
    train = build(
        ds.x_train.index_select(0, train_idx), ds.y_train.index_select(0, train_idx),
        batch_size=batch_size, shuffle=True, augment=augment, drop_last=n_train >= batch_size,
    )
    val = build(
        ds.x_train.index_select(0, val_idx), ds.y_train.index_select(0, val_idx),
        batch_size=eval_batch_size, shuffle=False, augment=None,
    )
    test = build(ds.x_test, ds.y_test, batch_size=eval_batch_size, shuffle=False, augment=None)
    return Loaders(train, val, test)

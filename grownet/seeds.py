"""Architecture presets: tiny seeds to grow from, and the standard nets to compare against.

- :func:`vgg`: 5 stages of 3x3 convs, 16 filters everywhere by default (VGG-11 depths).
- :func:`resnet`: CIFAR ResNet with 3 stages, one block each by default.
- :func:`vgg16`, :func:`resnet20`, :func:`resnet56`: the standard widths and depths.
- :func:`preset`: any of them by name (what the CLI and recipes use).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from .arch import Architecture, ResStage
from .errors import UsageError

__all__ = ["vgg", "resnet", "vgg16", "resnet20", "resnet56", "preset", "PRESETS"]


def vgg(
    width: int | Sequence[int] = 16,
    depths: Sequence[int] = (1, 1, 2, 2, 2),
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
) -> Architecture:
    """A VGG with ``len(depths)`` stages of ``depths[s]`` convs each.

    Args:
        width: filters of every conv, or one width per stage.
        depths: convs per stage (default: VGG-11's 1, 1, 2, 2, 2).
    """
    depths = _counts(depths, "depths")
    widths = _per_stage(width, len(depths), "width")
    return Architecture(
        family="vgg",
        stages=tuple((w,) * d for w, d in zip(widths, depths)),
        in_channels=in_channels,
        input_size=input_size,
        num_classes=num_classes,
    )


def resnet(
    widths: Sequence[int] = (16, 32, 64),
    blocks: int | Sequence[int] = 1,
    *,
    stem: int | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
) -> Architecture:
    """A CIFAR ResNet with one stage per entry of ``widths``; every block's inner width is its
    stage's width.

    Args:
        widths: residual width of each stage.
        blocks: basic blocks in every stage, or one count per stage.
        stem: stem width (default: ``widths[0]``, so stage 0 needs no projection shortcut).
    """
    widths = _counts(widths, "widths")
    counts = _per_stage(blocks, len(widths), "blocks")
    return Architecture(
        family="resnet",
        stages=tuple(ResStage(w, (w,) * n) for w, n in zip(widths, counts)),
        stem=widths[0] if stem is None else stem,
        in_channels=in_channels,
        input_size=input_size,
        num_classes=num_classes,
    )


def vgg16(*, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> Architecture:
    """VGG-16's convs (64,64 | 128,128 | 256x3 | 512x3 | 512x3) with BN, global pooling and
    one linear classifier (the usual CIFAR variant)."""
    return Architecture(
        family="vgg",
        stages=((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
        in_channels=in_channels,
        input_size=input_size,
        num_classes=num_classes,
    )


def resnet20(*, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> Architecture:
    """ResNet-20 (He et al. 2016, CIFAR): widths 16, 32, 64, three blocks per stage."""
    return resnet((16, 32, 64), 3, num_classes=num_classes, in_channels=in_channels, input_size=input_size)


def resnet56(*, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> Architecture:
    """ResNet-56 (He et al. 2016, CIFAR): widths 16, 32, 64, nine blocks per stage."""
    return resnet((16, 32, 64), 9, num_classes=num_classes, in_channels=in_channels, input_size=input_size)


#: Preset name -> function returning its Architecture.
PRESETS: dict[str, Callable[..., Architecture]] = {
    "vgg": vgg,
    "resnet": resnet,
    "vgg16": vgg16,
    "resnet20": resnet20,
    "resnet56": resnet56,
}


def preset(name: str, **kw: Any) -> Architecture:
    """The Architecture of preset ``name`` (one of :data:`PRESETS`), built with keyword
    arguments ``kw`` (e.g. ``preset("vgg", width=8, num_classes=100)``).

    Raises:
        UsageError: for an unknown name or an argument the preset does not take.
    """
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    fn = PRESETS[name]
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kw) - set(params))
    if unknown:
        raise UsageError(f"preset {name!r} takes no argument {unknown[0]!r}; it takes: {', '.join(params)}")
    return fn(**kw)


def _counts(values: Sequence[int], what: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise UsageError(f"{what}: must be a non-empty sequence of positive integers, got {values!r}")
    for i, v in enumerate(values):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UsageError(f"{what}[{i}]: must be a positive integer, got {v!r}")
    return tuple(values)


def _per_stage(value: int | Sequence[int], stages: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise UsageError(f"{what}: must be a positive integer, got {value!r}")
        value = (value,) * stages
    values = _counts(value, what)  # type: ignore[arg-type]
    if len(values) != stages:
        raise UsageError(f"{what}: needs one value per stage ({stages}), got {len(values)}")
    return values

"""Modules built from an :class:`~grownet.arch.Architecture`.

Parameter names are stable (weights load by them) and follow the layer names:

- VGG: ``stages.S.L.conv.weight`` (3x3, no bias), ``stages.S.L.bn.*``, ``classifier.*``.
- ResNet: ``stem.conv.weight``, ``stem.bn.*``; ``stages.S.B.conv1.weight``, ``.bn1.*``,
  ``.conv2.weight``, ``.bn2.*``; ``stages.S.B.shortcut.conv.weight`` and
  ``stages.S.B.shortcut.bn.*`` only where the block's input width or stride differs from its
  output; ``classifier.*``.

The module classes live with their family's rules (:mod:`grownet.families`); which modules
produce a layer is the layer record's (:attr:`Architecture.layers`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from .arch import Architecture
from .errors import ArchitectureError, UsageError
from .families._units import ConvBN
from .families.resnet import BasicBlock, ResNet
from .families.vgg import VGG

__all__ = [
    "ConvBN",
    "BasicBlock",
    "VGG",
    "ResNet",
    "build_model",
    "as_architecture",
    "layer_conv_weights",
    "layer_modules",
    "has_shortcut",
    "MemoryEstimate",
    "estimate_memory",
    "check_memory",
    "memory_limit",
]


def build_model(arch: Architecture | Mapping[str, Any]) -> torch.nn.Module:
    """Build the module for ``arch`` (an Architecture or its JSON dict), in training mode,
    with weights freshly initialised from torch's global RNG on the current default device
    (build under ``with torch.device("meta"):`` to allocate nothing).

    The returned module carries the Architecture as its ``arch`` attribute.

    Raises:
        ArchitectureError: when the net would not fit the default device's memory
            (:func:`check_memory` at a batch of one; the ``meta`` device is never refused).
    """
    arch = as_architecture(arch)
    device = torch.get_default_device()
    if device.type != "meta":
        check_memory(arch, device=device)
    return arch.rules.model(arch)


# ---- memory ---------------------------------------------------------------------------------------

#: Share of the device's memory a net may take for its parameters with their training copies,
#: and (separately) for its training activations, before :func:`check_memory` refuses it.
MEMORY_FRACTION = 0.5
#: float32 copies of every parameter while training: weight, gradient, and DessiLBI's V, Γ and
#: momentum buffer.
_PARAM_COPIES = 5
#: float32 copies of every conv output kept for the backward pass (conv, BatchNorm and ReLU
#: outputs) plus the gradient flowing back through it.
_ACTIVATION_COPIES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """What training a net takes, estimated from its architecture alone.

    Attributes:
        params: parameters (as :func:`grownet.cost.cost` counts them).
        param_bytes: ``params`` x 4 bytes x 5 training copies (weight, gradient, V, Γ, momentum).
        activation_bytes: conv outputs per sample x batch size x 4 bytes x 4 copies (conv,
            BatchNorm and ReLU outputs, and the gradient).
        largest: the field path of the layer holding the most parameters (``stages[2][1]``).
    """

    params: int
    param_bytes: int
    activation_bytes: int
    largest: str


def estimate_memory(arch: Architecture, *, batch_size: int = 1) -> MemoryEstimate:
    """The :class:`MemoryEstimate` of training ``arch`` at ``batch_size``; allocates nothing."""
    from .cost import cost  # cost builds on the meta device through this module

    c = cost(arch)
    layer = max(arch.layer_widths(), key=lambda name: c.layers[name].params)
    elements = arch.in_channels * arch.input_size**2 + sum(c.out_channels * c.size**2 for c in arch.convs)
    return MemoryEstimate(
        params=c.params,
        param_bytes=4 * _PARAM_COPIES * c.params,
        activation_bytes=4 * _ACTIVATION_COPIES * elements * batch_size,
        largest=arch.layer(layer).field,
    )


def check_memory(arch: Architecture, *, batch_size: int = 1, device: torch.device | str | None = None,
                 limit_bytes: int | None = None) -> MemoryEstimate:
    """Refuse ``arch`` when its parameters (with their training copies) or its activations at
    ``batch_size`` would take more than ``limit_bytes`` each (default: :func:`memory_limit` of
    ``device``, half its memory); return the estimate otherwise.

    Raises:
        ArchitectureError: naming the widest contributor (a layer's field path for the
            parameters; ``input_size``, the widths and ``data.batch_size`` for activations).
    """
    est = estimate_memory(arch, batch_size=batch_size)
    limit = memory_limit(device) if limit_bytes is None else limit_bytes
    if limit is None:
        return est
    owner = "the GPU" if _device(device).type == "cuda" and torch.cuda.is_available() else "this machine"
    where = f"half of {owner}'s {_gib(limit / MEMORY_FRACTION)} memory" if limit_bytes is None else f"the {_gib(limit)} limit"
    if est.param_bytes > limit:
        raise ArchitectureError(
            f"{est.largest}: the net has {est.params:,} parameters, needing ~{_gib(est.param_bytes)} to train, more than "
            f"{where}; use narrower layers"
        )
    if est.activation_bytes > limit:
        raise ArchitectureError(
            f"input_size: {arch.input_size} px images through these widths need ~{_gib(est.activation_bytes)} of "
            f"activations at batch size {batch_size}, more than {where}; lower data.batch_size, the widths or the "
            "image size"
        )
    return est


def memory_limit(device: torch.device | str | None = None) -> int | None:
    """:data:`MEMORY_FRACTION` of the memory of ``device``: a CUDA device's own, else this
    machine's physical memory (or its cgroup's limit, when lower); None when unknown."""
    device = _device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
        try:
            with open("/sys/fs/cgroup/memory.max") as fh:
                text = fh.read().strip()
            total = min(total, int(text)) if text.isdigit() else total
        except OSError:
            pass
    return int(total * MEMORY_FRACTION)


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.get_default_device()


def _gib(n: float) -> str:
    """Bytes in the largest unit that keeps a digit before the point (MiB to TiB)."""
    unit = next(u for u in (40, 30, 20) if n >= 2**u or u == 20)
    return f"{n / 2**unit:,.1f} {dict([(40, 'TiB'), (30, 'GiB'), (20, 'MiB')])[unit]}"


def as_architecture(arch: Architecture | Mapping[str, Any]) -> Architecture:
    """``arch`` itself, or the Architecture of a JSON dict (validated)."""
    if isinstance(arch, Architecture):
        return arch
    if isinstance(arch, Mapping):
        return Architecture.from_dict(arch)
    raise UsageError(f"expected an Architecture or its dict, got {type(arch).__name__}")


def has_shortcut(arch: Architecture, stage: int, block: int) -> bool:
    """Whether ResNet block ``stages.stage.block`` has a projection shortcut (never, for VGG)."""
    return any(sc.projection for sc in arch.shortcuts if (sc.stage, sc.index) == (stage, block))


def layer_conv_weights(arch: Architecture, layer: str) -> list[str]:
    """Names of the conv weights whose output filters make up ``layer`` (its record's
    :attr:`~grownet.families.Layer.conv_weights`).

    A ResNet stage's residual width (``stages.S``) is produced by every block's ``conv2`` and
    by the stage's projection shortcut, so all of them are returned.
    """
    return arch.layer(layer).conv_weights


def layer_modules(arch: Architecture, layer: str) -> list[str]:
    """Names of the modules that produce ``layer``: each conv of
    :func:`layer_conv_weights` followed by its BatchNorm, e.g. ``["stages.0.1.conv",
    "stages.0.1.bn"]`` for VGG layer ``stages.0.1``."""
    return arch.layer(layer).modules

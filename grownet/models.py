"""Modules built from an :class:`~grownet.arch.Architecture`.

Parameter names are stable (weights load by them) and follow the layer names:

- VGG: ``stages.S.L.conv.weight`` (3x3, no bias), ``stages.S.L.bn.*``, ``classifier.*``.
- ResNet: ``stem.conv.weight``, ``stem.bn.*``; ``stages.S.B.conv1.weight``, ``.bn1.*``,
  ``.conv2.weight``, ``.bn2.*``; ``stages.S.B.shortcut.conv.weight`` and
  ``stages.S.B.shortcut.bn.*`` only where the block's input width or stride differs from its
  output; ``classifier.*``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .arch import Architecture
from .errors import ArchitectureError, UsageError

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


class ConvBN(nn.Module):
    """Conv (no bias) followed by BatchNorm; no activation."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    ``conv1`` maps ``cin -> inner`` (stride ``stride``), ``conv2`` maps ``inner -> cout``; the
    shortcut is a 1x1 conv + BN projection when ``cin != cout`` or ``stride != 1``, else identity.
    """

    def __init__(self, cin: int, inner: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = ConvBN(cin, cout, 1, stride) if (cin != cout or stride != 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class VGG(nn.Module):
    """Stages of 3x3 conv-BN-ReLU layers, 2x2 max-pool between stages, global average pool,
    linear classifier. Input ``(N, in_channels, H, W)``, output logits ``(N, num_classes)``."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        cin = arch.in_channels
        stages = []
        for widths in arch.stages:
            layers = []
            for w in widths:
                layers.append(ConvBN(cin, w))
                cin = w
            stages.append(nn.ModuleList(layers))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(cin, arch.num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.stages) - 1
        for s, stage in enumerate(self.stages):
            for layer in stage:
                x = F.relu(layer(x))
            if s < last:
                x = F.max_pool2d(x, 2)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, stages of basic blocks (the first block of every stage
    after the first has stride 2), global average pool, linear classifier."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.stem = ConvBN(arch.in_channels, int(arch.stem))  # type: ignore[arg-type]
        cin = int(arch.stem)  # type: ignore[arg-type]
        stages = []
        for s, stage in enumerate(arch.stages):
            blocks = []
            for b, inner in enumerate(stage.blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(BasicBlock(cin, inner, stage.width, stride))
                cin = stage.width
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(cin, arch.num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(arch: Architecture | Mapping[str, Any]) -> nn.Module:
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
    return VGG(arch) if arch.family == "vgg" else ResNet(arch)


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
    elements = arch.in_channels * arch.input_size**2 + sum(w * side**2 for w, side in _conv_outputs(arch))
    return MemoryEstimate(
        params=c.params,
        param_bytes=4 * _PARAM_COPIES * c.params,
        activation_bytes=4 * _ACTIVATION_COPIES * elements * batch_size,
        largest=_field_path(arch, layer),
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


def _conv_outputs(arch: Architecture) -> list[tuple[int, int]]:
    """``(channels, side)`` of every conv output for one sample, as the modules above compute them."""
    side, out = arch.input_size, []
    if arch.family == "vgg":
        for s, widths in enumerate(arch.stages):
            side = side if s == 0 else side // 2  # 2x2 max-pool between stages
            out += [(w, side) for w in widths]
        return out
    out.append((int(arch.stem), side))  # type: ignore[arg-type]
    cin = arch.stem
    for s, stage in enumerate(arch.stages):
        for b, inner in enumerate(stage.blocks):
            if s > 0 and b == 0:
                side = (side + 1) // 2  # 3x3 conv, stride 2, padding 1
            out += [(inner, side), (stage.width, side)]
            if cin != stage.width or (s > 0 and b == 0):
                out.append((stage.width, side))  # projection shortcut
            cin = stage.width
    return out


def _field_path(arch: Architecture, layer: str) -> str:
    """The architecture JSON field of a layer name: ``stages.2.1`` -> ``stages[2][1]`` (VGG) or
    ``stages[2].blocks[1]`` (ResNet); ``stages.2`` -> ``stages[2].width``."""
    if layer == "stem":
        return "stem"
    parts = layer.split(".")
    if len(parts) == 2:
        return f"stages[{parts[1]}].width"
    return f"stages[{parts[1]}][{parts[2]}]" if arch.family == "vgg" else f"stages[{parts[1]}].blocks[{parts[2]}]"


def as_architecture(arch: Architecture | Mapping[str, Any]) -> Architecture:
    """``arch`` itself, or the Architecture of a JSON dict (validated)."""
    if isinstance(arch, Architecture):
        return arch
    if isinstance(arch, Mapping):
        return Architecture.from_dict(arch)
    raise UsageError(f"expected an Architecture or its dict, got {type(arch).__name__}")


def has_shortcut(arch: Architecture, stage: int, block: int) -> bool:
    """Whether ResNet block ``stages.stage.block`` has a projection shortcut."""
    if block > 0:
        return False
    cin = arch.stem if stage == 0 else arch.stages[stage - 1].width
    return stage > 0 or cin != arch.stages[stage].width


def layer_conv_weights(arch: Architecture, layer: str) -> list[str]:
    """Names of the conv weights whose output filters make up ``layer``.

    A ResNet stage's residual width (``stages.S``) is produced by every block's ``conv2`` and
    by the stage's projection shortcut, so all of them are returned.
    """
    arch.width(layer)  # validates the name
    if layer == "stem":
        return ["stem.conv.weight"]
    parts = layer.split(".")
    s = int(parts[1])
    if arch.family == "vgg":
        return [f"{layer}.conv.weight"]
    if len(parts) == 3:
        return [f"{layer}.conv1.weight"]
    names = [f"stages.{s}.{b}.conv2.weight" for b in range(len(arch.stages[s].blocks))]
    if has_shortcut(arch, s, 0):
        names.append(f"stages.{s}.0.shortcut.conv.weight")
    return names


#: BatchNorm that normalises each conv's output (same parent module).
_BN_OF = {"conv": "bn", "conv1": "bn1", "conv2": "bn2"}


def layer_modules(arch: Architecture, layer: str) -> list[str]:
    """Names of the modules that produce ``layer``: each conv of
    :func:`layer_conv_weights` followed by its BatchNorm, e.g. ``["stages.0.1.conv",
    "stages.0.1.bn"]`` for VGG layer ``stages.0.1``."""
    names = []
    for weight in layer_conv_weights(arch, layer):
        parent, conv = weight.removesuffix(".weight").rsplit(".", 1)
        names += [f"{parent}.{conv}", f"{parent}.{_BN_OF[conv]}"]
    return names

"""Modules built from an :class:`~grownet.arch.Architecture`.

Parameter names are stable (weights load by them) and follow the layer names:

- VGG: ``stages.S.L.conv.weight`` (3x3, no bias), ``stages.S.L.bn.*``, ``classifier.*``.
- ResNet: ``stem.conv.weight``, ``stem.bn.*``; ``stages.S.B.conv1.weight``, ``.bn1.*``,
  ``.conv2.weight``, ``.bn2.*``; ``stages.S.B.shortcut.conv.weight`` and
  ``stages.S.B.shortcut.bn.*`` only where the block's input width or stride differs from its
  output; ``classifier.*``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .arch import Architecture
from .errors import UsageError

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
    """
    arch = as_architecture(arch)
    return VGG(arch) if arch.family == "vgg" else ResNet(arch)


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

"""VGG: stages of 3x3 conv-BN-ReLU layers, a 2x2 max-pool between stages, global average
pool, linear classifier.

JSON: ``"stages": [[w, w], [w, w, w]]`` (each stage a list of conv widths), no stem.
Layers: ``stages.S.L``, conv ``L`` of stage ``S``. Parameters: ``stages.S.L.conv.weight``
(3x3, no bias), ``stages.S.L.bn.*``, ``classifier.*``. A new layer starts as an identity conv.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArchitectureError
from ._base import Conv, Family, Layer, NewUnit, check_layers, check_width, is_list, layer_name
from ._units import ConvBN, init_weights

if TYPE_CHECKING:
    from ..arch import Architecture

__all__ = ["VGG", "VGGFamily"]


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
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.stages) - 1
        for s, stage in enumerate(self.stages):
            for layer in stage:
                x = F.relu(layer(x))
            if s < last:
                x = F.max_pool2d(x, 2)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


VGG.__module__ = "grownet.models"  # its public home: pickles and error messages name grownet.models.VGG


class VGGFamily(Family):
    """The VGG rules."""

    name = "vgg"
    has_stem = False
    model = VGG

    def check_stage(self, stage: Any, path: str) -> tuple[int, ...]:
        if not is_list(stage) or not stage:
            raise ArchitectureError(f"{path}: must be a non-empty list of widths")
        check_layers(stage, path)
        return tuple(check_width(w, f"{path}[{l}]") for l, w in enumerate(stage))

    def stage_json(self, stage: tuple[int, ...]) -> list[int]:
        return list(stage)

    def depth(self, stage: tuple[int, ...]) -> int:
        return len(stage)

    def layers(self, arch: Architecture) -> tuple[Layer, ...]:
        return tuple(
            Layer(c.out_layer, s, l, "conv", c.out_channels, c.in_channels, f"stages[{s}][{l}]", (c.module,), (c.bn,))
            for c, (s, l) in zip(self.convs(arch), _positions(arch))
        )

    def convs(self, arch: Architecture) -> tuple[Conv, ...]:
        out, prev, cin, side = [], None, arch.in_channels, arch.input_size
        for (s, l), w in zip(_positions(arch), (w for stage in arch.stages for w in stage)):
            if s > 0 and l == 0:
                side //= 2  # the 2x2 max-pool before every stage but the first
            name = layer_name(s, l)
            out.append(Conv(f"{name}.conv", f"{name}.bn", prev, name, cin, w, 3, 1, side))
            prev, cin = name, w
        return tuple(out)

    def with_width(self, arch: Architecture, layer: Layer, width: int) -> dict[str, Any]:
        stages = list(arch.stages)
        stage = list(stages[layer.stage])
        stage[layer.index] = width  # type: ignore[index]
        stages[layer.stage] = tuple(stage)
        return {"stages": tuple(stages)}

    def with_extra_layer(self, stage: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(stage) + (stage[-1],)

    def new_units(self, old: Architecture, new: Architecture) -> list[NewUnit]:
        units = []
        for s, (o, n) in enumerate(zip(old.stages, new.stages)):
            for l in range(len(o), len(n)):
                name = layer_name(s, l)
                units.append(NewUnit(name, "identity", bn=f"{name}.bn", conv=f"{name}.conv"))
        return units


def _positions(arch: Architecture) -> list[tuple[int, int]]:
    return [(s, l) for s, stage in enumerate(arch.stages) for l in range(len(stage))]

"""ResNet (CIFAR style): a 3x3 stem, stages of basic blocks (the first block of every stage after
the first has stride 2), global average pool, linear classifier.

JSON: ``"stem": w`` and ``"stages": [{"width": w, "blocks": [w, w]}, ...]``: each stage's
residual (block output) width and each block's inner width.
Layers: ``stem``; ``stages.S.B``, the inner width (``conv1``) of block ``B``; ``stages.S``,
the stage's residual width, written by every block's ``conv2`` and by the projection shortcut.
Parameters: ``stem.conv.weight``, ``stem.bn.*``; ``stages.S.B.conv1.weight``, ``.bn1.*``,
``.conv2.weight``, ``.bn2.*``; ``stages.S.B.shortcut.conv.weight`` and ``.shortcut.bn.*`` only
where the block's input width or stride differs from its output; ``classifier.*``.
A new block starts as an identity (``bn2`` zero); a projection that a widening creates starts
as the identity on the old channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArchitectureError
from ._base import (
    STEM, Conv, Family, Layer, NewUnit, Shortcut, check_layers, check_width, is_list, layer_name,
)
from ._units import ConvBN, init_weights

if TYPE_CHECKING:
    from ..arch import Architecture

__all__ = ["ResStage", "BasicBlock", "ResNet", "ResNetFamily"]


@dataclass(frozen=True)
class ResStage:
    """One ResNet stage: residual width and each basic block's inner width."""

    width: int
    blocks: tuple[int, ...]


ResStage.__module__ = "grownet.arch"  # its public home, where Architecture's users import it from


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
        self.shortcut = ConvBN(cin, cout, 1, stride) if _projects(cin, cout, stride) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


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
                blocks.append(BasicBlock(cin, inner, stage.width, _stride(s, b)))
                cin = stage.width
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(cin, arch.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# Their public home: pickles and error messages name grownet.models.BasicBlock and .ResNet.
BasicBlock.__module__ = ResNet.__module__ = "grownet.models"


def _stride(stage: int, block: int) -> int:
    return 2 if (stage > 0 and block == 0) else 1


def _projects(cin: int, cout: int, stride: int) -> bool:
    return cin != cout or stride != 1


class ResNetFamily(Family):
    """The ResNet rules."""

    name = "resnet"
    has_stem = True
    model = ResNet

    def read_stage(self, stage: Any, path: str) -> ResStage:
        if not isinstance(stage, Mapping):
            raise ArchitectureError(f"{path}: must be an object with 'width' and 'blocks'")
        return _res_stage(stage, path)

    def check_stage(self, stage: Any, path: str) -> ResStage:
        if isinstance(stage, Mapping):
            stage = _res_stage(stage, path)
        if not isinstance(stage, ResStage):
            raise ArchitectureError(f"{path}: must be an object with 'width' and 'blocks'")
        width = check_width(stage.width, f"{path}.width")
        if not is_list(stage.blocks) or not stage.blocks:
            raise ArchitectureError(f"{path}.blocks: must be a non-empty list of widths")
        check_layers(stage.blocks, f"{path}.blocks")
        return ResStage(width, tuple(check_width(w, f"{path}.blocks[{b}]") for b, w in enumerate(stage.blocks)))

    def stage_json(self, stage: ResStage) -> dict[str, Any]:
        return {"width": stage.width, "blocks": list(stage.blocks)}

    def depth(self, stage: ResStage) -> int:
        return len(stage.blocks)

    def layers(self, arch: Architecture) -> tuple[Layer, ...]:
        # Producers in the order the growth signal and the reports have always summed them:
        # every block's conv2, then the stage's projection.
        shortcut = {(sc.stage, sc.index): sc for sc in self.shortcuts(arch) if sc.projection}
        out = [Layer(STEM, 0, None, "stem", int(arch.stem), arch.in_channels, "stem", ("stem.conv",), ("stem.bn",))]
        cin = int(arch.stem)
        for s, stage in enumerate(arch.stages):
            for b, inner in enumerate(stage.blocks):
                blk = layer_name(s, b)
                out.append(Layer(blk, s, b, "inner", inner, cin if b == 0 else stage.width, f"stages[{s}].blocks[{b}]",
                                 (f"{blk}.conv1",), (f"{blk}.bn1",)))
            blocks = [layer_name(s, b) for b in range(len(stage.blocks))]
            convs, bns = [f"{blk}.conv2" for blk in blocks], [f"{blk}.bn2" for blk in blocks]
            if (s, 0) in shortcut:
                convs.append(f"{shortcut[s, 0].module}.conv")
                bns.append(f"{shortcut[s, 0].module}.bn")
            out.append(Layer(layer_name(s), s, None, "residual", stage.width, cin, f"stages[{s}].width",
                             tuple(convs), tuple(bns)))
            cin = stage.width
        return tuple(out)

    def convs(self, arch: Architecture) -> tuple[Conv, ...]:
        side = arch.input_size
        out = [Conv("stem.conv", "stem.bn", None, STEM, arch.in_channels, int(arch.stem), 3, 1, side)]
        res_in, cin = STEM, int(arch.stem)
        for s, stage in enumerate(arch.stages):
            res = layer_name(s)
            for b, inner in enumerate(stage.blocks):
                blk, stride = layer_name(s, b), _stride(s, b)
                side = (side + 1) // 2 if stride == 2 else side  # 3x3 padding 1 or 1x1 padding 0, stride 2
                out.append(Conv(f"{blk}.conv1", f"{blk}.bn1", res_in, blk, cin, inner, 3, stride, side))
                out.append(Conv(f"{blk}.conv2", f"{blk}.bn2", blk, res, inner, stage.width, 3, 1, side))
                if _projects(cin, stage.width, stride):
                    short = f"{blk}.shortcut"
                    out.append(Conv(f"{short}.conv", f"{short}.bn", res_in, res, cin, stage.width, 1, stride, side))
                res_in, cin = res, stage.width
        return tuple(out)

    def shortcuts(self, arch: Architecture) -> tuple[Shortcut, ...]:
        out = []
        res_in, cin = STEM, int(arch.stem)
        for s, stage in enumerate(arch.stages):
            for b in range(len(stage.blocks)):
                stride = _stride(s, b)
                projects = _projects(cin, stage.width, stride)
                out.append(Shortcut(layer_name(s, b), s, b, res_in, layer_name(s), stride, projects))
                res_in, cin = layer_name(s), stage.width
        return tuple(out)

    def with_width(self, arch: Architecture, layer: Layer, width: int) -> dict[str, Any]:
        if layer.kind == "stem":
            return {"stem": width}
        stages = list(arch.stages)
        st = stages[layer.stage]
        if layer.index is None:
            stages[layer.stage] = ResStage(width, st.blocks)
        else:
            blocks = list(st.blocks)
            blocks[layer.index] = width
            stages[layer.stage] = ResStage(st.width, tuple(blocks))
        return {"stages": tuple(stages)}

    def with_extra_layer(self, stage: ResStage) -> ResStage:
        return ResStage(stage.width, stage.blocks + (stage.blocks[-1],))

    def new_units(self, old: Architecture, new: Architecture) -> list[NewUnit]:
        units = []
        for s, (o, n) in enumerate(zip(old.stages, new.stages)):
            blocks = [layer_name(s, b) for b in range(len(o.blocks), len(n.blocks))]
            units += [NewUnit(blk, "zero", bn=f"{blk}.bn2") for blk in blocks]
        projected = {sc.block for sc in old.shortcuts if sc.projection}
        for sc in new.shortcuts:
            if sc.projection and sc.index < old.depth(sc.stage) and sc.block not in projected:
                # Without a projection the old block's input and output widths were equal.
                module = f"{sc.block}.shortcut"
                units.append(NewUnit(module, "identity", bn=f"{module}.bn", conv=f"{module}.conv",
                                     channels=old.stages[sc.stage].width))
        return units


def _res_stage(stage: Mapping[str, Any], path: str) -> ResStage:
    """A ResNet stage object ``{"width": w, "blocks": [...]}`` with its keys checked (values are
    checked by :meth:`ResNetFamily.check_stage`)."""
    extra = sorted(map(str, set(stage) - {"width", "blocks"}))
    if extra:
        raise ArchitectureError(f"{path}.{extra[0]}: unknown key (a stage has only 'width' and 'blocks')")
    for key in ("width", "blocks"):
        if key not in stage:
            raise ArchitectureError(f"{path}.{key}: missing required key")
    if not is_list(stage["blocks"]) or not stage["blocks"]:
        raise ArchitectureError(f"{path}.blocks: must be a non-empty list of widths")
    return ResStage(stage["width"], tuple(stage["blocks"]))

"""What every family shares: the layer-name grammar, the records an Architecture hands out, the
validation helpers of its JSON, and the :class:`Family` interface a family implements.

Layer names (activity tables, JSON, reports): ``stages.S.L`` for layer (VGG conv, ResNet
block) ``L`` of stage ``S``; ``stages.S`` for a width that belongs to the whole stage (a ResNet
stage's residual width); ``stem`` for a stem. Only this module builds or parses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ArchitectureError
from ..validate import show

if TYPE_CHECKING:  # the Architecture imports the families, never the other way round
    from torch import nn

    from ..arch import Architecture

#: Largest accepted width: far above any CIFAR-scale net, small enough to catch typos
#: (a width of 10**9 would allocate terabytes).
MAX_WIDTH = 65536
#: Most layers (VGG convs, ResNet blocks) in one stage: ResNet-1202 has 200; a million would
#: take hours only to cost.
MAX_LAYERS = 1024

STEM = "stem"
_NAME = re.compile(r"stages\.(\d+)(?:\.(\d+))?")


def layer_name(stage: int, index: int | None = None) -> str:
    """``stages.S`` (a stage-wide width) or ``stages.S.L`` (layer ``L`` of stage ``S``); also the
    module path of that layer's unit (VGG ConvBN, ResNet block)."""
    return f"stages.{stage}" if index is None else f"stages.{stage}.{index}"


def parse_layer_name(name: str) -> tuple[int, int | None] | None:
    """``(stage, index)`` of a ``stages.S.L`` name, ``(stage, None)`` of ``stages.S``; None for any
    other name (``stem``, ``classifier``, a typo)."""
    found = _NAME.fullmatch(name)
    if found is None:
        return None
    return int(found[1]), None if found[2] is None else int(found[2])


@dataclass(frozen=True)
class Layer:
    """One growable layer: a set of output channels and the convs that write them.

    Attributes:
        name: ``stages.S.L``, ``stages.S`` or ``stem``.
        stage: the stage it belongs to (the stem counts as stage 0: it uses stage 0's τ).
        index: its position in the stage (VGG conv, ResNet block); None for ``stages.S`` and ``stem``.
        kind: ``"conv"`` (VGG), ``"stem"``, ``"inner"`` (a ResNet block's first conv) or
            ``"residual"`` (a ResNet stage's block outputs and projection shortcut).
        width: output channels.
        in_channels: the channels its unit reads (for ``"residual"``: the stage's input).
        field: the architecture JSON field holding its width (``stages[2][1]``,
            ``stages[2].blocks[1]``, ``stages[2].width``, ``stem``).
        convs: module names of the convs that write its channels (weights ``<conv>.weight``).
        bns: the BatchNorm after each of ``convs``, in the same order.
        gamma: whether its conv weights carry Γ (DessiLBI's filter groups: every conv does).
    """

    name: str
    stage: int
    index: int | None
    kind: str
    width: int
    in_channels: int
    field: str
    convs: tuple[str, ...]
    bns: tuple[str, ...]
    gamma: bool = True

    @property
    def out_channels(self) -> int:
        return self.width

    @property
    def conv_weights(self) -> list[str]:
        """Parameter names of :attr:`convs`' weights."""
        return [f"{c}.weight" for c in self.convs]

    @property
    def bn_weights(self) -> list[str]:
        """Parameter names of :attr:`bns`' weights (γ)."""
        return [f"{b}.weight" for b in self.bns]

    @property
    def modules(self) -> list[str]:
        """Each conv followed by its BatchNorm."""
        return [m for pair in zip(self.convs, self.bns) for m in pair]


@dataclass(frozen=True)
class Conv:
    """One conv of the built model, in forward order, with the layers it reads and writes.

    Attributes:
        module: its module name (``stages.0.1.conv``, ``stages.1.0.shortcut.conv``).
        bn: the BatchNorm after it.
        in_layer: the layer its input channels belong to (None: the image).
        out_layer: the layer its output channels belong to.
        in_channels, out_channels: as the built ``nn.Conv2d`` has them.
        kernel, stride: its square kernel side and stride (padding is ``kernel // 2``).
        size: its output's side in pixels for one image.
    """

    module: str
    bn: str
    in_layer: str | None
    out_layer: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    size: int


@dataclass(frozen=True)
class Shortcut:
    """A ResNet block's skip connection from ``in_layer``'s channels to ``out_layer``'s.

    Attributes:
        block: the block's module name (``stages.0.0``); ``stage``, ``index`` its position.
        projection: whether it is a learned 1x1 conv + BN (``module``), else the identity.
        stride: the block's stride (a stride above 1 always projects).
    """

    block: str
    stage: int
    index: int
    in_layer: str
    out_layer: str
    stride: int
    projection: bool

    @property
    def module(self) -> str | None:
        return f"{self.block}.shortcut" if self.projection else None

    @property
    def tied(self) -> bool:
        """An identity between two different layers: they are the same channels."""
        return not self.projection and self.in_layer != self.out_layer

    @property
    def by_width(self) -> bool:
        """A projection that exists only because the two layers' widths differ (stride 1):
        growth or pruning that made them equal would remove it."""
        return self.projection and self.stride == 1


@dataclass(frozen=True)
class NewUnit:
    """A module that a growth adds and starts as an identity (see :mod:`grownet.grow`).

    ``init`` is ``"identity"`` (conv ``conv`` a Dirac kernel on its first ``channels``
    channels, all of them when None, and BatchNorm ``bn`` the identity in eval mode) or
    ``"zero"`` (BatchNorm ``bn`` with weight and bias 0: the unit adds nothing).
    """

    module: str
    init: str
    bn: str
    conv: str | None = None
    channels: int | None = None


class Family:
    """The rules of one family of nets. Subclasses set :attr:`name`, :attr:`has_stem` and
    :attr:`model`, and implement the methods below; an instance is registered in
    :data:`grownet.families.FAMILIES`."""

    name: ClassVar[str]
    has_stem: ClassVar[bool] = False
    #: The ``nn.Module`` class built from an Architecture of this family.
    model: ClassVar[type["nn.Module"]]

    # -- the JSON form of a stage ------------------------------------------------------------
    def read_stage(self, stage: Any, path: str) -> Any:
        """The JSON shape check of one stage (keys, lists vs objects) before its values are
        checked by :meth:`check_stage`."""
        return stage

    def check_stage(self, stage: Any, path: str) -> Any:
        """One stage validated and normalised (tuples, records); raises ArchitectureError
        naming ``path``."""
        raise NotImplementedError

    def stage_json(self, stage: Any) -> Any:
        """One stage as written in the JSON."""
        raise NotImplementedError

    # -- structure ---------------------------------------------------------------------------
    def depth(self, stage: Any) -> int:
        """Layers (VGG convs, ResNet blocks) in one stage."""
        raise NotImplementedError

    def layers(self, arch: Architecture) -> tuple[Layer, ...]:
        """Every growable layer, in network order."""
        raise NotImplementedError

    def convs(self, arch: Architecture) -> tuple[Conv, ...]:
        """Every conv of the built model, in forward order."""
        raise NotImplementedError

    def shortcuts(self, arch: Architecture) -> tuple[Shortcut, ...]:
        """Every block's skip connection (none in a family without them)."""
        return ()

    # -- edits -------------------------------------------------------------------------------
    def with_width(self, arch: Architecture, layer: Layer, width: int) -> dict[str, Any]:
        """The Architecture fields that change when ``layer`` gets ``width`` filters."""
        raise NotImplementedError

    def with_extra_layer(self, stage: Any) -> Any:
        """``stage`` with one more layer at its end, as wide as its last one."""
        raise NotImplementedError

    def new_units(self, old: Architecture, new: Architecture) -> list[NewUnit]:
        """The modules ``new`` (grown from ``old``) adds, with how each starts."""
        raise NotImplementedError


# ---- validation helpers shared by the families and the Architecture ----------------------------


def check_int(value: Any, path: str, what: str, *, low: int = 1, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f" <= {high}" if high is not None else ""
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ArchitectureError(f"{path}: {what} must be {kind}{bound}, got {show(value)}")
    return value


def check_width(value: Any, path: str) -> int:
    return check_int(value, path, "width", high=MAX_WIDTH)


def is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def check_layers(layers: Any, path: str) -> None:
    if len(layers) > MAX_LAYERS:
        raise ArchitectureError(f"{path}: {len(layers)} layers; a stage holds at most {MAX_LAYERS}")

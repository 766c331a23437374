"""Network families: the one place that knows how a family names, wires and grows its layers.

An :class:`~grownet.arch.Architecture` asks its family for its layer records
(:class:`Layer`), its convs in forward order (:class:`Conv`), its skip connections
(:class:`Shortcut`) and its module class; the policy, growth, pruning, cost, signal and
reports read those records and never branch on the family's name.

To add a family: write ``grownet/families/<name>.py`` with its ``nn.Module`` and a
:class:`Family` subclass (the JSON form of a stage, the records, width and depth edits, and
how the modules a growth adds start), and register an instance in :data:`FAMILIES` below.
"""

from __future__ import annotations

from ._base import (
    MAX_LAYERS, MAX_WIDTH, STEM, Conv, Family, Layer, NewUnit, Shortcut, layer_name, parse_layer_name,
)
from .resnet import ResNetFamily, ResStage
from .vgg import VGGFamily

__all__ = [
    "FAMILIES", "family_of", "Family", "Layer", "Conv", "Shortcut", "NewUnit", "ResStage", "STEM",
    "MAX_WIDTH", "MAX_LAYERS", "layer_name", "parse_layer_name",
]

#: Every family by name, in the order error messages list them.
FAMILIES: dict[str, Family] = {f.name: f for f in (VGGFamily(), ResNetFamily())}


def family_of(name: str) -> Family:
    """The registered :class:`Family` called ``name`` (KeyError for an unknown one: an
    Architecture is validated before it asks)."""
    return FAMILIES[name]

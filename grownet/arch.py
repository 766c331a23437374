"""The architecture spec: what grownet grows, saves as JSON, and builds into modules.

An :class:`Architecture` is plain, immutable data (the "adaptive filter configuration").
:func:`grownet.models.build_model` turns it into modules; :mod:`grownet.grow` returns new
architectures with one layer wider or one stage deeper.

Its layers are records (:attr:`Architecture.layers`, :class:`~grownet.families.Layer`) built
once from the family's rules (:mod:`grownet.families`); their names, used everywhere
(activity tables, JSON, reports), are:

- ``stages.S.L``: VGG conv ``L`` of stage ``S``, or the inner width (first conv) of ResNet
  basic block ``L`` of stage ``S``;
- ``stages.S``: a ResNet stage's residual (block output) width;
- ``stem``: the ResNet stem conv.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from .errors import ArchitectureError
from .families import FAMILIES as _RULES
from .families import MAX_LAYERS, MAX_WIDTH, Conv, Family, Layer, ResStage, Shortcut, family_of, layer_name
from .families._base import check_int, check_width, is_list
from .files import atomic_write_text
from .validate import check_tree, read_json, show

__all__ = ["Architecture", "ResStage", "FAMILIES", "FORMAT", "VERSION", "MAX_WIDTH", "MAX_LAYERS", "MAX_CLASSES"]

FORMAT = "grownet.architecture"
VERSION = 1
FAMILIES = tuple(_RULES)
#: Most classifier outputs (ImageNet-21k has 21,841 classes).
MAX_CLASSES = 1_000_000
_TOP_KEYS = {"format", "version", "family", "in_channels", "input_size", "num_classes", "stages", "meta"}


@dataclass(frozen=True)
class Architecture:
    """A growable CNN spec.

    Attributes:
        family: ``"vgg"`` or ``"resnet"``.
        stages: VGG: a tuple of stages, each a tuple of conv widths. ResNet: a tuple of
            :class:`ResStage`.
        in_channels: input image channels.
        input_size: input image side in pixels (square images).
        num_classes: classifier outputs.
        stem: ResNet stem width (``None`` for VGG).
        meta: free-form information (MACs, accuracies, provenance); ignored when building,
            and left out of equality and hashing.

    Every construction is validated (lists are accepted and stored as tuples; ResNet stages
    may be given as ``{"width": w, "blocks": [...]}``).

    Raises:
        ArchitectureError: naming the offending field path, e.g.
            ``stages[2][1]: width must be a positive integer <= 65536, got 0``.
    """

    family: str
    stages: tuple
    in_channels: int = 3
    input_size: int = 32
    num_classes: int = 10
    stem: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        # Validate and normalise on every construction (from_dict, direct, ``replace``), so an
        # Architecture that exists is always buildable and hashable: stages become tuples,
        # ResNet stages become ResStage, meta becomes a private dict.
        for name, value in _validated(self).items():
            object.__setattr__(self, name, value)

    # ---- (de)serialisation -------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        """Validate a JSON-like dict and build an Architecture.

        Raises:
            ArchitectureError: naming the offending field path.
        """
        return _parse(data)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "Architecture":
        """Read and validate an architecture JSON file."""
        path = Path(path)
        data = read_json(path, error=ArchitectureError, missing="file not found; pass the path of an architecture.json")
        try:
            return _parse(data)
        except ArchitectureError as exc:
            raise ArchitectureError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The version-1 JSON dict (keys in the documented order)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "family": self.family,
            "in_channels": self.in_channels,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
        }
        if self.rules.has_stem:
            out["stem"] = self.stem
        out["stages"] = [self.rules.stage_json(s) for s in self.stages]
        out["meta"] = _jsonable(dict(self.meta))
        return out

    def to_json(self) -> str:
        """The JSON text of :meth:`to_dict` with a trailing newline: one key per line, one
        stage per line (its widths on that line), meta indented where it does not fit a line."""
        return _format(self.to_dict()) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically (temporary file, then rename); return the path."""
        path = Path(path)
        atomic_write_text(path, self.to_json())
        return path

    # ---- structure ---------------------------------------------------------------------
    # The records are built once per Architecture, on first use (an Architecture is immutable;
    # cached_property keeps them out of equality, hashing and the JSON).

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def rules(self) -> Family:
        """The family's rules (:mod:`grownet.families`)."""
        return family_of(self.family)

    @cached_property
    def layers(self) -> tuple[Layer, ...]:
        """Every growable layer as a :class:`~grownet.families.Layer` record, in network order."""
        return self.rules.layers(self)

    @cached_property
    def convs(self) -> tuple[Conv, ...]:
        """Every conv of the built model as a :class:`~grownet.families.Conv` record, in
        forward order."""
        return self.rules.convs(self)

    @cached_property
    def shortcuts(self) -> tuple[Shortcut, ...]:
        """Every block's skip connection (:class:`~grownet.families.Shortcut`); none for VGG."""
        return self.rules.shortcuts(self)

    @cached_property
    def _by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    def layer(self, name: str) -> Layer:
        """The record of one layer; raises ArchitectureError for an unknown name."""
        found = self._by_name.get(name)
        if found is None:
            raise ArchitectureError(f"unknown layer {name!r}; known layers: {', '.join(self._by_name)}")
        return found

    def layer_widths(self) -> dict[str, int]:
        """Every growable layer's width, keyed by layer name, in network order."""
        return {layer.name: layer.width for layer in self.layers}

    def stage_layers(self, stage: int) -> list[str]:
        """Layer names belonging to a stage (for ResNet: the blocks' inner widths and the
        stage's residual width; not the stem)."""
        return [layer.name for layer in self.layers if layer.stage == stage and layer.kind != "stem"]

    def depth(self, stage: int) -> int:
        """Layers (VGG convs, ResNet blocks) in one stage."""
        return self.rules.depth(self.stages[stage])

    def extra_layer_name(self, stage: int) -> str:
        """The name of the layer :meth:`with_extra_layer` adds to ``stage``."""
        return layer_name(stage, self.depth(stage))

    def width(self, layer: str) -> int:
        """Width of one layer; raises ArchitectureError for an unknown name."""
        return self.layer(layer).width

    def with_width(self, layer: str, width: int) -> "Architecture":
        """A copy with one layer set to ``width`` (meta dropped: it described the old net)."""
        record = self.layer(layer)  # validates the name
        if not isinstance(width, int) or isinstance(width, bool) or not 0 < width <= MAX_WIDTH:
            raise ArchitectureError(f"{layer}: width must be a positive integer <= {MAX_WIDTH}, got {show(width)}")
        return replace(self, **self.rules.with_width(self, record, width), meta={})

    def with_widths(self, widths: Mapping[str, int]) -> "Architecture":
        """A copy with every layer of ``widths`` set (in order, as :meth:`with_width`)."""
        out = self
        for layer, width in widths.items():
            out = out.with_width(layer, width)
        return out if widths else replace(self, meta={})

    def with_extra_layer(self, stage: int) -> "Architecture":
        """A copy with one more layer at the end of ``stage``: a VGG conv of the stage's last
        width, or a ResNet block whose inner width is the stage's last block's."""
        if not isinstance(stage, int) or not 0 <= stage < self.num_stages:
            raise ArchitectureError(f"stage must be an integer in [0, {self.num_stages - 1}], got {show(stage)}")
        stages = list(self.stages)
        stages[stage] = self.rules.with_extra_layer(stages[stage])
        return replace(self, stages=tuple(stages), meta={})

    def with_meta(self, **meta: Any) -> "Architecture":
        """A copy whose meta is updated with ``meta``."""
        return replace(self, meta={**self.meta, **meta})


# ---- validation ----------------------------------------------------------------------------
#
# Two layers: ``_parse`` checks the JSON shape (format, version, keys, lists vs objects) and
# ``_validated`` (run by ``Architecture.__post_init__``) checks the values, so both ways in give
# the same field-path messages.


def _validated(arch: Architecture) -> dict[str, Any]:
    """The normalised field values of ``arch``; raises ArchitectureError naming the field."""
    family = arch.family
    if family not in FAMILIES:
        raise ArchitectureError(f"family: must be one of {', '.join(FAMILIES)}, got {show(family)}")
    rules = family_of(family)
    out: dict[str, Any] = {
        "in_channels": check_int(arch.in_channels, "in_channels", "value", high=4096),
        "input_size": check_int(arch.input_size, "input_size", "value", high=8192),
        "num_classes": check_int(arch.num_classes, "num_classes", "value", high=MAX_CLASSES),
    }
    if not rules.has_stem:
        if arch.stem is not None:
            raise ArchitectureError(_NO_STEM)
    else:
        if arch.stem is None:
            raise ArchitectureError(f"stem: missing required key for family {family!r}")
        out["stem"] = check_width(arch.stem, "stem")
    raw = arch.stages
    if not is_list(raw) or not raw:
        raise ArchitectureError("stages: must be a non-empty list")
    stages = tuple(rules.check_stage(stage, f"stages[{s}]") for s, stage in enumerate(raw))
    out["stages"] = stages
    # Each stage after the first halves the resolution (pool or stride 2).
    if out["input_size"] < 2 ** (len(stages) - 1):
        raise ArchitectureError(
            f"input_size: {out['input_size']} px is too small for {len(stages)} stages "
            f"(needs >= {2 ** (len(stages) - 1)})"
        )
    if not isinstance(arch.meta, Mapping):
        raise ArchitectureError(f"meta: must be an object, got {type(arch.meta).__name__}")
    # meta is free-form, but written back as JSON by recursive code: bound its depth and numbers.
    check_tree(dict(arch.meta), error=ArchitectureError, where="meta")
    out["meta"] = dict(arch.meta)
    return out


_NO_STEM = "stem: only " + " and ".join(f"family {n!r}" for n, f in _RULES.items() if f.has_stem) + \
    " has a stem; remove it"


def _parse(data: Any) -> Architecture:
    if not isinstance(data, Mapping):
        raise ArchitectureError(f"architecture must be a JSON object, got {type(data).__name__}")
    if "format" not in data:
        raise ArchitectureError(f"format: missing required key (must be {FORMAT!r})")
    if data["format"] != FORMAT:
        raise ArchitectureError(f"format: must be {FORMAT!r}, got {show(data['format'])}")
    version = data.get("version")
    if type(version) is not int or version != VERSION:
        raise ArchitectureError(f"version: unsupported version {show(version)}; this grownet reads version {VERSION}")
    family = data.get("family")
    if not isinstance(family, str) or family not in FAMILIES:
        raise ArchitectureError(f"family: must be one of {', '.join(FAMILIES)}, got {show(family)}")
    rules = family_of(family)
    if not rules.has_stem and "stem" in data:
        raise ArchitectureError(_NO_STEM)
    unknown = sorted(map(str, set(data) - _TOP_KEYS - {"stem"}))
    if unknown:
        raise ArchitectureError(f"{unknown[0]}: unknown key (extra information belongs under 'meta')")
    required = ("in_channels", "input_size", "num_classes") + (("stem",) if rules.has_stem else ()) + ("stages",)
    for key in required:
        if key not in data:
            raise ArchitectureError(f"{key}: missing required key")
    meta = data.get("meta", {})
    if not isinstance(meta, Mapping):
        raise ArchitectureError(f"meta: must be an object, got {type(meta).__name__}")
    raw = data["stages"]
    if not is_list(raw) or not raw:
        raise ArchitectureError("stages: must be a non-empty list")
    return Architecture(
        family=family,
        stages=tuple(rules.read_stage(stage, f"stages[{s}]") for s, stage in enumerate(raw)),
        in_channels=data["in_channels"],
        input_size=data["input_size"],
        num_classes=data["num_classes"],
        stem=data.get("stem"),
        meta=meta,
    )


# ---- JSON text ---------------------------------------------------------------------------------

#: Meta values are written on one line when they fit in this many columns.
_LINE = 88


def _format(data: Mapping[str, Any]) -> str:
    """``data`` (a to_dict result) as JSON: one top-level key per line, one stage per line."""
    lines = []
    for key, value in data.items():
        if key == "stages":
            rows = ",\n".join("    " + json.dumps(stage) for stage in value)
            text = "[\n" + rows + "\n  ]"
        else:
            text = _dump(value, indent=2, used=len(key) + 4)
        lines.append(f"  {json.dumps(key)}: {text}")
    return "{\n" + ",\n".join(lines) + "\n}"


def _dump(value: Any, *, indent: int, used: int) -> str:
    """``value`` on one line if it fits in ``_LINE`` columns (``indent + used`` already taken),
    else expanded: one item per line, or filled rows for a list of scalars."""
    flat = json.dumps(value, allow_nan=False)
    if not isinstance(value, (dict, list)) or not value or indent + used + len(flat) <= _LINE:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        keys = [json.dumps(k) for k in value]
        items = [f"{pad}{k}: {_dump(v, indent=indent + 2, used=len(k) + 3)}" for k, v in zip(keys, value.values())]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if not any(isinstance(v, (dict, list)) for v in value):
        # A long list of scalars: filled rows, not one number per line.
        rows, row = [], ""
        for text in (json.dumps(v, allow_nan=False) for v in value):
            if row and len(pad) + len(row) + len(text) + 2 > _LINE:
                rows.append(row)
                row = ""
            row += (" " if row else "") + text + ","
        rows.append(row[:-1])
        return "[\n" + "\n".join(pad + r for r in rows) + "\n" + " " * indent + "]"
    items = [pad + _dump(v, indent=indent + 2, used=1) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def _jsonable(value: Any) -> Any:
    """Meta values as plain JSON types (non-finite floats become None)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy / torch scalars
        return _jsonable(value.item())
    return str(value)

"""The architecture spec: what grownet grows, saves as JSON, and builds into modules.

An :class:`Architecture` is plain, immutable data (the "adaptive filter configuration").
:func:`grownet.models.build_model` turns it into modules; :mod:`grownet.grow` returns new
architectures with one layer wider or one stage deeper.

Layer names, used everywhere (activity tables, JSON, reports):

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
from pathlib import Path
from typing import Any, Mapping

from .errors import ArchitectureError
from .files import atomic_write_text
from .validate import check_tree, read_json, show

__all__ = ["Architecture", "ResStage", "FAMILIES", "FORMAT", "VERSION", "MAX_WIDTH", "MAX_LAYERS", "MAX_CLASSES"]

FORMAT = "grownet.architecture"
VERSION = 1
FAMILIES = ("vgg", "resnet")
#: Largest accepted width: far above any CIFAR-scale net, small enough to catch typos
#: (a width of 10**9 would allocate terabytes).
MAX_WIDTH = 65536
#: Most layers (VGG convs, ResNet blocks) in one stage: ResNet-1202 has 200; a million would
#: take hours only to cost.
MAX_LAYERS = 1024
#: Most classifier outputs (ImageNet-21k has 21,841 classes).
MAX_CLASSES = 1_000_000
_TOP_KEYS = {"format", "version", "family", "in_channels", "input_size", "num_classes", "stages", "meta"}


@dataclass(frozen=True)
class ResStage:
    """One ResNet stage: residual width and each basic block's inner width."""

    width: int
    blocks: tuple[int, ...]


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
        if self.family == "vgg":
            out["stages"] = [list(s) for s in self.stages]
        else:
            out["stem"] = self.stem
            out["stages"] = [{"width": s.width, "blocks": list(s.blocks)} for s in self.stages]
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

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def layer_widths(self) -> dict[str, int]:
        """Every growable layer's width, keyed by layer name, in network order."""
        if self.family == "vgg":
            return {f"stages.{s}.{l}": w for s, stage in enumerate(self.stages) for l, w in enumerate(stage)}
        widths: dict[str, int] = {"stem": int(self.stem)}  # type: ignore[arg-type]
        for s, stage in enumerate(self.stages):
            for b, inner in enumerate(stage.blocks):
                widths[f"stages.{s}.{b}"] = inner
            widths[f"stages.{s}"] = stage.width
        return widths

    def stage_layers(self, stage: int) -> list[str]:
        """Layer names belonging to a stage (for ResNet: the blocks' inner widths and the
        stage's residual width)."""
        prefix = f"stages.{stage}"
        return [n for n in self.layer_widths() if n == prefix or n.startswith(prefix + ".")]

    def width(self, layer: str) -> int:
        """Width of one layer; raises ArchitectureError for an unknown name."""
        widths = self.layer_widths()
        if layer not in widths:
            raise ArchitectureError(f"unknown layer {layer!r}; known layers: {', '.join(widths)}")
        return widths[layer]

    def with_width(self, layer: str, width: int) -> "Architecture":
        """A copy with one layer set to ``width`` (meta dropped: it described the old net)."""
        self.width(layer)  # validates the name
        if not isinstance(width, int) or isinstance(width, bool) or not 0 < width <= MAX_WIDTH:
            raise ArchitectureError(f"{layer}: width must be a positive integer <= {MAX_WIDTH}, got {show(width)}")
        parts = layer.split(".")
        if layer == "stem":
            return replace(self, stem=width, meta={})
        s = int(parts[1])
        stages = list(self.stages)
        if self.family == "vgg":
            l = int(parts[2])
            stage = list(stages[s])
            stage[l] = width
            stages[s] = tuple(stage)
        elif len(parts) == 2:
            stages[s] = ResStage(width, stages[s].blocks)
        else:
            b = int(parts[2])
            blocks = list(stages[s].blocks)
            blocks[b] = width
            stages[s] = ResStage(stages[s].width, tuple(blocks))
        return replace(self, stages=tuple(stages), meta={})

    def with_extra_layer(self, stage: int) -> "Architecture":
        """A copy with one more layer at the end of ``stage``: a VGG conv of the stage's last
        width, or a ResNet block whose inner width is the stage's last block's."""
        if not isinstance(stage, int) or not 0 <= stage < self.num_stages:
            raise ArchitectureError(f"stage must be an integer in [0, {self.num_stages - 1}], got {show(stage)}")
        stages = list(self.stages)
        if self.family == "vgg":
            stages[stage] = tuple(stages[stage]) + (stages[stage][-1],)
        else:
            st = stages[stage]
            stages[stage] = ResStage(st.width, st.blocks + (st.blocks[-1],))
        return replace(self, stages=tuple(stages), meta={})

    def with_meta(self, **meta: Any) -> "Architecture":
        """A copy whose meta is updated with ``meta``."""
        return replace(self, meta={**self.meta, **meta})


# ---- validation ----------------------------------------------------------------------------
#
# Two layers: ``_parse`` checks the JSON shape (format, version, keys, lists vs objects) and
# ``_validated`` (run by ``Architecture.__post_init__``) checks the values, so both ways in give
# the same field-path messages.


def _int(value: Any, path: str, what: str, *, low: int = 1, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f" <= {high}" if high is not None else ""
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ArchitectureError(f"{path}: {what} must be {kind}{bound}, got {show(value)}")
    return value


def _width(value: Any, path: str) -> int:
    return _int(value, path, "width", high=MAX_WIDTH)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _validated(arch: Architecture) -> dict[str, Any]:
    """The normalised field values of ``arch``; raises ArchitectureError naming the field."""
    family = arch.family
    if family not in FAMILIES:
        raise ArchitectureError(f"family: must be one of {', '.join(FAMILIES)}, got {show(family)}")
    out: dict[str, Any] = {
        "in_channels": _int(arch.in_channels, "in_channels", "value", high=4096),
        "input_size": _int(arch.input_size, "input_size", "value", high=8192),
        "num_classes": _int(arch.num_classes, "num_classes", "value", high=MAX_CLASSES),
    }
    if family == "vgg":
        if arch.stem is not None:
            raise ArchitectureError("stem: only family 'resnet' has a stem; remove it")
    else:
        if arch.stem is None:
            raise ArchitectureError("stem: missing required key for family 'resnet'")
        out["stem"] = _width(arch.stem, "stem")
    raw = arch.stages
    if not _is_list(raw) or not raw:
        raise ArchitectureError("stages: must be a non-empty list")
    stages: list = []
    for s, stage in enumerate(raw):
        if family == "vgg":
            if not _is_list(stage) or not stage:
                raise ArchitectureError(f"stages[{s}]: must be a non-empty list of widths")
            _max_layers(stage, f"stages[{s}]")
            stages.append(tuple(_width(w, f"stages[{s}][{l}]") for l, w in enumerate(stage)))
            continue
        if isinstance(stage, Mapping):
            stage = _res_stage(stage, f"stages[{s}]")
        if not isinstance(stage, ResStage):
            raise ArchitectureError(f"stages[{s}]: must be an object with 'width' and 'blocks'")
        width = _width(stage.width, f"stages[{s}].width")
        if not _is_list(stage.blocks) or not stage.blocks:
            raise ArchitectureError(f"stages[{s}].blocks: must be a non-empty list of widths")
        _max_layers(stage.blocks, f"stages[{s}].blocks")
        blocks = tuple(_width(w, f"stages[{s}].blocks[{b}]") for b, w in enumerate(stage.blocks))
        stages.append(ResStage(width, blocks))
    out["stages"] = tuple(stages)
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


def _max_layers(layers: Any, path: str) -> None:
    if len(layers) > MAX_LAYERS:
        raise ArchitectureError(f"{path}: {len(layers)} layers; a stage holds at most {MAX_LAYERS}")


def _res_stage(stage: Mapping[str, Any], path: str) -> ResStage:
    """A ResNet stage object ``{"width": w, "blocks": [...]}`` with its keys checked (values are
    checked by ``_validated``)."""
    extra = sorted(map(str, set(stage) - {"width", "blocks"}))
    if extra:
        raise ArchitectureError(f"{path}.{extra[0]}: unknown key (a stage has only 'width' and 'blocks')")
    for key in ("width", "blocks"):
        if key not in stage:
            raise ArchitectureError(f"{path}.{key}: missing required key")
    if not _is_list(stage["blocks"]) or not stage["blocks"]:
        raise ArchitectureError(f"{path}.blocks: must be a non-empty list of widths")
    return ResStage(stage["width"], tuple(stage["blocks"]))


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
    if family == "vgg" and "stem" in data:
        raise ArchitectureError("stem: only family 'resnet' has a stem; remove it")
    unknown = sorted(map(str, set(data) - _TOP_KEYS - {"stem"}))
    if unknown:
        raise ArchitectureError(f"{unknown[0]}: unknown key (extra information belongs under 'meta')")
    required = ("in_channels", "input_size", "num_classes") + (("stem",) if family == "resnet" else ()) + ("stages",)
    for key in required:
        if key not in data:
            raise ArchitectureError(f"{key}: missing required key")
    meta = data.get("meta", {})
    if not isinstance(meta, Mapping):
        raise ArchitectureError(f"meta: must be an object, got {type(meta).__name__}")
    raw = data["stages"]
    if not _is_list(raw) or not raw:
        raise ArchitectureError("stages: must be a non-empty list")
    if family == "resnet":
        for s, stage in enumerate(raw):
            if not isinstance(stage, Mapping):
                raise ArchitectureError(f"stages[{s}]: must be an object with 'width' and 'blocks'")
        raw = [_res_stage(stage, f"stages[{s}]") for s, stage in enumerate(raw)]
    return Architecture(
        family=family,
        stages=tuple(raw),
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

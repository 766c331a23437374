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

__all__ = ["Architecture", "ResStage", "FAMILIES", "FORMAT", "VERSION", "MAX_WIDTH"]

FORMAT = "grownet.architecture"
VERSION = 1
FAMILIES = ("vgg", "resnet")
#: Largest accepted width: far above any CIFAR-scale net, small enough to catch typos
#: (a width of 10**9 would allocate terabytes).
MAX_WIDTH = 65536
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
        meta: free-form information (MACs, accuracies, provenance); ignored when building.
    """

    family: str
    stages: tuple
    in_channels: int = 3
    input_size: int = 32
    num_classes: int = 10
    stem: int | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

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
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ArchitectureError(f"{path}: file not found; pass the path of an architecture.json") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ArchitectureError(f"{path}: cannot read ({exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
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
        """The JSON text of :meth:`to_dict`, indented, with a trailing newline."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

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
            raise ArchitectureError(f"{layer}: width must be a positive integer <= {MAX_WIDTH}, got {width!r}")
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
            raise ArchitectureError(f"stage must be an integer in [0, {self.num_stages - 1}], got {stage!r}")
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


def _int(value: Any, path: str, what: str, *, low: int = 1, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bound = f" <= {high}" if high is not None else ""
        kind = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ArchitectureError(f"{path}: {what} must be {kind}{bound}, got {value!r}")
    return value


def _width(value: Any, path: str) -> int:
    return _int(value, path, "width", high=MAX_WIDTH)


def _parse(data: Any) -> Architecture:
    if not isinstance(data, Mapping):
        raise ArchitectureError(f"architecture must be a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise ArchitectureError(f"format: must be {FORMAT!r}, got {data.get('format')!r}")
    version = data.get("version")
    if version != VERSION or isinstance(version, bool):
        raise ArchitectureError(f"version: unsupported version {version!r}; this grownet reads version {VERSION}")
    family = data.get("family")
    if family not in FAMILIES:
        raise ArchitectureError(f"family: must be one of {', '.join(FAMILIES)}, got {family!r}")
    allowed = _TOP_KEYS | ({"stem"} if family == "resnet" else set())
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ArchitectureError(f"{unknown[0]}: unknown key (extra information belongs under 'meta')")
    for key in ("in_channels", "input_size", "num_classes", "stages"):
        if key not in data:
            raise ArchitectureError(f"{key}: missing required key")
    in_channels = _int(data["in_channels"], "in_channels", "value", high=4096)
    input_size = _int(data["input_size"], "input_size", "value", high=8192)
    num_classes = _int(data["num_classes"], "num_classes", "value", high=1_000_000)
    meta = data.get("meta", {})
    if not isinstance(meta, Mapping):
        raise ArchitectureError(f"meta: must be an object, got {type(meta).__name__}")
    raw = data["stages"]
    if not isinstance(raw, list) or not raw:
        raise ArchitectureError("stages: must be a non-empty list")
    stages: list = []
    if family == "vgg":
        for s, stage in enumerate(raw):
            if not isinstance(stage, list) or not stage:
                raise ArchitectureError(f"stages[{s}]: must be a non-empty list of widths")
            stages.append(tuple(_width(w, f"stages[{s}][{l}]") for l, w in enumerate(stage)))
        stem = None
    else:
        if "stem" not in data:
            raise ArchitectureError("stem: missing required key for family 'resnet'")
        stem = _width(data["stem"], "stem")
        for s, stage in enumerate(raw):
            if not isinstance(stage, Mapping):
                raise ArchitectureError(f"stages[{s}]: must be an object with 'width' and 'blocks'")
            extra = sorted(set(stage) - {"width", "blocks"})
            if extra:
                raise ArchitectureError(f"stages[{s}].{extra[0]}: unknown key")
            if "width" not in stage:
                raise ArchitectureError(f"stages[{s}].width: missing required key")
            if "blocks" not in stage:
                raise ArchitectureError(f"stages[{s}].blocks: missing required key")
            width = _width(stage["width"], f"stages[{s}].width")
            blocks = stage["blocks"]
            if not isinstance(blocks, list) or not blocks:
                raise ArchitectureError(f"stages[{s}].blocks: must be a non-empty list of widths")
            stages.append(ResStage(width, tuple(_width(w, f"stages[{s}].blocks[{b}]") for b, w in enumerate(blocks))))
    # Each stage after the first halves the resolution (pool or stride 2).
    if input_size < 2 ** (len(stages) - 1):
        raise ArchitectureError(
            f"input_size: {input_size} px is too small for {len(stages)} stages (needs >= {2 ** (len(stages) - 1)})"
        )
    return Architecture(
        family=family,
        stages=tuple(stages),
        in_channels=in_channels,
        input_size=input_size,
        num_classes=num_classes,
        stem=stem,
        meta=dict(meta),
    )


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

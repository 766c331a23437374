"""Look at an architecture without training: every layer's kind, width, output shape, MACs and
parameters, the totals, and for a run folder the seed-to-final widths.

:func:`show_info` returns plain records; ``grownet show`` draws them (a rich table, or
tab-separated lines with ``--quiet``). MACs and parameters per layer are
:func:`grownet.cost`'s (FlopCounterMode), output shapes come from one forward pass on the
``meta`` device, and layer kinds are read off the built modules, so nothing here is a
hand-written formula.

Example::

    info = show_info("runs/cifar10-cpu")            # or an architecture JSON
    for row in info.layers:
        print(row.layer, row.kind, row.width, row.output, row.macs, f"{row.macs_share:.1%}")
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .arch import Architecture
from .cost import cost
from .errors import ArchitectureError, RunError
from .models import build_model, layer_modules

__all__ = ["LayerRow", "WidthChange", "ShowInfo", "show_info"]


@dataclass(frozen=True)
class LayerRow:
    """One layer of the net (``classifier`` last).

    Attributes:
        layer: the architecture's layer name (``stages.1.0``, ``stem``, ``classifier``).
        kind: the modules that produce it, e.g. ``conv3x3``, ``conv3x3/2`` (stride 2),
            ``residual: 3×conv3x3 + conv1x1/2`` (a ResNet stage's block outputs and its
            projection shortcut), ``linear``.
        width: output channels (the classes, for the classifier).
        output: output shape of one sample: ``(C, H, W)``, or ``(classes,)``.
        macs, params: inference multiply-accumulates and parameters of its modules.
        macs_share, params_share: their fractions of the whole net's (in [0, 1]).
    """

    layer: str
    kind: str
    width: int
    output: tuple[int, ...]
    macs: int
    params: int
    macs_share: float
    params_share: float


@dataclass(frozen=True)
class WidthChange:
    """A layer's width in a run's seed net and in its final net (``seed`` is ``None`` for a
    layer that deepening added)."""

    layer: str
    seed: int | None
    final: int


@dataclass(frozen=True)
class ShowInfo:
    """What ``grownet show`` shows.

    Attributes:
        source: the run folder or architecture JSON read (``None`` for an Architecture).
        arch: the architecture shown (a run's final one).
        layers: one row per layer, in network order, then ``classifier``.
        macs, params: totals (the layer rows sum to them).
        growth: for a run folder, each layer's seed and final width; empty otherwise.
        val_acc, test_acc: a run's accuracies (``None`` for an architecture JSON).
    """

    source: Path | None
    arch: Architecture
    layers: list[LayerRow]
    macs: int
    params: int
    growth: list[WidthChange]
    val_acc: float | None = None
    test_acc: float | None = None


def show_info(source: str | os.PathLike | Architecture) -> ShowInfo:
    """The records of :class:`ShowInfo` for a run folder, an architecture JSON file, or an
    Architecture.

    Raises:
        RunError: a run folder that is missing files or holds malformed ones.
        ArchitectureError: an invalid architecture JSON, or a folder without architecture.json.
    """
    if isinstance(source, Architecture):
        return _info(source, None)
    path = Path(source)
    if not path.is_dir():
        return _info(Architecture.from_json(path), path)
    from .report import load_run

    run = load_run(path)
    if run.arch is None:
        raise ArchitectureError(f"{path}: no architecture.json in this folder (has the run finished?); pass a finished "
                                "grownet run folder or an architecture JSON file")
    try:
        seed = Architecture.from_dict(run.summary["seed_arch"])
    except (KeyError, ArchitectureError) as exc:
        raise RunError(f"{path / 'summary.json'}: seed_arch: missing or invalid ({exc}); "
                       "is this a finished grownet run folder?") from None
    final = run.arch.layer_widths()
    seed_widths = seed.layer_widths()
    growth = [WidthChange(layer, seed_widths.get(layer), width) for layer, width in final.items()]
    return _info(run.arch, path, growth=growth, val_acc=_number(run.summary.get("val_acc")),
                 test_acc=_number(run.summary.get("test_acc")))


def _info(arch: Architecture, source: Path | None, **extra: Any) -> ShowInfo:
    c = cost(arch)
    modules, shapes = _modules_and_shapes(arch)
    widths = arch.layer_widths()
    rows = []
    for layer, lc in c.layers.items():
        names = ["classifier"] if layer == "classifier" else layer_modules(arch, layer)
        convs = [modules[n] for n in names if isinstance(modules[n], (nn.Conv2d, nn.Linear))]
        rows.append(LayerRow(
            layer=layer,
            kind=_role(arch, layer) + " + ".join(f"{n}×{k}" if n > 1 else k for k, n in Counter(map(_kind, convs)).items()),
            width=widths.get(layer, arch.num_classes),
            output=shapes[names[-1]],  # the last module: BatchNorm (all of a layer's share one shape), or the linear
            macs=lc.macs,
            params=lc.params,
            macs_share=lc.macs / c.macs if c.macs else 0.0,
            params_share=lc.params / c.params if c.params else 0.0,
        ))
    return ShowInfo(source, arch, rows, c.macs, c.params, extra.pop("growth", []), **extra)


def _modules_and_shapes(arch: Architecture) -> tuple[dict[str, nn.Module], dict[str, tuple[int, ...]]]:
    """The built model's modules by name, and each module's output shape for one sample
    (one forward pass on the ``meta`` device: nothing is allocated, no RNG is drawn)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = build_model(arch)
    model.eval()
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [m.register_forward_hook(lambda _m, _args, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
               for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(torch.empty(1, arch.in_channels, arch.input_size, arch.input_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return dict(model.named_modules()), shapes


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    k, s = module.kernel_size, module.stride
    return f"conv{k[0]}x{k[1]}" + (f"/{s[0]}" if s[0] > 1 else "")


def _role(arch: Architecture, layer: str) -> str:
    """``"residual: "`` for a ResNet stage's residual width (``stages.S``: the sum of its
    blocks' outputs and its shortcut), else nothing."""
    return "residual: " if arch.family == "resnet" and layer.count(".") == 1 else ""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

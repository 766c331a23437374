"""Look at an architecture without training: every layer's kind, width, output shape, MACs and
parameters, the totals, and for a run folder the seed-to-final widths.

:func:`show_info` returns plain records; :func:`draw_show` draws them with rich and
:func:`show_tsv` writes them as tab-separated lines (``grownet show`` and ``grownet show
--quiet``). MACs and parameters per layer are
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
from .models import build_model

__all__ = ["LayerRow", "WidthChange", "ShowInfo", "show_info", "draw_show", "show_tsv"]


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


def show_tsv(info: ShowInfo) -> list[str]:
    """``info`` as tab-separated lines: a header, one line per layer (output shape as
    ``C×H×W``, shares as fractions), a ``total`` line; then, for a run, a blank line and
    ``layer, seed, final`` lines (an empty seed: a layer added by deepening)."""
    lines = ["layer\tkind\twidth\toutput\tmacs\tmacs_share\tparams\tparams_share"]
    lines += [f"{r.layer}\t{r.kind}\t{r.width}\t{_shape(r.output)}\t{r.macs}\t{r.macs_share:.4f}\t{r.params}\t"
              f"{r.params_share:.4f}" for r in info.layers]
    lines.append(f"total\t\t\t\t{info.macs}\t1.0000\t{info.params}\t1.0000")
    if info.growth:
        lines += ["", "layer\tseed\tfinal"]
        lines += [f"{g.layer}\t{'' if g.seed is None else g.seed}\t{g.final}" for g in info.growth]
    return lines


def draw_show(info: ShowInfo, console: Any) -> None:
    """Print ``info`` on a rich ``console``: the layer table (MACs in k/M, shares in
    percent, output as ``H×W``), the exact totals and a run's accuracies, and a run's
    seed-to-final widths."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    arch = info.arch
    title = (f"{escape(str(info.source or 'architecture'))}: {arch.family}, input {arch.in_channels}×{arch.input_size}×"
             f"{arch.input_size}, {arch.num_classes} classes")
    table = Table(title=title, title_justify="left", show_footer=True, box=box.SIMPLE_HEAD, pad_edge=False)
    for col, foot in (("layer", "total"), ("kind", ""), ("width", ""), ("output", ""), ("MACs", _count(info.macs)),
                      ("%", "100.0"), ("params", f"{info.params:,}"), ("% ", "100.0")):
        wrap = col == "kind"  # the only column with spaces to wrap at; the others keep their width
        table.add_column(col, footer=foot, justify="left" if col in ("layer", "kind") else "right", no_wrap=not wrap)
    for r in info.layers:
        table.add_row(r.layer, r.kind, str(r.width), _shape(r.output[1:] or r.output), _count(r.macs),
                      f"{100 * r.macs_share:.1f}", f"{r.params:,}", f"{100 * r.params_share:.1f}")
    console.print(table)
    accuracy = "".join(f", {k} {v:.4f}" for k, v in (("val acc", info.val_acc), ("test acc", info.test_acc)) if v is not None)
    console.print(f"{info.macs:,} MACs, {info.params:,} params{accuracy}", highlight=False)
    if info.growth:
        grown = Table(title="seed → final widths", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("layer", "seed", "final", "change"):
            grown.add_column(col, justify="left" if col == "layer" else "right")
        for g in info.growth:
            change = "new (deepened)" if g.seed is None else (f"{g.final - g.seed:+d}" if g.final != g.seed else "")
            grown.add_row(g.layer, "-" if g.seed is None else str(g.seed), str(g.final), change)
        console.print(grown)


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def _count(count: int) -> str:
    """A count in at most 7 characters: 49.93M, 442.4k, 640."""
    return f"{count / 1e6:.2f}M" if count >= 10**6 else (f"{count / 1e3:.1f}k" if count >= 10**3 else str(count))


def _info(arch: Architecture, source: Path | None, **extra: Any) -> ShowInfo:
    c = cost(arch)
    modules, shapes = _modules_and_shapes(arch)
    records = {layer.name: layer for layer in arch.layers}
    rows = []
    for layer, lc in c.layers.items():
        record = records.get(layer)  # None for the classifier
        names = ["classifier"] if record is None else record.modules
        convs = [modules[n] for n in names if isinstance(modules[n], (nn.Conv2d, nn.Linear))]
        role = "residual: " if record is not None and record.kind == "residual" else ""
        rows.append(LayerRow(
            layer=layer,
            kind=role + " + ".join(f"{n}×{k}" if n > 1 else k for k, n in Counter(map(_kind, convs)).items()),
            width=arch.num_classes if record is None else record.width,
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


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

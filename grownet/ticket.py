"""Winning tickets (METHOD.md §5): train a net with DessiLBI, keep the filters in Γ's support,
physically remove the others, fine-tune the smaller net, and compare it with the same small
net trained from a fresh initialisation.

Definitions used throughout:

- **Support of a layer**: the union, over every conv producing the layer's channels
  (:func:`grownet.models.layer_conv_weights`), of the filters whose Γ group is non-zero. A
  ResNet residual channel is therefore kept if ANY block's ``conv2`` or the projection
  shortcut that writes it has it in Γ's support. When stage 0's first block has no projection
  shortcut, the stem's channels are the same residual channels, so ``stem`` and ``stages.0``
  share one keep set (the union of both supports).
- **Keep set** of a layer: its support; a layer whose support is empty keeps its one filter
  with the largest score (‖V_g‖ when an optimizer is given, else ‖W_g‖), so every layer
  keeps at least one filter.
- **Masked net**: the dense net with every removed channel's producing conv filters set to
  zero (W ⊙ 1[channel kept]); everything else unchanged. In eval mode a removed channel then
  carries a per-channel constant: ``relu(bias - running_mean * weight / sqrt(running_var +
  eps))`` of its BatchNorm (for a ResNet residual channel, that constant accumulated through
  the stage's blocks).
- **Pruned net** (the ticket): a physically smaller net with the keep sets' widths, every
  tensor sliced from the dense one (conv outputs, BatchNorm, consumers' fan-in, classifier
  columns), and the removed channels' constants folded into their consumers:

  ========================================  ===================================  ===============
  consumer of a removed channel             folded into                          exact?
  ========================================  ===================================  ===============
  linear classifier after global avg pool   ``classifier.bias``                  exact
  1x1 projection shortcut (no padding)      shortcut BN ``running_mean``         exact
  3x3 conv with zero padding 1              next BN ``running_mean``             approximate
  ========================================  ===================================  ===============

  A 3x3 consumer with zero padding adds ``k_c * sum(W[o, c, taps inside the image])`` to its
  output ``o``: all 9 taps in the interior, fewer at the border (padding zeros replace the
  constant there), so no per-channel constant reproduces it everywhere. ``fold="interior"``
  folds the 9-tap sum (exact in the interior, wrong at the border ring, and at every position
  of a 2x2 map); ``fold="mean"`` (the default) folds its average over output positions (the
  least-squares constant, exact for the BN input's spatial mean), which measured closer to the
  masked net (VGG with 2 stages, 32 px, Γ supports after 60 DessiLBI steps, 5 seeds: accuracy
  on 400 images within 0.5 points of the masked net for "mean" every time, up to 2.5 points
  off for "interior"). Errors at one layer's border propagate inward through later layers.
  Folding into ``running_mean`` is the eval-mode fold; in training mode BatchNorm subtracts the
  batch mean, which absorbs a constant shift anyway. :func:`ticket` measures the pruned net
  with every fold mode against the masked net.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .arch import Architecture
from .cost import cost
from .errors import DivergenceError, GrownetError, UsageError
from .files import atomic_write_bytes
from .models import as_architecture, build_model, has_shortcut, layer_conv_weights
from .job import FILE_ONLY, log_to_file, make_data, make_dessilbi, rng_scope, seed_all, seed_arch
from .runfolder import RunFolder, make_folder, remove_created
from .train import amp_dtype, cosine_lr, evaluate, prepare_model, resolve_device, train_epoch, wants_channels_last
from .weights import save_model

__all__ = [
    "FOLD_MODES",
    "REPORT_SECTIONS",
    "SCORE_LABELS",
    "Consumer",
    "FoldRecord",
    "PruneResult",
    "Score",
    "SupportInfo",
    "TicketResult",
    "filter_scores",
    "filter_support",
    "keep_sets",
    "layer_supports",
    "mask_model",
    "prune_model",
    "reduced_arch",
    "removed_constants",
    "render_ticket_report",
    "resolve_arch",
    "summary_dict",
    "support_figure",
    "support_info",
    "tap_coverage",
    "ticket",
    "tied_layers",
    "wiring",
    "write_ticket_report",
]

log = logging.getLogger(__name__)


# ---- wiring: who produces and who consumes each layer's channels -------------------------------


@dataclass(frozen=True)
class Consumer:
    """One conv (or the classifier) of a model, with the layers it reads and writes.

    Attributes:
        module: the module's name (``"stages.0.1.conv"``, ``"classifier"``).
        out_layer: the layer its output channels belong to (``None`` for the classifier).
        in_layer: the layer its input channels belong to (``None``: the image).
        bn: the BatchNorm after it (``None`` for the classifier).
        exact_fold: whether a constant input channel folds exactly (1x1 conv without
            padding, or the classifier after global average pooling).
    """

    module: str
    out_layer: str | None
    in_layer: str | None
    bn: str | None
    exact_fold: bool


def wiring(arch: Architecture) -> list[Consumer]:
    """Every conv and the classifier of ``arch``'s model, in forward order."""
    out: list[Consumer] = []
    if arch.family == "vgg":
        prev: str | None = None
        for s, stage in enumerate(arch.stages):
            for l in range(len(stage)):
                name = f"stages.{s}.{l}"
                out.append(Consumer(f"{name}.conv", name, prev, f"{name}.bn", False))
                prev = name
        out.append(Consumer("classifier", None, prev, None, True))
        return out
    out.append(Consumer("stem.conv", "stem", None, "stem.bn", False))
    res_in = "stem"
    for s, stage in enumerate(arch.stages):
        res = f"stages.{s}"
        for b in range(len(stage.blocks)):
            blk = inner = f"stages.{s}.{b}"
            out.append(Consumer(f"{blk}.conv1", inner, res_in, f"{blk}.bn1", False))
            out.append(Consumer(f"{blk}.conv2", res, inner, f"{blk}.bn2", False))
            if has_shortcut(arch, s, b):
                out.append(Consumer(f"{blk}.shortcut.conv", res, res_in, f"{blk}.shortcut.bn", True))
            res_in = res
    out.append(Consumer("classifier", None, res_in, None, True))
    return out


def tied_layers(arch: Architecture) -> list[tuple[str, ...]]:
    """Groups of layers whose channels are the same residual channels (they must keep the same
    indices): ``("stem", "stages.0")`` when stage 0's first block has an identity shortcut."""
    if arch.family == "resnet" and not has_shortcut(arch, 0, 0):
        return [("stem", "stages.0")]
    return []


def _producers(arch: Architecture, layer: str) -> list[str]:
    """Conv weight names whose output filters write ``layer``'s channels (tied layers included)."""
    for group in tied_layers(arch):
        if layer in group:
            return [w for member in group for w in layer_conv_weights(arch, member)]
    return layer_conv_weights(arch, layer)


# ---- supports and keep sets ----------------------------------------------------------------------


def layer_supports(
    arch: Architecture, filter_support: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Each layer's support: the union of its producing convs' filter supports.

    Args:
        arch: the architecture.
        filter_support: conv weight name -> bool tensor ``(out_channels,)``, e.g.
            ``{name: opt.support(p)}``.

    Returns:
        layer name -> bool tensor ``(width,)`` on the CPU, in network order; tied layers
        (:func:`tied_layers`) get the same union.
    """
    out: dict[str, torch.Tensor] = {}
    for layer, width in arch.layer_widths().items():
        mask = torch.zeros(width, dtype=torch.bool)
        for name in _producers(arch, layer):
            if name not in filter_support:
                raise UsageError(f"filter_support: missing {name!r} (needed by layer {layer!r})")
            sup = torch.as_tensor(filter_support[name]).detach().to("cpu", torch.bool).reshape(-1)
            if sup.numel() != width:
                raise UsageError(f"filter_support[{name!r}]: {sup.numel()} entries, but layer {layer!r} has width {width}")
            mask |= sup
        out[layer] = mask
    return out


def keep_sets(
    arch: Architecture,
    supports: Mapping[str, torch.Tensor],
    *,
    scores: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, list[int]]:
    """The filter indices each layer keeps: its support, at least one filter per layer.

    Args:
        arch: the architecture.
        supports: layer name -> bool tensor ``(width,)`` (:func:`layer_supports`).
        scores: layer name -> float tensor ``(width,)``; an empty layer keeps its
            highest-scoring filter (default: filter 0).

    Returns:
        layer name -> sorted indices, in network order. Tied layers get identical sets. When
        stage 0's first block has a projection shortcut (stem and stage-0 widths differ) and
        the keep sets would make the widths equal, the layer with spare filters keeps one
        more (highest score), so the reduced net keeps that shortcut.
    """
    widths = arch.layer_widths()
    keep: dict[str, list[int]] = {}
    for layer, width in widths.items():
        if layer not in supports:
            raise UsageError(f"supports: missing layer {layer!r}")
        mask = torch.as_tensor(supports[layer]).to("cpu", torch.bool).reshape(-1)
        if mask.numel() != width:
            raise UsageError(f"supports[{layer!r}]: {mask.numel()} entries, but the layer has width {width}")
        idx = torch.nonzero(mask).flatten().tolist()
        if not idx:
            idx = [_best(scores, layer, [])]
            log.info("layer %s: empty support; keeping filter %d (highest score)", layer, idx[0])
        keep[layer] = idx
    for group in tied_layers(arch):
        union = sorted(set().union(*(keep[m] for m in group)))
        for m in group:
            keep[m] = union
    if arch.family == "resnet" and has_shortcut(arch, 0, 0) and len(keep["stem"]) == len(keep["stages.0"]):
        layer = "stem" if len(keep["stem"]) < widths["stem"] else "stages.0"
        keep[layer] = sorted(keep[layer] + [_best(scores, layer, keep[layer])])
        log.info("layer %s keeps one filter outside the support so stage 0 keeps its projection shortcut", layer)
    return keep


def _best(scores: Mapping[str, torch.Tensor] | None, layer: str, taken: Sequence[int]) -> int:
    if scores is None or layer not in scores:
        return next(i for i in range(len(taken) + 1) if i not in taken)
    s = torch.as_tensor(scores[layer], dtype=torch.float64).detach().cpu().clone().reshape(-1)
    if taken:
        s[list(taken)] = -float("inf")
    return int(torch.argmax(s))


# ---- masked and pruned nets -----------------------------------------------------------------------


def reduced_arch(arch: Architecture, keep: Mapping[str, Sequence[int]]) -> Architecture:
    """``arch`` with every layer's width set to its keep set's size (meta dropped)."""
    out = arch
    for layer in arch.layer_widths():
        out = out.with_width(layer, len(keep[layer]))
    return out


def mask_model(model: nn.Module, keep: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``model`` whose removed channels' producing conv filters are zero.

    Every conv writing a layer (all producers of a residual channel) has its output filters
    outside ``keep[layer]`` zeroed; nothing else changes (BatchNorm included).
    """
    arch: Architecture = model.arch
    masked = copy.deepcopy(model)
    modules = dict(masked.named_modules())
    with torch.no_grad():
        for c in wiring(arch):
            if c.out_layer is None:
                continue
            w = modules[c.module].weight
            drop = _removed(w.shape[0], keep[c.out_layer])
            if drop:
                w[drop] = 0
    return masked


def _removed(width: int, kept: Sequence[int]) -> list[int]:
    ks = set(kept)
    return [i for i in range(width) if i not in ks]


@dataclass(frozen=True)
class FoldRecord:
    """The folding of one consumer's removed input channels.

    Attributes:
        module: the consumer (``"stages.1.0.conv"``, ``"classifier"``).
        target: what absorbed the constants (``"stages.1.0.bn.running_mean"``,
            ``"classifier.bias"``; empty with ``fold="none"``).
        channels: number of removed input channels.
        nonzero: how many of them carry a non-zero constant (the others need no fold).
        exact: whether the pruned consumer's output equals the masked one's at every position
            (an exact fold, or no non-zero constant).
        max_shift: largest absolute change applied to the target (0 with ``fold="none"``).
    """

    module: str
    target: str
    channels: int
    nonzero: int
    exact: bool
    max_shift: float


@dataclass
class PruneResult:
    """A ticket: the reduced architecture, its model, and what was folded.

    Attributes:
        arch: the reduced architecture (``model.arch``).
        model: the pruned model (same device and dtype as the dense one, eval mode).
        keep: layer name -> kept filter indices of the dense net.
        folds: one record per consumer with removed input channels.
    """

    arch: Architecture
    model: nn.Module
    keep: dict[str, list[int]]
    folds: list[FoldRecord] = field(default_factory=list)
    fold: str = "mean"

    @property
    def exact(self) -> bool:
        """Whether the pruned net computes exactly the masked net's function (eval mode)."""
        return all(f.exact for f in self.folds)


def removed_constants(masked: nn.Module, keep: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """The constant value of every removed channel at the input of each consumer (eval mode).

    Runs the masked net once on a zero image and reads each consumer's input. A removed
    channel's value does not depend on the input (its producing filters are zero), so the
    reading is the constant itself.

    Returns:
        consumer module name -> float64 tensor ``(removed input channels,)``, ascending
        channel index.
    """
    return {name: k for name, (k, _hw) in _probe(masked, keep).items()}


def _probe(masked: nn.Module, keep: Mapping[str, Sequence[int]]) -> dict[str, tuple[torch.Tensor, tuple[int, ...]]]:
    """consumer module -> (constants of its removed input channels, its input's spatial size)."""
    arch: Architecture = masked.arch
    modules = dict(masked.named_modules())
    seen: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {}
    hooks = []

    def hook_for(c: Consumer):
        def hook(_mod: nn.Module, args: tuple) -> None:
            x = args[0].detach().to(torch.float64)
            drop = _removed(x.shape[1], keep[c.in_layer])  # type: ignore[index]
            hw = tuple(x.shape[2:])
            if not drop:
                seen[c.module] = (x.new_zeros(0), hw)
                return
            flat = x[:, drop].transpose(0, 1).reshape(len(drop), -1)
            spread = (flat.max(1).values - flat.min(1).values).abs().max()
            if spread > 1e-5 * (1 + flat.abs().max()):  # a wiring bug, never a user error
                raise RuntimeError(f"{c.module}: removed input channels are not constant; the masked net is inconsistent")
            seen[c.module] = (flat[:, 0].clone(), hw)

        return hook

    for c in wiring(arch):
        if c.in_layer is not None:
            hooks.append(modules[c.module].register_forward_pre_hook(hook_for(c)))
    was_training = masked.training
    masked.eval()
    try:
        p = next(masked.parameters())
        with torch.no_grad():
            masked(torch.zeros(1, arch.in_channels, arch.input_size, arch.input_size, device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        masked.train(was_training)
    return seen


def tap_coverage(conv: nn.Conv2d, size: tuple[int, int]) -> torch.Tensor:
    """Share of ``conv``'s output positions at which each kernel tap reads inside the image.

    Args:
        conv: the consumer conv (its kernel size, stride and zero padding are used).
        size: its input's spatial size ``(H, W)``.

    Returns:
        float64 tensor ``(kh, kw)``; all ones for a 1x1 conv without padding.
    """
    fractions = []
    for k, s, p, n in zip(conv.kernel_size, conv.stride, conv.padding, size):  # type: ignore[arg-type]
        n_out = (n + 2 * p - k) // s + 1
        fractions.append(
            torch.tensor([sum(0 <= y * s - p + i < n for y in range(n_out)) / n_out for i in range(k)], dtype=torch.float64)
        )
    return torch.outer(fractions[0], fractions[1])


#: Fold modes of :func:`prune_model`.
FOLD_MODES = ("mean", "interior", "none")


def prune_model(model: nn.Module, keep: Mapping[str, Sequence[int]], *, fold: str = "mean") -> PruneResult:
    """Build the physically smaller net that keeps only ``keep``'s filters.

    Args:
        model: the dense model (``model.arch`` set, as :func:`grownet.models.build_model` does).
        keep: layer name -> kept indices (:func:`keep_sets`; tied layers must match).
        fold: how removed channels' constants reach a 3x3 conv consumer's BatchNorm:
            ``"mean"`` (default) folds the contribution averaged over output positions (each
            tap weighted by :func:`tap_coverage`): the least-squares constant, and the shift a
            re-estimated running mean would see; ``"interior"`` folds the contribution that is
            exact wherever the kernel window lies inside the image (all 9 taps); ``"none"``
            folds nothing. Exact folds (classifier, 1x1 shortcut) are applied in both
            ``"mean"`` and ``"interior"``.

    Returns:
        :class:`PruneResult` with the reduced architecture and model (eval mode).

    Raises:
        UsageError: for an unknown ``fold``, an empty, out-of-range or duplicated keep set,
            tied layers (:func:`tied_layers`) with different keep sets, or keep sets that would
            drop stage 0's projection shortcut.
    """
    if fold not in FOLD_MODES:
        raise UsageError(f"fold: must be one of {', '.join(FOLD_MODES)}, got {fold!r}")
    arch: Architecture = model.arch
    widths = arch.layer_widths()
    for layer in widths:
        if layer not in keep:
            raise UsageError(f"keep: missing layer {layer!r}")
    keep = {layer: sorted(int(i) for i in keep[layer]) for layer in widths}
    for layer, idx in keep.items():
        if not idx:
            raise UsageError(f"keep[{layer!r}]: every layer must keep at least one filter")
        if idx[0] < 0 or idx[-1] >= widths[layer] or len(set(idx)) != len(idx):
            raise UsageError(f"keep[{layer!r}]: indices must be distinct and in [0, {widths[layer] - 1}]")
    for group in tied_layers(arch):
        if any(keep[m] != keep[group[0]] for m in group):
            raise UsageError(f"keep: layers {', '.join(group)} share residual channels and must keep the same indices")
    small_arch = reduced_arch(arch, keep)
    if arch.family == "resnet" and has_shortcut(arch, 0, 0) != has_shortcut(small_arch, 0, 0):
        raise UsageError("keep: stem and stages.0 must keep different numbers of filters (stage 0 has a projection shortcut)")

    p0 = next(model.parameters())
    dev = p0.device
    small = build_model(small_arch).to(device=dev, dtype=p0.dtype)
    dense_sd = model.state_dict()
    index = {layer: torch.tensor(idx, dtype=torch.long, device=dev) for layer, idx in keep.items()}
    new_sd: dict[str, torch.Tensor] = {}
    for c in wiring(arch):
        w = dense_sd[f"{c.module}.weight"]
        if c.out_layer is not None:
            w = w.index_select(0, index[c.out_layer])
        if c.in_layer is not None:
            w = w.index_select(1, index[c.in_layer])
        new_sd[f"{c.module}.weight"] = w.contiguous()
        if c.bn is not None:
            for key in ("weight", "bias", "running_mean", "running_var"):
                new_sd[f"{c.bn}.{key}"] = dense_sd[f"{c.bn}.{key}"].index_select(0, index[c.out_layer])  # type: ignore[index]
            new_sd[f"{c.bn}.num_batches_tracked"] = dense_sd[f"{c.bn}.num_batches_tracked"].clone()
    new_sd["classifier.bias"] = dense_sd["classifier.bias"].clone()
    mismatch = set(small.state_dict()) ^ set(new_sd)
    if mismatch:  # a wiring bug, never a user error
        raise RuntimeError(f"prune_model: state dict mismatch on {sorted(mismatch)[:4]}")

    folds: list[FoldRecord] = []
    probe = _probe(mask_model(model, keep), keep)
    modules = dict(model.named_modules())
    for c in wiring(arch):
        if c.in_layer is None or probe[c.module][0].numel() == 0:
            continue
        k, hw = probe[c.module]
        k = k.to(dev)
        drop = torch.tensor(_removed(widths[c.in_layer], keep[c.in_layer]), dtype=torch.long, device=dev)
        w_drop = dense_sd[f"{c.module}.weight"].index_select(1, drop).to(torch.float64)
        nonzero = int((k != 0).sum())
        if c.out_layer is None:
            # classifier after global average pooling: a constant channel adds W[:, c] * k_c
            shift = w_drop @ k
            target = "classifier.bias"
            exact = True
        else:
            # conv output o gains sum_c k_c * sum_taps W[o, c, tap] where the window is inside
            # the image (fewer taps at the border): a shift of BN's input, i.e. mean - shift
            w_drop = w_drop.index_select(0, index[c.out_layer])
            coverage = tap_coverage(modules[c.module], hw).to(dev)
            taps = coverage if fold == "mean" else torch.ones_like(coverage)
            shift = -torch.einsum("ocij,ij,c->o", w_drop, taps, k)
            target = f"{c.bn}.running_mean"
            exact = bool((coverage == 1).all())  # 1x1 without padding (or no border at all)
        if fold == "none":
            shift = torch.zeros_like(shift)
            exact = False
        new_sd[target] = new_sd[target] + shift.to(new_sd[target].dtype)
        folds.append(
            FoldRecord(c.module, target if fold != "none" else "", int(k.numel()), nonzero, exact or nonzero == 0, float(shift.abs().max()))
        )
    small.load_state_dict(new_sd)
    small.eval()
    return PruneResult(arch=small_arch, model=small, keep=keep, folds=folds, fold=fold)


# ---- Γ supports of a trained net ------------------------------------------------------------------


def filter_support(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Each conv weight's filter support: ``{parameter name: opt.support(p)}`` (bool per output
    filter) for every parameter in a ``"filter"``-structured DessiLBI group; a conv weight
    without Γ (in no such group) counts as fully supported."""
    structured = {id(p) for g in optimizer.param_groups if g.get("structure") == "filter" for p in g["params"]}
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if p.dim() != 4:
            continue
        if id(p) in structured:
            out[name] = optimizer.support(p).detach().to("cpu", torch.bool).reshape(-1)  # type: ignore[attr-defined]
        else:
            out[name] = torch.ones(p.shape[0], dtype=torch.bool)
    return out


def filter_scores(arch: Architecture, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, torch.Tensor]:
    """Each layer's per-filter score for the at-least-one-filter rule: the largest ‖V_g‖ over
    the layer's producing convs (the filter closest to entering Γ's support), or ‖W_g‖ for
    convs without a ``V`` state."""
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for layer, width in arch.layer_widths().items():
        best = torch.full((width,), -1.0, dtype=torch.float64)
        for name in _producers(arch, layer):
            p = params[name]
            state = optimizer.state.get(p, {}) if optimizer is not None else {}
            t = state.get("V", p) if isinstance(state, Mapping) else p
            norms = t.detach().to("cpu", torch.float64).flatten(1).norm(dim=1)
            best = torch.maximum(best, norms)
        out[layer] = best
    return out


# ---- the ticket job ---------------------------------------------------------------------------------

#: Rows of the comparison table: name -> label, in table order.
SCORE_LABELS = {
    "dense": "dense net (DessiLBI)",
    "masked": "masked dense net (removed filters zeroed)",
    "ticket": "ticket, pruned (no fine-tune)",
    "finetuned": "ticket, fine-tuned",
    "fresh": "ticket widths, fresh init (control)",
}
SUPPORTS_FORMAT = "grownet.supports"


@dataclass(frozen=True)
class Score:
    """One net of the comparison table.

    Attributes:
        name: a key of :data:`SCORE_LABELS`.
        macs, params: inference MACs per image and parameters (:func:`grownet.cost.cost`); the
            masked net is the dense net physically, so it carries the dense cost.
        val_acc, test_acc: accuracies (fractions) of the selected weights.
        epoch: the epoch whose weights are scored (best validation accuracy for trained rows;
            the ticket epoch for the masked and pruned nets); ``None`` when not trained.
        epochs: epochs this net was trained in its phase (0 for masked/pruned).
        train_flops: training FLOPs of its phase.
    """

    name: str
    macs: int
    params: int
    val_acc: float | None
    test_acc: float | None
    epoch: int | None = None
    epochs: int = 0
    train_flops: int = 0

    @property
    def label(self) -> str:
        return SCORE_LABELS[self.name]

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "macs": self.macs, "params": self.params, "val_acc": self.val_acc,
                "test_acc": self.test_acc, "epoch": self.epoch, "epochs": self.epochs, "train_flops": self.train_flops}


@dataclass(frozen=True)
class TicketResult:
    """What :func:`ticket` produced.

    Attributes:
        out: the output folder (``None`` when nothing was written).
        dense_arch, arch: the trained architecture and the ticket's (reduced) one.
        epochs, at_epoch, finetune_epochs: dense epochs, the epoch the ticket was taken at,
            fine-tune (and control) epochs.
        keep: layer -> dense filter indices the ticket keeps.
        support_sizes: epoch -> layer -> filters in Γ's support (layer union, before the
            at-least-one rule).
        scores: name -> :class:`Score` (keys of :data:`SCORE_LABELS`; ``finetuned`` and
            ``fresh`` absent when ``finetune_epochs`` is 0).
        fold: the fold mode used for the ticket; folds: what was folded.
        fold_check: fold mode -> ``{"val_acc", "test_acc"}`` of the pruned net built with that
            mode (all of :data:`FOLD_MODES`), to compare with the masked net.
        max_logit_diff: largest |masked - pruned| logit on the first test batch (eval mode).
        wall_time: seconds for the whole job.
    """

    out: Path | None
    dense_arch: Architecture
    arch: Architecture
    epochs: int
    at_epoch: int
    finetune_epochs: int
    keep: dict[str, list[int]]
    support_sizes: dict[int, dict[str, int]]
    scores: dict[str, Score]
    fold: str
    folds: tuple[FoldRecord, ...]
    fold_check: dict[str, dict[str, float]]
    max_logit_diff: float
    wall_time: float

    def table(self) -> list[Score]:
        """The comparison rows in :data:`SCORE_LABELS` order."""
        return [self.scores[n] for n in SCORE_LABELS if n in self.scores]


def resolve_arch(arch: Architecture | Mapping[str, Any] | str | os.PathLike, *, num_classes: int, in_channels: int,
                 input_size: int) -> Architecture:
    """The architecture to train: an Architecture, its dict, a preset name of
    :mod:`grownet.seeds` (built for the dataset's shape) or an architecture JSON path.

    Raises:
        UsageError: an unknown preset, or an architecture whose classes, channels or input size
            do not match the dataset. ArchitectureError: an invalid JSON file.
    """
    from .seeds import PRESETS, preset

    dims = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
    if isinstance(arch, str) and arch in PRESETS:
        return preset(arch, **dims)
    if isinstance(arch, (str, os.PathLike)):
        if not Path(arch).exists() and not str(arch).endswith(".json"):
            raise UsageError(f"--arch: {str(arch)!r} is neither a preset ({', '.join(PRESETS)}) nor an architecture JSON file")
        arch = Architecture.from_json(arch)
    arch = as_architecture(arch)
    for key, value in dims.items():
        if getattr(arch, key) != value:
            raise UsageError(f"--arch: the architecture has {key} {getattr(arch, key)}, the dataset needs {value}")
    return arch


class _Clock:
    """Cumulative wall time of a job."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def ticket(
    arch: Architecture | Mapping[str, Any] | str | os.PathLike | None = None,
    *,
    epochs: int,
    dataset: str = "cifar10",
    recipe: Any = None,
    overrides: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    at_epoch: int | None = None,
    finetune_epochs: int | None = None,
    fold: str = "mean",
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    device: str = "auto",
    force: bool = False,
    reporter: Any = None,
    command: str | None = None,
) -> TicketResult:
    """Find a winning ticket: train ``arch`` with DessiLBI, prune it to Γ's support at
    ``at_epoch``, fine-tune it, and train the same widths from scratch as a control.

    Steps: (1) train ``epochs`` epochs with DessiLBI at the constant rate ``optim.lr``,
    recording every layer's support after each epoch (``supports.json``) and keeping the
    model at ``at_epoch`` (``checkpoints/epoch-K.pt``); (2) build the keep sets
    (:func:`keep_sets`), the masked net and the pruned net (:func:`prune_model`); (3)
    fine-tune the pruned net ``finetune_epochs`` epochs with the ``[finetune]`` recipe
    (optimizer, cosine-decayed lr, fresh optimizer state), and train the same reduced
    architecture from a fresh initialisation with the same schedule. Trained nets keep the
    epoch with the best validation accuracy; the test set is evaluated once per net.

    Args:
        arch: the net to train (see :func:`resolve_arch`); ``None``: the recipe's ``[model]``
            net (``seed_arch``, ``seed_width``, ``seed_depths``, as a search builds its seed).
        epochs: DessiLBI epochs of the dense net (>= 1).
        dataset, data_dir: the dataset (grownet.data names).
        recipe: a Recipe or a TOML path (default: the reference recipe); ``overrides``
            dotted keys on top.
        out: output folder; ``None`` writes nothing.
        at_epoch: the epoch whose support and weights make the ticket (default ``epochs``).
        finetune_epochs: fine-tune and control epochs (default ``finetune.epochs``).
        fold: fold mode of :func:`prune_model`.
        seed: random seed (data split, order, augmentation, initialisations).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        force: overwrite an existing output folder of a grownet run.
        reporter: progress hooks with the :class:`grownet.search.Reporter` methods
            (``finish`` receives the TicketResult).
        command: the command line recorded in config.json.

    Returns:
        :class:`TicketResult`.

    Raises:
        UsageError: bad arguments. ConfigError, DataError, ArchitectureError: invalid inputs.
        RunError: the output folder exists (without ``force``) or is locked.
        DivergenceError: a non-finite training loss.
    """
    from .recipe import Recipe, load_recipe
    from .search import Reporter

    _check_int("--epochs", epochs, low=1)
    if at_epoch is not None:
        _check_int("--at-epoch", at_epoch, low=1)
        if at_epoch > epochs:
            raise UsageError(f"--at-epoch: must be at most --epochs ({epochs}), got {at_epoch}")
    if finetune_epochs is not None:
        _check_int("--finetune-epochs", finetune_epochs, low=0)
    _check_int("--seed", seed, low=0)
    if fold not in FOLD_MODES:
        raise UsageError(f"--fold: must be one of {', '.join(FOLD_MODES)}, got {fold!r}")
    base = recipe if isinstance(recipe, Recipe) else (load_recipe(recipe) if recipe is not None else Recipe())
    r = base.with_overrides(overrides)
    if isinstance(arch, (str, os.PathLike)) and str(arch).endswith(".json"):
        arch = Architecture.from_json(arch)  # a bad file is refused before anything is written
    job = _TicketJob(
        recipe=r, arch=arch, epochs=epochs, dataset=dataset,
        at_epoch=at_epoch or epochs, finetune_epochs=r.finetune.epochs if finetune_epochs is None else finetune_epochs,
        fold=fold, data_dir=data_dir, seed=seed, device=resolve_device(device), reporter=reporter or Reporter(),
        command=command,
    )
    try:
        if out is None:
            with rng_scope(job.device):
                return job.run(None)
        folder = RunFolder(out)
        created = make_folder(folder.path)
        try:
            with folder.lock():
                folder.prepare(resume=False, force=force)
                with log_to_file(folder.log), rng_scope(job.device):
                    try:
                        return job.run(folder)
                    except GrownetError as exc:
                        log.error("%s", exc, extra=FILE_ONLY)
                        raise
        except BaseException:
            if not job.started:  # refused before training: leave no trace
                for path in (folder.config, folder.log):
                    path.unlink(missing_ok=True)
                folder.restore_replaced()
                remove_created(created)
            raise
    finally:
        job.reporter.close()


def _check_int(flag: str, value: Any, *, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UsageError(f"{flag}: must be an integer >= {low}, got {value!r}")


class _TicketJob:
    """One ticket run: holds the data, the models and the rows while it lasts."""

    def __init__(self, *, recipe: Any, arch: Any, epochs: int, dataset: str, at_epoch: int, finetune_epochs: int,
                 fold: str, data_dir: Any, seed: int, device: torch.device, reporter: Any, command: str | None) -> None:
        self.recipe, self.arch_spec, self.epochs, self.dataset = recipe, arch, epochs, dataset
        self.at_epoch, self.finetune_epochs, self.fold = at_epoch, finetune_epochs, fold
        self.data_dir, self.seed, self.device, self.reporter, self.command = data_dir, seed, device, reporter, command
        self.channels_last = wants_channels_last(recipe.run.channels_last, device)
        self.amp = amp_dtype(recipe.run.amp, device)
        self.clock = _Clock()
        self.folder: RunFolder | None = None
        self.started = False  # True once the inputs are checked and training begins

    # -- the steps --------------------------------------------------------------------------------
    def run(self, folder: RunFolder | None) -> TicketResult:
        self.folder = folder
        r = self.recipe
        seed_all(self.seed)
        config = self._config()
        self.data = make_data(config, r, self.device, channels_last=self.channels_last)
        if self.arch_spec is None:
            arch = seed_arch(r, self.data)
        else:
            arch = resolve_arch(self.arch_spec, num_classes=self.data.num_classes, in_channels=self.data.in_channels,
                                input_size=self.data.input_size)
        arch = Architecture.from_dict({**arch.to_dict(), "meta": {}})
        if folder is not None:
            folder.drop_replaced()  # the inputs are good: the run --force replaces goes
            folder.write_json(folder.config, config)
        self.started = True
        self.dense_arch = arch
        log.info("ticket: training %s (%s) for %d DessiLBI epochs; ticket at epoch %d", arch.family, arch.layer_widths(),
                 self.epochs, self.at_epoch)
        self.reporter.start(run_dir=folder.path if folder else None, arch=arch, recipe=r, resumed=False)

        # (1) dense net with DessiLBI, supports after every epoch, snapshot at the ticket epoch
        dense = self._prepare(build_model(arch))
        opt = make_dessilbi(dense, r)
        self.history: list[dict[str, Any]] = []
        self.supports: dict[int, dict[str, torch.Tensor]] = {}
        snapshot: dict[str, Any] = {}

        def after_epoch(epoch: int) -> None:
            sup = layer_supports(arch, filter_support(dense, opt))
            self.supports[epoch] = sup
            log.info("epoch %d support sizes: %s", epoch, {k: int(v.sum()) for k, v in sup.items()})
            if epoch == self.at_epoch:
                snapshot["state"] = _cpu_state(dense)
                snapshot["keep"] = keep_sets(arch, sup, scores=filter_scores(arch, dense, opt))
                snapshot["support"] = sup
                if folder is not None:
                    self._save_checkpoint(folder, epoch, snapshot)
            if folder is not None:
                self._write_supports(folder, arch, snapshot.get("keep"))

        lr = r.optim.lr
        dense_phase = self._phase("dense", dense, opt, arch, epochs=self.epochs, lr_at=lambda e, i: lr,
                                  smoothing=r.optim.label_smoothing, after_epoch=after_epoch)
        dense_score = self._score("dense", dense, dense_phase, arch)

        # (2) masked and pruned nets from the ticket epoch
        keep = snapshot["keep"]
        at = build_model(arch).to(self.device)
        at.load_state_dict(snapshot["state"])
        at.eval()
        masked = self._prepare(mask_model(at, keep))
        c_dense = cost(arch)
        m_val, m_test = self._evaluate(masked)
        scores = {"dense": dense_score,
                  "masked": Score("masked", c_dense.macs, c_dense.params, m_val, m_test, epoch=self.at_epoch)}
        fold_check: dict[str, dict[str, float]] = {}
        built = {mode: prune_model(at, keep, fold=mode) for mode in FOLD_MODES}
        for mode, res in built.items():
            v, t = self._evaluate(self._prepare(res.model))
            fold_check[mode] = {"val_acc": v, "test_acc": t}
        pruned = built[self.fold]
        small = pruned.arch
        c_small = cost(small)
        scores["ticket"] = Score("ticket", c_small.macs, c_small.params, fold_check[self.fold]["val_acc"],
                                 fold_check[self.fold]["test_acc"], epoch=self.at_epoch)
        diff = self._logit_diff(masked, pruned.model)
        log.info("ticket: %s -> %s; masked test acc %.4f, pruned (%s fold) %.4f, max logit diff %.3g",
                 arch.layer_widths(), small.layer_widths(), m_test or 0.0, self.fold, scores["ticket"].test_acc or 0.0, diff)
        if folder is not None:
            (folder.path / "ticket").mkdir(exist_ok=True)
            small.with_meta(**self._meta(scores["ticket"], c_small)).save(folder.path / "ticket" / "architecture.json")
            save_model(pruned.model, folder.path / "ticket" / "weights.pt")
        del masked, at

        # (3) fine-tune the ticket; train the same widths from a fresh initialisation
        final_model = pruned.model
        if self.finetune_epochs > 0:
            ft_model = self._prepare(copy.deepcopy(pruned.model))
            ft = self._phase("finetune", ft_model, self._finetune_optimizer(ft_model), small,
                             epochs=self.finetune_epochs, lr_at=self._cosine(), smoothing=r.finetune.label_smoothing,
                             offset=self.epochs, flops0=dense_phase["train_flops"])
            scores["finetuned"] = self._score("finetuned", ft_model, ft, small)
            final_model = ft_model
            dense_rows = self.history
            self.history = []
            fresh = self._prepare(build_model(small))
            fr = self._phase("fresh", fresh, self._finetune_optimizer(fresh), small, epochs=self.finetune_epochs,
                             lr_at=self._cosine(), smoothing=r.finetune.label_smoothing)
            scores["fresh"] = self._score("fresh", fresh, fr, small)
            fresh_rows, self.history = self.history, dense_rows
            if folder is not None:
                self._write_fresh(folder, small, scores["fresh"], fresh_rows)

        result = TicketResult(
            out=folder.path if folder else None, dense_arch=arch, arch=small, epochs=self.epochs, at_epoch=self.at_epoch,
            finetune_epochs=self.finetune_epochs, keep=keep,
            support_sizes={e: {k: int(v.sum()) for k, v in s.items()} for e, s in self.supports.items()},
            scores=scores, fold=self.fold, folds=tuple(pruned.folds), fold_check=fold_check, max_logit_diff=diff,
            wall_time=round(self.clock(), 3),
        )
        if folder is not None:
            self._write_final(folder, result, final_model)
        self.reporter.finish(result)
        return result

    # -- helpers ----------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        import platform
        from importlib.metadata import PackageNotFoundError, version

        from . import __version__

        try:
            tv = version("torchvision")
        except PackageNotFoundError:
            tv = None

        spec = self.arch_spec
        return {
            "recipe": self.recipe.to_dict(), "seed": self.seed, "dataset": self.dataset,
            "data_dir": None if self.data_dir is None else str(self.data_dir), "device": str(self.device),
            "versions": {"grownet": __version__, "torch": torch.__version__, "torchvision": tv,
                         "python": platform.python_version()},
            "command": self.command or "grownet.ticket.ticket(...)",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ticket": {"arch": spec.to_dict() if isinstance(spec, Architecture) else (
                           dict(spec) if isinstance(spec, Mapping) else (None if spec is None else str(spec))),
                       "epochs": self.epochs, "at_epoch": self.at_epoch, "finetune_epochs": self.finetune_epochs,
                       "fold": self.fold},
        }

    def _prepare(self, model: nn.Module) -> nn.Module:
        return prepare_model(model, self.device, channels_last=self.channels_last)

    def _evaluate(self, model: nn.Module) -> tuple[float, float]:
        return evaluate(model, self.data.val, amp=self.amp).acc, evaluate(model, self.data.test, amp=self.amp).acc

    def _logit_diff(self, a: nn.Module, b: nn.Module) -> float:
        x, _ = next(iter(self.data.test))
        a.eval(), b.eval()
        with torch.no_grad():
            return float((a(x).float() - b(x.to(next(b.parameters()).device)).float()).abs().max())

    def _finetune_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        f = self.recipe.finetune
        if f.optimizer == "dessilbi":
            return make_dessilbi(model, self.recipe)  # fresh state: the control gets the same
        return torch.optim.SGD(model.parameters(), lr=f.lr, momentum=f.momentum, nesterov=f.nesterov and f.momentum > 0,
                               weight_decay=f.weight_decay)

    def _cosine(self) -> Callable[[int, int], float]:
        """lr at (epoch index from 0, batch index): cosine from finetune.lr to min_lr over the
        phase, after a linear warm-up of finetune.warmup_epochs."""
        f = self.recipe.finetune
        steps = len(self.data.train)
        total = max(1, self.finetune_epochs * steps)
        warm = f.warmup_epochs * steps

        def lr_at(epoch: int, i: int) -> float:
            return cosine_lr(epoch * steps + i, total, lr=f.lr, min_lr=f.min_lr, warmup=warm)

        return lr_at

    def _phase(self, phase: str, model: nn.Module, opt: torch.optim.Optimizer, arch: Architecture, *, epochs: int,
               lr_at: Callable[[int, int], float], smoothing: float, offset: int = 0, flops0: int = 0,
               after_epoch: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Train ``epochs`` epochs (history rows numbered from ``offset + 1``, their cumulative
        training FLOPs from ``flops0``); return the best-validation state, its epoch and the
        phase's own training FLOPs."""
        c = cost(arch)
        best: dict[str, Any] = {"val": -1.0, "epoch": 0, "state": None, "train_flops": 0}
        flops = 0
        for e in range(epochs):
            # the fine-tune and the fresh control see the same batches (order and augmentation)
            self.data.train.set_epoch(offset + e if phase != "fresh" else self.epochs + e)
            self.reporter.epoch_start(phase=phase, round=1, epoch=e + 1, index=e + 1, total=epochs, batches=len(self.data.train))
            stats = train_epoch(model, self.data.train, opt, lr_at=lambda i, e=e: lr_at(e, i), amp=self.amp,
                                label_smoothing=smoothing, progress=self.reporter.batch)
            if not stats.finite:
                raise DivergenceError(
                    f"{phase} epoch {e + 1}: the training loss became non-finite after {stats.samples} samples; "
                    f"lower {'optim.lr' if phase == 'dense' else 'finetune.lr'} and start again"
                )
            val = evaluate(model, self.data.val, amp=self.amp)
            flops += c.train_flops_per_sample * stats.samples
            row = {"round": 1, "epoch": offset + e + 1, "phase": phase, "lr": lr_at(e, len(self.data.train) - 1),
                   "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val.loss, "val_acc": val.acc,
                   "macs": c.macs, "params": c.params, "train_flops": flops0 + flops, "wall_time": round(self.clock(), 3)}
            self.history.append(row)
            if val.acc > best["val"]:
                best.update(val=val.acc, epoch=offset + e + 1, state=_cpu_state(model))
            log.info("%s epoch %d/%d: lr %.4g loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s", phase, e + 1, epochs,
                     row["lr"], stats.loss, stats.acc, val.loss, val.acc, stats.seconds)
            if after_epoch is not None:
                after_epoch(e + 1)
            if self.folder is not None and phase != "fresh":
                self.folder.write_history(self.history)
            self.reporter.epoch_end(row)
        best["train_flops"] = flops
        return best

    def _score(self, name: str, model: nn.Module, phase: Mapping[str, Any], arch: Architecture) -> Score:
        """Load the phase's best-validation weights into ``model`` and score them."""
        if phase["state"] is not None:
            model.load_state_dict(phase["state"])
        val, test = self._evaluate(model)
        c = cost(arch)
        trained = self.epochs if name == "dense" else self.finetune_epochs
        return Score(name, c.macs, c.params, val, test, epoch=phase["epoch"], epochs=trained, train_flops=phase["train_flops"])

    def _meta(self, score: Score, c: Any) -> dict[str, Any]:
        from . import __version__

        return {"macs": c.macs, "params": c.params, "val_acc": score.val_acc, "test_acc": score.test_acc,
                "dataset": self.dataset, "grownet_version": __version__, "ticket_epoch": self.at_epoch,
                "dense_widths": self.dense_arch.layer_widths()}

    # -- files ------------------------------------------------------------------------------------
    def _save_checkpoint(self, folder: RunFolder, epoch: int, snapshot: Mapping[str, Any]) -> None:
        folder.checkpoints.mkdir(exist_ok=True)
        payload = {"format": "grownet.ticket-checkpoint", "version": 1, "epoch": epoch, "arch": self.dense_arch.to_dict(),
                   "model": snapshot["state"], "keep": snapshot["keep"],
                   "support": {k: v.clone() for k, v in snapshot["support"].items()}}
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(folder.checkpoints / f"epoch-{epoch}.pt", buf.getvalue())

    def _write_supports(self, folder: RunFolder, arch: Architecture, keep: Mapping[str, list[int]] | None) -> None:
        payload = {
            "format": SUPPORTS_FORMAT, "version": 1, "widths": arch.layer_widths(), "at_epoch": self.at_epoch,
            "sizes": {str(e): {k: int(v.sum()) for k, v in s.items()} for e, s in self.supports.items()},
            "supports": {str(e): {k: "".join("1" if b else "0" for b in v.tolist()) for k, v in s.items()}
                         for e, s in self.supports.items()},
            "keep": keep,
        }
        folder.write_json(folder.path / "supports.json", payload)

    def _write_fresh(self, folder: RunFolder, arch: Architecture, score: Score, rows: list[dict[str, Any]]) -> None:
        sub = RunFolder(folder.path / "controls" / "fresh")
        sub.path.mkdir(parents=True, exist_ok=True)
        sub.write_history(rows)
        arch.with_meta(**self._meta(score, cost(arch))).save(sub.architecture)
        sub.write_json(sub.summary, {"dataset": self.dataset, "seed": self.seed, **score.to_dict(),
                                     "wall_time": rows[-1]["wall_time"] if rows else None})

    def _write_final(self, folder: RunFolder, result: TicketResult, model: nn.Module) -> None:
        final = result.scores.get("finetuned", result.scores["ticket"])
        result.arch.with_meta(**self._meta(final, cost(result.arch))).save(folder.architecture)
        save_model(model, folder.weights)
        folder.write_history(self.history)
        folder.write_json(folder.summary, summary_dict(result, dataset=self.dataset, seed=self.seed,
                                                       classes=list(getattr(self.data, "classes", []) or [])))
        write_ticket_report(folder.path)


def summary_dict(result: TicketResult, *, dataset: str, seed: int, classes: Sequence[str] = ()) -> dict[str, Any]:
    """summary.json of a ticket folder (plain JSON types)."""
    final = result.scores.get("finetuned", result.scores["ticket"])
    return {
        "kind": "ticket", "dataset": dataset, "classes": list(classes), "seed": seed,
        "val_acc": final.val_acc, "test_acc": final.test_acc, "macs": final.macs, "params": final.params,
        "epochs": result.epochs, "at_epoch": result.at_epoch, "finetune_epochs": result.finetune_epochs,
        "wall_time": result.wall_time, "dense_arch": result.dense_arch.to_dict(), "final_arch": result.arch.to_dict(),
        "keep": result.keep, "scores": [s.to_dict() for s in result.table()], "fold": result.fold,
        "fold_check": result.fold_check, "max_logit_diff": result.max_logit_diff,
        "folds": [dict(vars(f)) for f in result.folds], "exact": all(f.exact for f in result.folds),
    }


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}



# ---- the report ---------------------------------------------------------------------------------------

#: (anchor, menu label) of the ticket report's sections, in page order.
REPORT_SECTIONS = (
    ("summary", "Summary"),
    ("comparison", "Comparison"),
    ("supports", "Γ supports"),
    ("widths", "Widths"),
    ("masking", "Masked vs pruned"),
    ("curves", "Curves"),
    ("repro", "Reproduce"),
)


@dataclass(frozen=True)
class SupportInfo:
    """Support size per layer per epoch (supports.json), for the report.

    ``sizes[i][j]``: filters of ``layers[i]`` in Γ's support after ``epochs[j]``;
    ``widths[i]``: the layer's dense width; ``kept[i]``: its width in the ticket (``None``
    before the ticket epoch was reached)."""

    layers: list[str]
    widths: list[int]
    epochs: list[int]
    sizes: list[list[int | None]]
    at_epoch: int | None
    kept: list[int | None]


def support_info(supports: Mapping[str, Any]) -> SupportInfo:
    """The :class:`SupportInfo` of a parsed supports.json."""
    widths = {str(k): int(v) for k, v in (supports.get("widths") or {}).items()}
    sizes = supports.get("sizes") or {}
    epochs = sorted(int(e) for e in sizes)
    keep = supports.get("keep") or {}
    layers = list(widths)
    return SupportInfo(
        layers=layers,
        widths=[widths[l] for l in layers],
        epochs=epochs,
        sizes=[[sizes[str(e)].get(l) for e in epochs] for l in layers],
        at_epoch=supports.get("at_epoch"),
        kept=[len(keep[l]) if l in keep else None for l in layers],
    )


def support_figure(info: SupportInfo) -> str:
    """SVG heatmap: rows are layers, columns epochs; colour is the share of the layer's filters in
    Γ's support, the number the support size; the ticket epoch's column is outlined."""
    import matplotlib
    from matplotlib.patches import Rectangle

    from .report._plots import _RC, _WIDTH, _empty, _figure, _svg

    if not info.layers or not info.epochs:
        return _empty("no supports recorded")
    with matplotlib.rc_context(_RC):
        import numpy as np

        share = np.ma.masked_invalid(np.array(
            [[np.nan if s is None else s / max(w, 1) for s in row] for row, w in zip(info.sizes, info.widths)], dtype=float))
        fig = _figure(_WIDTH, 1.3 + 0.26 * len(info.layers))
        ax = fig.add_subplot()
        im = ax.imshow(share, aspect="auto", cmap=matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee"),
                       vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_xticks(range(len(info.epochs)), [str(e) for e in info.epochs])
        ax.set_yticks(range(len(info.layers)), [f"{l} ({w})" for l, w in zip(info.layers, info.widths)])
        ax.set_xlabel("epoch")
        ax.set_title("Filters in Γ's support per layer (number; colour: share of the layer's width)")
        if len(info.epochs) <= 40:
            for i, row in enumerate(info.sizes):
                for j, s in enumerate(row):
                    if s is not None:
                        ax.text(j, i, str(s), ha="center", va="center", fontsize=7,
                                color="white" if share[i, j] < 0.55 else "#1d2330")
        if info.at_epoch in info.epochs:
            j = info.epochs.index(info.at_epoch)
            ax.add_patch(Rectangle((j - 0.5, -0.5), 1.0, len(info.layers), fill=False, lw=2.0, ec="#d62728"))
        fig.colorbar(im, ax=ax, label="share in support", fraction=0.03, pad=0.01)
        return _svg(fig)


def render_ticket_report(out: str | os.PathLike) -> str:
    """The report of a ticket folder (written by :func:`ticket`) as one HTML document; reads only
    the folder's files (summary.json, supports.json, config.json, history.csv, controls/fresh/).

    Raises:
        RunError: a required file is missing or malformed.
    """
    from . import __version__
    from .report import ControlRecord, RunRecord, curves_info, repro_info
    from .report import _plots
    from .report._format import duration, pct, ratio, si
    from .report._html import Safe, figure, join, page, render, section, table
    from .report._info import ModelPoint
    from .report._run import read_history, read_json

    path = Path(out)
    summary = read_json(path / "summary.json")
    config = read_json(path / "config.json")
    supports = read_json(path / "supports.json")
    history = read_history(path / "history.csv")
    fresh_path = path / "controls" / "fresh"
    fresh_history = read_history(fresh_path / "history.csv") if (fresh_path / "history.csv").is_file() else []
    scores = {s["name"]: s for s in summary.get("scores", [])}
    dense_arch = Architecture.from_dict(summary["dense_arch"])
    small_arch = Architecture.from_dict(summary["final_arch"])
    dense, final = scores.get("dense", {}), scores.get("finetuned") or scores.get("ticket", {})

    def cards(items: list[tuple[str, Any]]) -> Safe:
        return render('<div class="cards">$c</div>', c=join(
            render('<div class="card"><div class="k">$k</div><div class="v">$v</div></div>', k=k, v=v) for k, v in items))

    def para(text: Any) -> Safe:
        return render('<p class="note">$t</p>', t=text)

    # summary
    body = [section("summary", "Summary", join([
        cards([
            ("dense test accuracy", pct(dense.get("test_acc"))),
            ("ticket test accuracy", pct(final.get("test_acc"))),
            ("fresh control test accuracy", pct(scores.get("fresh", {}).get("test_acc"))),
            ("ticket MACs vs dense", ratio(final.get("macs"), dense.get("macs"))),
            ("ticket params vs dense", ratio(final.get("params"), dense.get("params"))),
            ("ticket epoch", f"{summary.get('at_epoch')} of {summary.get('epochs')}"),
        ]),
        table(["key", "value"], [
            ("dataset", summary.get("dataset")), ("seed", summary.get("seed")), ("family", dense_arch.family),
            ("dense widths", " ".join(str(w) for w in dense_arch.layer_widths().values())),
            ("ticket widths", " ".join(str(w) for w in small_arch.layer_widths().values())),
            ("fine-tune / control epochs", summary.get("finetune_epochs")), ("fold", summary.get("fold")),
            ("wall time", duration(summary.get("wall_time"))),
            ("command", render("<code>$c</code>", c=config.get("command")) if config.get("command") else None),
        ], css="kv"),
    ]), intro="A ticket keeps the filters in Γ's support at the ticket epoch and physically removes the others. "
              "Validation accuracy selects each trained net's epoch; test accuracy is measured once per net.")]

    # comparison
    rows = [(s["label"], si(s.get("macs")), si(s.get("params")), pct(s.get("val_acc")), pct(s.get("test_acc")),
             s.get("epoch"), s.get("epochs"), si(s.get("train_flops") or None)) for s in summary.get("scores", [])]
    # the plot's colours follow the search report's names: star = the result, orange = from scratch
    roles = {"finetuned": "grown", "fresh": "scratch", "dense": "uniform", "ticket": "seed"}
    points = [ModelPoint(roles[n], scores[n]["label"], scores[n].get("val_acc"), scores[n].get("test_acc"),
                         scores[n].get("macs"), scores[n].get("params"), scores[n].get("train_flops"), None,
                         scores[n].get("epochs")) for n in ("dense", "ticket", "finetuned", "fresh") if n in scores]
    body.append(section("comparison", "Comparison", join([
        table(["net", "MACs", "params", "val acc", "test acc", "epoch", "epochs trained", "training FLOPs"], rows,
              numeric=(1, 2, 3, 4, 5, 6, 7)),
        figure(_plots.accuracy_macs_figure(points, metric="test_acc"), alt="Test accuracy against inference MACs",
               css="half", caption="Test accuracy against inference MACs (star: the fine-tuned ticket)."),
    ]), intro="Dense: the net trained with DessiLBI (best validation epoch). Masked: the dense net at the ticket epoch "
              "with every removed filter's conv weights zeroed (it costs as much as the dense net). Ticket: the "
              "physically pruned net before and after fine-tuning. Fresh: the ticket's widths trained from a new "
              "initialisation with the fine-tune schedule. The dense net trains at DessiLBI's constant learning "
              "rate; the fine-tune and the control decay theirs (cosine), which alone lifts accuracy."))

    # supports
    info = support_info(supports)
    body.append(section("supports", "Γ support per layer", figure(
        support_figure(info), alt="Heatmap of support size per layer per epoch",
        caption=f"Filters in the support of Γ after every epoch (a ResNet residual width counts a channel when any conv "
                f"writing it has it in the support); the outlined column is the ticket epoch ({info.at_epoch}).")))

    # widths
    keep = summary.get("keep") or {}
    at_sizes = (supports.get("sizes") or {}).get(str(summary.get("at_epoch")), {})
    dense_w, small_w = dense_arch.layer_widths(), small_arch.layer_widths()
    wrows = [(l, w, at_sizes.get(l), small_w.get(l), pct(small_w.get(l, 0) / w, 1) if w else None,
              _ranges(keep.get(l, []))) for l, w in dense_w.items()]
    body.append(section("widths", "Widths", table(
        ["layer", "dense width", "support at ticket epoch", "ticket width", "kept", "kept filters"], wrows,
        numeric=(1, 2, 3, 4)), intro="A layer with an empty support keeps its filter with the largest ‖V‖; tied ResNet "
                                     "widths (stem and stage 0 without a projection shortcut) keep the union."))

    # masked vs pruned
    masked = scores.get("masked", {})
    checks = summary.get("fold_check") or {}
    crow = [("masked dense net", pct(masked.get("val_acc")), pct(masked.get("test_acc")), None)]
    for mode, acc in checks.items():
        delta = None if acc.get("test_acc") is None or masked.get("test_acc") is None else \
            f"{100 * (acc['test_acc'] - masked['test_acc']):+.2f} pt"
        crow.append((f"pruned, fold {mode}" + (" (used)" if mode == summary.get("fold") else ""),
                     pct(acc.get("val_acc")), pct(acc.get("test_acc")), delta))
    frows = [(f["module"], f["target"] or None, f["channels"], f["nonzero"], "exact" if f["exact"] else "border differs",
              f"{f['max_shift']:.4g}") for f in summary.get("folds", [])]
    body.append(section("masking", "Masked vs pruned", join([
        table(["net", "val acc", "test acc", "test vs masked"], crow, numeric=(1, 2, 3)),
        para(f"Largest |masked − pruned| logit on the first test batch: {summary.get('max_logit_diff', float('nan')):.4g}."),
        table(["consumer", "folded into", "removed inputs", "non-zero constants", "result", "max shift"], frows,
              numeric=(2, 3, 5)),
    ]), intro="In eval mode a removed channel of the masked net is a constant (its BatchNorm's shift after ReLU). "
              "Folding it into the classifier bias (after global average pooling) or through a 1x1 shortcut without "
              "padding is exact. A 3x3 consumer with zero padding sees the constant only where its window is inside "
              "the image: 'interior' folds the contribution that is exact away from the border, 'mean' folds its "
              "average over positions, 'none' folds nothing."))

    # curves: dense epochs, then the fine-tune; the fresh control aligned with the fine-tune
    # [grow] and [budget] do not apply to a ticket: the reproducibility block leaves them out
    recipe = {k: v for k, v in (config.get("recipe") or {}).items() if k not in ("grow", "budget")}
    run = RunRecord(path=path, config={**config, "recipe": recipe}, summary=summary, history=history, rounds=[],
                    arch=small_arch)
    if fresh_history:
        offset = int(summary.get("epochs") or 0)
        shifted = [{**row, "epoch": (row["epoch"] or 0) + offset} for row in fresh_history]
        run.controls["fresh"] = ControlRecord("fresh", fresh_path, scores.get("fresh", {}), shifted, small_arch)
    body.append(section("curves", "Training curves", figure(
        _plots.curves_figure(curves_info(run)), alt="Loss and accuracy per epoch",
        caption="Dense DessiLBI epochs, then the ticket's fine-tune (shaded); the thin line is the fresh control's "
                "validation accuracy over the same schedule.")))

    # reproduce
    rinfo = repro_info(run)
    parts = []
    if config.get("command"):
        parts.append(render("<h3>Command</h3><pre>$c</pre>", c=config["command"]))
    if rinfo.recipe_toml:
        parts.append(render("<h3>Recipe (resolved, TOML)</h3><pre>$c</pre>", c=rinfo.recipe_toml))
    parts.append(table(["key", "value"], rinfo.config, css="kv"))
    body.append(section("repro", "Reproducibility", join(parts)))

    footer = render("Generated by grownet $v from the files of $p.", v=__version__, p=str(path))
    subtitle = f"{dense_arch.family} net · {summary.get('dataset')} · seed {summary.get('seed')}"
    return str(page(f"grownet ticket {path.name}", subtitle=subtitle, nav=REPORT_SECTIONS, body=join(body, "\n"),
                    footer=footer))


def write_ticket_report(out: str | os.PathLike, *, path: str | os.PathLike | None = None) -> Path:
    """Write :func:`render_ticket_report` of the folder ``out`` to ``path`` (default
    ``out/report.html``) atomically; return the path."""
    from .files import atomic_write_text

    target = Path(path) if path is not None else Path(out) / "report.html"
    atomic_write_text(target, render_ticket_report(out))
    log.info("wrote %s", target)
    return target


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    parts: list[str] = []
    idx = sorted(indices)
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        parts.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ", ".join(parts)

"""Keep sets from Γ's support, masked nets, and physically pruned nets with folded constants."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from ..arch import Architecture
from ..errors import UsageError
from ..models import build_model

log = logging.getLogger("grownet.ticket")


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
    """Every conv and the classifier of ``arch``'s model, in forward order (from its conv
    records, :attr:`Architecture.convs`)."""
    out = [Consumer(c.module, c.out_layer, c.in_layer, c.bn, c.kernel == 1) for c in arch.convs]
    out.append(Consumer("classifier", None, arch.convs[-1].out_layer, None, True))  # after global average pooling
    return out


def tied_layers(arch: Architecture) -> list[tuple[str, ...]]:
    """Groups of layers whose channels are the same residual channels (they must keep the same
    indices): ``("stem", "stages.0")`` when stage 0's first block has an identity shortcut."""
    return [(sc.in_layer, sc.out_layer) for sc in arch.shortcuts if sc.tied]


def _producers(arch: Architecture, layer: str) -> list[str]:
    """Conv weight names whose output filters write ``layer``'s channels (tied layers included)."""
    for group in tied_layers(arch):
        if layer in group:
            return [w for member in group for w in arch.layer(member).conv_weights]
    return arch.layer(layer).conv_weights


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
    for sc in arch.shortcuts:  # a projection that equal widths would remove (ResNet stem and stage 0)
        first, second = sc.in_layer, sc.out_layer
        if sc.by_width and len(keep[first]) == len(keep[second]):
            layer = first if len(keep[first]) < widths[first] else second
            keep[layer] = sorted(keep[layer] + [_best(scores, layer, keep[layer])])
            log.info("layer %s keeps one filter outside the support so stage %d keeps its projection shortcut",
                     layer, sc.stage)
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
    return arch.with_widths({layer: len(keep[layer]) for layer in arch.layer_widths()})


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
    kept = {sc.block for sc in small_arch.shortcuts if sc.projection}
    for sc in arch.shortcuts:
        if sc.projection and sc.block not in kept:
            raise UsageError(f"keep: {sc.in_layer} and {sc.out_layer} must keep different numbers of filters "
                             f"(stage {sc.stage} has a projection shortcut)")

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

"""Function-preserving growth: wider layers, deeper stages, optimizer state carried over.

Growth is a pure function ``(model, arch) -> (model, arch)``: the new architecture
(:meth:`~grownet.arch.Architecture.with_width`, :meth:`~grownet.arch.Architecture.with_extra_layer`)
is built fresh with :func:`~grownet.models.build_model` (so new filters draw from torch's
global RNG and a seeded run is reproducible), then one generic transfer fills it:

- every parameter and buffer whose name exists in the old model is copied into the leading
  slice of its new tensor (weights, BatchNorm statistics, ``num_batches_tracked``);
- an old filter's fan-in from NEW input channels is zeroed (conv and linear weights), so new
  channels reach no old output and, in eval mode, the old function is kept exactly;
- new output filters keep their fresh weights (kaiming) and fresh BatchNorm (weight 1, bias 0,
  mean 0, var 1);
- a new VGG conv starts as an identity: Dirac kernel and a BatchNorm that is the identity in
  eval mode (mean 0, var ``1 - eps``, weight 1, bias 0); its input is post-ReLU, so the ReLU
  after it is an identity too;
- a new ResNet basic block starts as an identity mapping: ``bn2`` weight and bias are 0, so the
  block returns ``relu(x) = x``;
- a projection shortcut that appears because a block's input and output widths now differ
  starts as the identity on the old channels (1x1 Dirac, zero for new channels) with an
  eval-identity BatchNorm.

Function preservation holds in eval mode; in train mode BatchNorm uses batch statistics, so
the new identity layers normalise their input and the output changes (as with any new layer).

With ``optimizer=`` the optimizer is updated IN PLACE: afterwards the same object optimizes the
new model's parameters, with the same class, defaults and per-group hyperparameters (the
current learning rates included) and with its per-parameter state carried by the same
leading-slice rule (DessiLBI's ``V``, ``gamma`` and ``momentum_buffer`` of old filters kept,
their new slices zero). Parameters that did not exist before (a new layer, block or shortcut)
join the group that :func:`grownet.optim.dessilbi_param_groups` would put them in, matched
through the old parameters that group holds, and start with zero ``V`` and Γ and no momentum
buffer. Each group lists its parameters in model order, as a fresh
``DessiLBI(dessilbi_param_groups(new_model), ...)`` would, so ``optimizer.state_dict()`` written
after growth loads into such an optimizer. The old model itself is never modified.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from typing import Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import nn

from .arch import MAX_WIDTH, Architecture
from .errors import UsageError
from .models import build_model

__all__ = ["Grown", "apply", "widen", "deepen", "grown_arch"]

logger = logging.getLogger(__name__)


class Grown(NamedTuple):
    """The result of a growth: unpacks as ``model, arch = widen(...)``."""

    model: nn.Module
    arch: Architecture


def widen(
    model: nn.Module,
    arch: Architecture,
    layer: str,
    width: int,
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> Grown:
    """Widen one layer to ``width`` filters, preserving the model's function (eval mode).

    Args:
        model: a model built by :func:`~grownet.models.build_model` from ``arch``.
        arch: its architecture.
        layer: a name from ``arch.layer_widths()`` (``stages.S.L``, ResNet ``stages.S``, ``stem``).
        width: the new width; must exceed the current one.
        optimizer: if given, updated in place to optimize the new model (see module docs).

    Returns:
        ``Grown(model, arch)``: a new model (same device, dtype, memory format and train/eval
        mode) and its architecture. ``model, arch = widen(model, arch, "stages.0.1", 24,
        optimizer=opt)`` leaves ``opt`` stepping the new model.

    Raises:
        UsageError: unknown layer, a width not above the current one, or a widening that
            would remove an existing projection shortcut.
    """
    return apply(model, arch, {layer: width}, (), optimizer=optimizer)


def deepen(
    model: nn.Module,
    arch: Architecture,
    stage: int,
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> Grown:
    """Append an identity-initialised layer (VGG conv) or basic block (ResNet) to ``stage``.

    The new layer has the stage's last width (:meth:`Architecture.with_extra_layer`); the
    model's function is preserved in eval mode. ``optimizer``, if given, is updated in place.

    Raises:
        UsageError: ``stage`` is not a stage index of ``arch``.
    """
    return apply(model, arch, {}, (stage,), optimizer=optimizer)


def apply(
    model: nn.Module,
    arch: Architecture,
    widths: Mapping[str, int] | None = None,
    deepen: Sequence[int] = (),
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> Grown:
    """Apply several widenings and deepenings with ONE rebuild of the model.

    Widenings are applied first, then deepenings, so a layer appended to a stage whose last
    layer is also widened gets the new width. A stage may appear in ``deepen`` more than once
    (one layer per entry).

    Args:
        model: a model built from ``arch``.
        arch: its architecture.
        widths: ``{layer name: new width}``; every width must exceed the layer's current one.
        deepen: stage indices, each gaining one layer or block at its end.
        optimizer: if given, updated in place to optimize the new model (see module docs).

    Returns:
        ``Grown(model, arch)`` (unpacks as ``model, arch``).

    Raises:
        UsageError: nothing to grow, an unknown layer or stage, a width that does not grow,
            a model that does not match ``arch``, an optimizer holding parameters that are
            not the model's, or a widening that would remove a projection shortcut.
    """
    _check_model(model, arch)
    new_arch = grown_arch(arch, widths, deepen)
    if optimizer is not None:
        _check_optimizer(optimizer, model)

    new_model = _build_like(model, new_arch)
    _transfer(model, new_model, arch, new_arch)
    if optimizer is not None:
        _carry_optimizer(optimizer, model, new_model)
    logger.debug("grew %s -> %s", arch.layer_widths(), new_arch.layer_widths())
    return Grown(new_model, new_arch)


# ---- validation ----------------------------------------------------------------------------


def _check_model(model: nn.Module, arch: Architecture) -> None:
    if not isinstance(arch, Architecture):
        raise UsageError(f"arch must be an Architecture, got {type(arch).__name__}")
    built = getattr(model, "arch", None)
    if not isinstance(built, Architecture) or built != arch:
        raise UsageError("model was not built from arch; pass the Architecture the model was built from (model.arch)")


def grown_arch(arch: Architecture, widths: Mapping[str, int] | None = None, deepen: Sequence[int] = ()) -> Architecture:
    """The architecture :func:`apply` would build, validated the same way, without building a
    model (for planning: cost, budget, or checking a growth is possible).

    Raises:
        UsageError: as :func:`apply` does for its ``widths`` and ``deepen``.
    """
    widths = dict(widths or {})
    stages = list(deepen)
    if not isinstance(arch, Architecture):
        raise UsageError(f"arch must be an Architecture, got {type(arch).__name__}")
    if not widths and not stages:
        raise UsageError("nothing to grow: pass at least one layer width or one stage to deepen")
    current = arch.layer_widths()
    new = arch
    for layer, width in widths.items():
        if layer not in current:
            raise UsageError(f"unknown layer {layer!r}; known layers: {', '.join(current)}")
        if not isinstance(width, int) or isinstance(width, bool) or not current[layer] < width <= MAX_WIDTH:
            raise UsageError(
                f"{layer}: new width must be an integer greater than the current width {current[layer]} "
                f"(and <= {MAX_WIDTH}), got {width!r}"
            )
        new = new.with_width(layer, width)
    for stage in stages:
        if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage < arch.num_stages:
            raise UsageError(f"deepen: stage must be an integer in [0, {arch.num_stages - 1}], got {stage!r}")
        new = new.with_extra_layer(stage)
    _check_shortcuts(arch, new, widths)
    return new


def _check_shortcuts(old: Architecture, new: Architecture, widths: Mapping[str, int]) -> None:
    """A learned projection shortcut cannot become an identity without changing the function."""
    kept = {sc.block for sc in new.shortcuts if sc.projection}
    for sc in old.shortcuts:
        if sc.projection and sc.block not in kept:
            grown = ", ".join(f"{k}={v}" for k, v in widths.items())
            raise UsageError(
                f"growing {grown} makes block {sc.block}'s input and output equally wide "
                f"({new.width(sc.out_layer)}) and would remove its projection shortcut, which cannot preserve the "
                "function; choose other widths"
            )


def _check_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    own = {id(p) for p in model.parameters()}
    for g, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            if id(p) not in own:
                raise UsageError(
                    f"optimizer: param_groups[{g}] holds a tensor of shape {tuple(p.shape)} that is not a parameter "
                    f"of model; pass the optimizer built over this model"
                )


# ---- building and transfer -----------------------------------------------------------------


def _is_channels_last(model: nn.Module) -> bool:
    """Whether the model's 4-D weights are stored channels-last (1x1 kernels are ambiguous)."""
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _build_like(model: nn.Module, arch: Architecture) -> nn.Module:
    """Build ``arch`` on the device, dtype, memory format and train/eval mode of ``model``."""
    ref = next(model.parameters())
    new = build_model(arch).to(device=ref.device, dtype=ref.dtype)
    if _is_channels_last(model):
        new = new.to(memory_format=torch.channels_last)
    return new.train(model.training)


def _leading(shape: Iterable[int]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(itertools.chain(model.named_parameters(), model.named_buffers()))


def _dirac_(weight: torch.Tensor, n: int) -> None:
    """Identity kernel on the first ``n`` channels, zero elsewhere."""
    weight.zero_()
    idx = torch.arange(n, device=weight.device)
    weight[idx, idx, weight.shape[2] // 2, weight.shape[3] // 2] = 1


def _bn_identity_(bn: nn.BatchNorm2d) -> None:
    """A BatchNorm that is the identity in eval mode: (x - 0) / sqrt(1 - eps + eps) * 1 + 0."""
    bn.weight.fill_(1)
    bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1 - bn.eps)
    bn.num_batches_tracked.zero_()


@torch.no_grad()
def _transfer(model: nn.Module, new_model: nn.Module, arch: Architecture, new_arch: Architecture) -> None:
    old = _tensors(model)
    fresh: list[str] = []
    for name, t in _tensors(new_model).items():
        src = old.get(name)
        if src is None:
            fresh.append(name)
            continue
        if src.dim() != t.dim() or any(a > b for a, b in zip(src.shape, t.shape)):
            raise RuntimeError(f"bug: {name} shrinks from {tuple(src.shape)} to {tuple(t.shape)}")
        t[_leading(src.shape)].copy_(src)
        if t.dim() >= 2 and t.shape[1] > src.shape[1]:
            t[: src.shape[0], src.shape[1] :].zero_()  # old filters ignore new input channels
        if isinstance(t, nn.Parameter):
            t.requires_grad_(src.requires_grad)

    # The family says which modules are new and how each starts (grownet.families.NewUnit).
    units = new_arch.rules.new_units(arch, new_arch)
    for unit in units:
        bn = new_model.get_submodule(unit.bn)
        if unit.init == "zero":
            bn.weight.zero_()
            bn.bias.zero_()
            continue
        weight = new_model.get_submodule(unit.conv).weight
        _dirac_(weight, min(weight.shape[:2]) if unit.channels is None else unit.channels)
        _bn_identity_(bn)

    prefixes = tuple(u.module + "." for u in units)
    stray = [n for n in fresh if not n.startswith(prefixes)]
    if stray:
        raise RuntimeError(f"bug: new tensors without an initialisation rule: {', '.join(stray)}")


# ---- optimizer carry-over ------------------------------------------------------------------


def _carry_value(value: object, old: torch.Tensor, new: torch.Tensor) -> object:
    """A state entry shaped like the old parameter moves into the leading slice of zeros
    shaped and laid out like the new one (fused optimizer kernels need one layout); anything
    else (step counters, None) is kept."""
    if not isinstance(value, torch.Tensor) or value.shape != old.shape:
        return value
    if value.shape == new.shape and value.stride() == new.stride():
        return value
    out = torch.zeros_like(new, dtype=value.dtype)
    with torch.no_grad():
        out[_leading(value.shape)].copy_(value)
    return out


def _carry_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, new_model: nn.Module) -> None:
    """Re-point ``optimizer`` at ``new_model``'s parameters in place (see module docs)."""
    old_names = {id(p): n for n, p in model.named_parameters()}
    new_params = dict(new_model.named_parameters())
    group_of: dict[str, int] = {}
    lists: list[list[torch.Tensor]] = []
    state: dict[torch.Tensor, dict] = {}
    for g, group in enumerate(optimizer.param_groups):
        lists.append([])
        for p in group["params"]:
            name = old_names[id(p)]
            q = new_params[name]
            lists[g].append(q)
            group_of[name] = g
            if optimizer.state.get(p):
                state[q] = {k: _carry_value(v, p, q) for k, v in optimizer.state[p].items()}
    old_set = set(old_names.values())
    placed = _place_new(new_model, [n for n in new_params if n not in old_set], group_of)
    for name, g in placed.items():
        lists[g].append(new_params[name])
    # Model order inside each group, as a fresh dessilbi_param_groups(new_model) lists them:
    # optimizer.state_dict() identifies parameters by position, so a checkpoint written after
    # growth loads into an optimizer built afresh over the grown model.
    order = {id(p): i for i, p in enumerate(new_params.values())}
    for params in lists:
        params.sort(key=lambda p: order[id(p)])

    # Nothing above touched the optimizer; now commit.
    for group, params in zip(optimizer.param_groups, lists):
        group["params"] = params
    optimizer.state.clear()
    optimizer.state.update(state)
    init_state = getattr(optimizer, "init_state", None)  # DessiLBI: zero V and Γ for new tensors
    if callable(init_state):
        for name, g in placed.items():
            if optimizer.param_groups[g].get("structure") is not None:
                init_state(new_params[name])


def _place_new(new_model: nn.Module, added: list[str], group_of: Mapping[str, int]) -> dict[str, int]:
    """Optimizer group index for each new parameter: the group holding most of the old
    parameters that :func:`grownet.optim.dessilbi_param_groups` puts beside it. A new
    parameter of a kind the optimizer held none of (say, BatchNorm left out on purpose)
    stays out too."""
    if not added:
        return {}
    from .optim import dessilbi_param_groups  # only needed when an optimizer is carried

    names = {id(p): n for n, p in new_model.named_parameters()}
    new = set(added)
    placed: dict[str, int] = {}
    for ref in dessilbi_param_groups(new_model):
        members = [names[id(p)] for p in ref["params"]]
        votes = Counter(group_of[n] for n in members if n in group_of)
        if votes:
            target = votes.most_common(1)[0][0]
            placed.update((n, target) for n in members if n in new)
    left_out = [n for n in added if n not in placed]
    if left_out:
        logger.info("optimizer holds no parameter like %s; the new ones stay out of it too", ", ".join(left_out))
    return placed

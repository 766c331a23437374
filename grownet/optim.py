r"""DessiLBI: momentum SGD coupled with a sparse structure parameter Γ (METHOD.md §1).

:class:`DessiLBI` is a :class:`torch.optim.Optimizer`; :func:`dessilbi` is its functional core
(in ``grownet/_dessilbi.py``: a readable per-tensor reference, a ``torch._foreach_*`` path and
a fused path (CPU and CUDA) side by side, chosen explicitly as in ``torch/optim/sgd.py``).
:func:`dessilbi_param_groups` decides which tensors carry Γ;
:func:`filter_activity` reads the share of each structured tensor's groups in Γ's support, the
signal the grower acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ._dessilbi import Structure, _column, _filter_scale, _group_norms, dessilbi
from .errors import UsageError

__all__ = ["DessiLBI", "dessilbi", "dessilbi_param_groups", "filter_activity", "STRUCTURES", "LINEAR_MODES"]

#: Values of a param group's ``"structure"`` key that give its tensors a Γ (``None``: plain SGD).
STRUCTURES = ("filter", "lasso")
#: Values of :func:`dessilbi_param_groups`'s ``linear`` argument.
LINEAR_MODES = ("none", "lasso", "filter")

# Hyperparameters a group may set, with the defaults ``__setstate__`` gives to checkpoints
# written before a key existed (the paper's CIFAR values).
_GROUP_DEFAULTS: dict[str, Any] = {
    "lr": 0.05,
    "kappa": 1.0,
    "mu": 100.0,
    "lam": 1.0,
    "momentum": 0.9,
    "dampening": 0.0,
    "nesterov": False,
    "weight_decay": 0.0,
    "structure": None,
    "foreach": None,
    "fused": None,
    "compiled": False,
}


class _FilterState(MutableMapping[str, Any]):
    """The state of one ``"filter"``-structured parameter, a mapping like any optimizer state
    with the documented entries ``"V"``, ``"gamma"`` and ``"momentum_buffer"``.

    Γ is not stored: after a step it is a per-filter scale of V, ``Γ_g = scale[g]·V_g`` with
    ``scale = κ·max(0, 1 − λ/‖V_g‖)``, kept as one value per filter (``.scale``). Reading
    ``"gamma"`` computes it (a new tensor each time; writing into it changes nothing).
    Assigning ``"gamma"`` (as checkpoint loading and growth's carry-over do) stores that tensor
    as Γ; the next step starts from it and then returns to the scale.
    """

    #: (shape, stride) of the parameter the entries were last fitted to; None: fit them again.
    #: A class attribute too, so that a state pickled before it existed reads None.
    layout: tuple[torch.Size, tuple[int, ...]] | None = None

    def __init__(self, entries: dict[str, Any], scale: Tensor | None = None) -> None:
        self.entries = entries  # "V", "momentum_buffer", a stored "gamma", anything else
        self.scale = scale  # shape (p.shape[0],); None until the optimizer has read this state
        self.layout = None

    def _gamma_is_virtual(self) -> bool:
        return "gamma" not in self.entries and self.scale is not None and "V" in self.entries

    def __getitem__(self, key: str) -> Any:
        if key == "gamma" and self._gamma_is_virtual():
            v = self.entries["V"]
            return v * self.scale.view(_column(v))  # type: ignore[union-attr]
        return self.entries[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.entries[key] = value
        self.layout = None  # the optimizer's next read checks the entries again

    def __delitem__(self, key: str) -> None:
        if key == "gamma" and self._gamma_is_virtual():
            self.scale = None  # the optimizer's next read takes Γ = κ·prox(V) again
        else:
            del self.entries[key]
        self.layout = None

    def __iter__(self) -> Iterator[str]:
        yield from self.entries
        if self._gamma_is_virtual():
            yield "gamma"

    def __len__(self) -> int:
        return len(self.entries) + self._gamma_is_virtual()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


def _stored(state: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The mapping that holds ``state``'s tensors as stored (a filter state's entries, not its
    computed Γ), read and written without the state's bookkeeping."""
    return state.entries if type(state) is _FilterState else state


class DessiLBI(Optimizer):
    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.05,
        *,
        kappa: float = 1.0,
        mu: float = 100.0,
        lam: float = 1.0,
        momentum: float = 0.9,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        fused: bool | None = None,
        compiled: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "kappa": kappa,
            "mu": mu,
            "lam": lam,
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "structure": None,
            "foreach": foreach,
            "fused": fused,
            "compiled": compiled,
        }
        _check_hyperparameters(defaults)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in _GROUP_DEFAULTS.items():
                group.setdefault(key, value)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (validated like the constructor's arguments; ``"structure"`` may be
        ``"filter"``, ``"lasso"`` or ``None``)."""
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif not isinstance(params, set):  # torch rejects sets (unordered) itself
            params = list(params)
        param_group = {**param_group, "params": params}
        _check_hyperparameters({**self.defaults, **param_group})
        if param_group.get("structure", self.defaults["structure"]) == "filter":
            for p in params:
                p = p[1] if isinstance(p, tuple) else p  # (name, tensor) pairs
                if p.dim() < 2:
                    raise ValueError(
                        f"Invalid structure: 'filter' for a parameter of shape {tuple(p.shape)} "
                        "(needs >= 2 dims: one group per slice along dim 0; use 'lasso' or None)"
                    )
        super().add_param_group(param_group)

    # -- state -----------------------------------------------------------------------------

    def init_state(self, p: Tensor) -> MutableMapping[str, Any]:
        """``p``'s state, with V and Γ created (zero, laid out like ``p``) if ``p`` is
        structured and they do not exist yet. The momentum buffer is created by the first step
        (it starts as the first gradient, as in :class:`torch.optim.SGD`). Growth code calls
        this for parameters that are new after a growth.
        """
        return self._state_in(p, self.param_groups[self._group_index(p)])

    def _state_in(self, p: Tensor, group: Mapping[str, Any]) -> MutableMapping[str, Any]:
        """:meth:`init_state` for ``p`` of ``group`` (what a step calls: no search for the group)."""
        structure = group["structure"]
        if structure == "filter":
            return self._filter_state(p, group)
        state = self.state[p]
        if structure == "lasso" and "V" not in state:
            state["V"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["gamma"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def gamma(self, p: Tensor) -> Tensor:
        """Γ of structured parameter ``p``, shaped like ``p`` (zeros before the first step):
        for ``"lasso"`` the live state tensor, for ``"filter"`` a new tensor computed from V."""
        if self._structure_of(p) is None:
            raise UsageError(
                f"parameter of shape {tuple(p.shape)} has no Γ: its param group has no 'structure'; "
                "put it in a group with structure 'filter' or 'lasso'"
            )
        return self.init_state(p)["gamma"]

    def support(self, p: Tensor) -> Tensor:
        """Bool tensor, one entry per group of ``p``: ``Γ_g != 0``. Shape ``(p.shape[0],)`` for
        ``"filter"`` (one group per output filter), ``p.shape`` for ``"lasso"``."""
        if self._structure_of(p) == "filter":
            state = self._filter_state(p, self.param_groups[self._group_index(p)])
            if "gamma" in state.entries:
                return torch.flatten(state.entries["gamma"], 1).ne(0).any(dim=1)
            # Γ_g = scale[g]·V_g, and scale[g] > 0 only where ‖V_g‖ > λ
            return state.scale.ne(0)  # type: ignore[union-attr]
        return self.gamma(p).ne(0)

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`torch.optim.Optimizer.state_dict`, with every structured parameter's
        state holding ``"V"``, ``"gamma"`` and (after a step) ``"momentum_buffer"`` as tensors
        shaped like the parameter, Γ computed for the purpose: the format of grownet's earlier
        releases, which :meth:`load_state_dict` reads."""
        sd = super().state_dict()
        sd["state"] = {k: dict(v) if isinstance(v, _FilterState) else v for k, v in sd["state"].items()}
        return sd

    def _group_index(self, p: Tensor) -> int:
        for i, group in enumerate(self.param_groups):
            if any(q is p for q in group["params"]):
                return i
        raise UsageError(
            f"tensor of shape {tuple(p.shape)} is not a parameter of this optimizer; "
            "pass one of the tensors given to DessiLBI"
        )

    def _structure_of(self, p: Tensor) -> Structure | None:
        return self.param_groups[self._group_index(p)]["structure"]

    def _filter_state(self, p: Tensor, group: Mapping[str, Any]) -> _FilterState:
        """``self.state[p]`` as a :class:`_FilterState`, with V and the scale present and every
        tensor entry laid out like ``p``. A stored Γ that equals κ·prox(V) exactly (a
        checkpoint, a growth's carry-over) becomes the scale again; any other stays stored."""
        state = self.state[p]
        shape, stride = p.shape, p.stride()
        if type(state) is _FilterState and state.scale is not None and state.layout == (shape, stride):
            return state  # as the last read left it: no entry assigned or deleted since
        if not isinstance(state, _FilterState):
            state = self.state[p] = _FilterState(dict(state))
        entries = state.entries
        for key, value in entries.items():  # the fused kernel reads raw memory: one layout
            if isinstance(value, Tensor) and value.shape == shape and value.stride() != stride:
                entries[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)
        if "V" not in entries:
            entries["V"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state.scale = None
        if state.scale is None:
            v = entries["V"]
            scale = _filter_scale(_group_norms(v), lam=group["lam"], kappa=group["kappa"])
            gamma = entries.get("gamma")
            if gamma is None or torch.equal(gamma, v * scale.view(_column(v))):
                entries.pop("gamma", None)
                state.scale = scale
            else:  # a placeholder: the next step starts from the stored Γ and overwrites it
                state.scale = torch.zeros_like(scale)
        state.layout = (shape, stride)
        return state

    # -- step ------------------------------------------------------------------------------

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        momentum_buffers: list[Tensor | None],
        vs: list[Tensor],
        gammas: list[Tensor | None],
        scales: list[Tensor],
    ) -> list[MutableMapping[str, Any]]:
        """Fill the lists with the tensors of ``group``'s parameters that have a gradient;
        returns those parameters' states."""
        states: list[MutableMapping[str, Any]] = []
        structure = group["structure"]
        momentum = group["momentum"] != 0
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise UsageError(
                    "DessiLBI does not support sparse gradients; use dense modules "
                    "(e.g. nn.Embedding(..., sparse=False))"
                )
            params.append(p)
            grads.append(grad)
            state = self._state_in(p, group)
            states.append(state)
            entries = _stored(state)
            if structure == "filter":
                gammas.append(entries.get("gamma"))
                scales.append(state.scale)  # type: ignore[attr-defined]
            elif structure == "lasso":
                gammas.append(entries["gamma"])
            if structure is not None:
                vs.append(entries["V"])
            if momentum:
                momentum_buffers.append(entries.get("momentum_buffer"))
        return states

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one DessiLBI step on every parameter that has a gradient.

        Args:
            closure (Callable, optional): re-evaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            momentum_buffers: list[Tensor | None] = []
            vs: list[Tensor] = []
            gammas: list[Tensor | None] = []
            scales: list[Tensor] = []
            states = self._init_group(group, params, grads, momentum_buffers, vs, gammas, scales)
            dessilbi(
                params,
                grads,
                momentum_buffers,
                vs,
                gammas,
                scales,
                structure=group["structure"],
                lr=group["lr"],
                kappa=group["kappa"],
                mu=group["mu"],
                lam=group["lam"],
                momentum=group["momentum"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                weight_decay=group["weight_decay"],
                foreach=group["foreach"],
                fused=group["fused"],
                compiled=group["compiled"],
            )
            momentum = group["momentum"] != 0
            for i, state in enumerate(states):
                entries = _stored(state)
                if momentum and entries.get("momentum_buffer") is not momentum_buffers[i]:
                    state["momentum_buffer"] = momentum_buffers[i]  # created by this step
                if entries is not state:
                    entries.pop("gamma", None)  # a filter state's Γ is scale·V again
        return loss


DessiLBI.__doc__ = r"""Implements DessiLBI (Fu et al., "Exploring Structural Sparsity of Deep Networks via
    Inverse Scale Spaces", TPAMI 2022), METHOD.md §1.

    Every parameter in a group whose ``"structure"`` is ``"filter"`` or ``"lasso"`` carries an
    accumulator :math:`V` and a structure parameter :math:`\Gamma` of its own shape, both
    starting at zero; together they minimise
    :math:`L(W) + \lVert W - \Gamma\rVert^2 / (2\mu)`. With learning rate :math:`\alpha`:

    .. math::
       \begin{aligned}
            &g_t \leftarrow \nabla_W L(W_{t-1}) + \omega W_{t-1}
                \qquad (\omega: \text{weight decay})                                    \\
            &b_t \leftarrow g_t \text{ if } t = 1 \text{ else } m\, b_{t-1} + (1 - \tau)\, g_t,
                \qquad d_t \leftarrow g_t + m\, b_t \text{ (nesterov) else } b_t          \\
            &W_t \leftarrow W_{t-1} - \kappa\alpha\,\big(d_t + (W_{t-1} - \Gamma_{t-1})/\mu\big) \\
            &V_t \leftarrow V_{t-1} + (\alpha/\mu)\,(W_{t-1} - \Gamma_{t-1})              \\
            &\Gamma_t \leftarrow \kappa\, \operatorname{prox}_\lambda(V_t)
       \end{aligned}

    where, per group :math:`g` (one output filter ``W[o]`` for ``"filter"``, one element for
    ``"lasso"``), :math:`\operatorname{prox}_\lambda(V)_g = \max(0, 1 - \lambda/\lVert V_g\rVert_2)\,V_g`
    (exactly 0 when :math:`\lVert V_g\rVert_2 \le \lambda`) for ``"filter"`` and
    :math:`\operatorname{sign}(V)\max(\lvert V\rvert - \lambda, 0)` for ``"lasso"``. Groups
    without a structure take the momentum-SGD step :math:`W_t \leftarrow W_{t-1} - \kappa\alpha\, d_t`.
    :math:`m`, :math:`\tau`, nesterov and weight decay follow :class:`torch.optim.SGD` exactly.

    Args:
        params (iterable): parameters, or dicts defining param groups; a group's
            ``"structure"`` key (``"filter"``, ``"lasso"`` or ``None``) says whether and how its
            tensors carry Γ (:func:`dessilbi_param_groups` builds the usual groups) (default: None)
        lr (float, optional): learning rate α (default: 0.05)
        kappa (float, optional): κ, scales both the step and Γ (default: 1.0)
        mu (float, optional): μ (the paper's ν), the coupling between W and Γ (default: 100.0)
        lam (float, optional): λ, the prox threshold; a group enters Γ's support once
            :math:`\lVert V_g\rVert_2 > \lambda` (default: 1.0)
        momentum (float, optional): momentum factor m, in [0, 1) (default: 0.9)
        dampening (float, optional): dampening τ for momentum (default: 0.0)
        nesterov (bool, optional): Nesterov momentum; needs momentum > 0 and dampening 0
            (default: False)
        weight_decay (float, optional): L2 penalty ω added to the gradient before momentum
            (default: 0.0)
        foreach (bool, optional): True: the multi-tensor path on ``torch._foreach_*`` ops
            (any device); False: the per-tensor reference loop, unless ``fused`` (default:
            None)
        fused (bool, optional): True: the path on torch's fused SGD kernel (one pass for the
            momentum step, and with ``weight_decay`` 0 one for moving W and V by their
            coupling), CPU or CUDA tensors of a floating dtype; must not be set with
            ``foreach=True``. With both None, each param group takes ``fused`` when all its
            tensors are dense CPU tensors of one layout that the kernel takes (on CUDA it
            measured no faster than ``foreach``), else
            ``foreach`` when all are plain dense tensors, else the reference loop (default:
            None)
        compiled (bool, optional): True: ``"filter"`` groups step through one kernel per
            tensor that :func:`torch.compile` generates (C++ on CPU, Triton on CUDA), reading
            W, g, b and V once and writing W, b and V once. The first step compiles (about
            15 s on the development CPU; shapes are dynamic, so most growth reuses the
            kernel; one that adds layers compiles again); a step that creates momentum
            buffers or starts from an assigned Γ, and other groups, take the path
            ``foreach``/``fused`` select; if compilation fails, a warning is logged and that
            path runs from then on (default: False)

    State, per parameter ``p`` (``optimizer.state[p]``, a mapping; growth code copies these):
        ``"V"``: :math:`V`, shaped like ``p`` (structured parameters only).
        ``"gamma"``: :math:`\Gamma`, shaped like ``p`` (structured parameters only). For
        ``"filter"``, :math:`\Gamma_t` is :math:`V_t` times one factor per filter,
        :math:`\kappa\max(0, 1 - \lambda/\lVert V_g\rVert_2)`: the optimizer keeps those
        factors, not Γ, and reading ``"gamma"`` computes it (a new tensor: write Γ by
        assigning the entry; the next step starts from what was assigned).
        ``"momentum_buffer"``: :math:`b`, shaped like ``p``; only when momentum != 0, created
        by the first step that sees a gradient for ``p``.
        :meth:`state_dict` holds these three as tensors, as grownet's earlier releases wrote
        them; their checkpoints load and resume.

    Example:
        >>> # xdoctest: +SKIP
        >>> opt = DessiLBI(dessilbi_param_groups(model), lr=0.05, kappa=1.0, mu=100.0)
        >>> opt.zero_grad()
        >>> loss_fn(model(x), y).backward()
        >>> opt.step()
        >>> filter_activity(model, opt)  # {"stages.0.0.conv.weight": 0.25, ...}

    .. note::
        Where this implementation fixes what the paper leaves open or differs from its
        reference code: momentum and weight decay act on :math:`\nabla L` only, never on the
        coupling term :math:`(W - \Gamma)/\mu`, with :class:`torch.optim.SGD`'s conventions
        (the buffer starts as the first gradient; dampening applies from the second step); λ
        is a parameter (the reference code fixes it at 1); V and Γ are created at zero by the
        first step (or :meth:`init_state`); a parameter without a gradient is skipped entirely
        (its V and Γ do not move). Changing κ or λ takes effect from the Γ the next step
        computes. The multi-tensor and fused paths compute the same equations in another
        order, so they match the reference loop to rounding, not bit for bit.
    """


def _check_hyperparameters(h: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first invalid hyperparameter in ``h``."""

    def check(name: str, ok: Callable[[Any], bool], rule: str) -> None:
        value = h[name]
        try:
            valid = bool(ok(value)) and not isinstance(value, bool)
        except TypeError:
            valid = False
        if not valid:
            raise ValueError(f"Invalid {name}: {value!r} ({rule})")

    check("lr", lambda x: x > 0, "must be > 0")
    check("kappa", lambda x: x > 0, "must be > 0")
    check("mu", lambda x: x > 0, "must be > 0")
    check("lam", lambda x: x >= 0, "must be >= 0")
    check("momentum", lambda x: 0 <= x < 1, "must be in [0, 1)")
    check("dampening", lambda x: x >= 0, "must be >= 0")
    check("weight_decay", lambda x: x >= 0, "must be >= 0")
    if h["nesterov"] not in (True, False):
        raise ValueError(f"Invalid nesterov: {h['nesterov']!r} (must be True or False)")
    if h["nesterov"] and (h["momentum"] == 0 or h["dampening"] != 0):
        raise ValueError(f"Invalid nesterov: {h['nesterov']!r} (requires momentum > 0 and dampening == 0)")
    if h["structure"] not in (None, *STRUCTURES):
        raise ValueError(f"Invalid structure: {h['structure']!r} (must be 'filter', 'lasso' or None)")
    for flag in ("foreach", "fused"):
        if h[flag] not in (None, True, False):
            raise ValueError(f"Invalid {flag}: {h[flag]!r} (must be True, False or None)")
    if h["compiled"] not in (True, False):
        raise ValueError(f"Invalid compiled: {h['compiled']!r} (must be True or False)")
    if h["foreach"] and h["fused"]:
        raise ValueError("Invalid foreach: True with fused=True (choose one of them)")


# -- parameter groups and activity -------------------------------------------------------------

_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def dessilbi_param_groups(
    model: nn.Module, *, linear: str = "none", weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Param groups for :class:`DessiLBI` (groups with no tensors are left out).

    - conv weights → ``structure="filter"`` (one group per output filter), ``weight_decay``;
    - hidden ``nn.Linear`` weights → per ``linear``: ``"none"`` plain with ``weight_decay``,
      ``"lasso"`` or ``"filter"`` (one group per output row) structured with ``weight_decay``;
    - the classifier, i.e. the last ``nn.Linear`` in ``model.modules()`` order: plain
      (its weight with ``weight_decay``, its bias without);
    - normalisation-layer weights and biases and every bias: plain, weight decay 0;
    - anything else: plain with ``weight_decay``.

    With ``weight_decay == 0`` all plain tensors share one group (fewer groups, less work per
    step). Within a group tensors follow ``model.modules()`` order; parameters with
    ``requires_grad=False`` are left out.
    """
    if linear not in LINEAR_MODES:
        raise ValueError(f"Invalid linear: {linear!r} (must be 'none', 'lasso' or 'filter')")
    if not weight_decay >= 0:
        raise ValueError(f"Invalid weight_decay: {weight_decay!r} (must be >= 0)")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    classifier = linears[-1] if linears else None
    linear_structure = None if linear == "none" else linear

    kinds: dict[str, list[Tensor]] = {"filter": [], "lasso": []}
    plain_decays: list[tuple[Tensor, bool]] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if name == "bias" or isinstance(module, _NORM_LAYERS):
                plain_decays.append((p, False))
            elif name == "weight" and isinstance(module, nn.modules.conv._ConvNd):
                kinds["filter"].append(p)
            elif name == "weight" and isinstance(module, nn.Linear) and module is not classifier and linear_structure:
                kinds[linear_structure].append(p)
            else:
                plain_decays.append((p, True))

    groups = [
        {"params": kinds["filter"], "structure": "filter", "weight_decay": weight_decay},
        {"params": kinds["lasso"], "structure": "lasso", "weight_decay": weight_decay},
    ]
    if weight_decay == 0:
        groups.append({"params": [p for p, _ in plain_decays], "weight_decay": 0.0})
    else:
        groups.append({"params": [p for p, decays in plain_decays if decays], "weight_decay": weight_decay})
        groups.append({"params": [p for p, decays in plain_decays if not decays], "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def filter_activity(model: nn.Module, opt: DessiLBI) -> dict[str, float]:
    """{parameter name: share of its groups in Γ's support}, in ``model.named_parameters()``
    order, for the parameters ``opt`` gives a structure (a share of filters for ``"filter"``,
    of elements for ``"lasso"``; 0.0 before the first step)."""
    structures = {p: g["structure"] for g in opt.param_groups for p in g["params"]}
    return {
        name: opt.support(p).float().mean().item()
        for name, p in model.named_parameters()
        if structures.get(p) is not None
    }

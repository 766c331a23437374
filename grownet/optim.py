r"""DessiLBI: momentum SGD coupled with a sparse structure parameter Γ (METHOD.md §1).

:class:`DessiLBI` is a :class:`torch.optim.Optimizer`; :func:`dessilbi` is its functional core,
with a readable per-tensor reference (``_single_tensor_dessilbi``), a multi-tensor path on
``torch._foreach_*`` ops (``_multi_tensor_dessilbi``, any device) and a CPU path on torch's
fused SGD kernel (``_fused_dessilbi``) side by side, chosen explicitly as in
``torch/optim/sgd.py``. :func:`dessilbi_param_groups` decides which tensors carry Γ;
:func:`filter_activity` reads the share of each structured tensor's groups in Γ's support, the
signal the grower acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from .errors import UsageError

__all__ = ["DessiLBI", "dessilbi", "dessilbi_param_groups", "filter_activity", "STRUCTURES", "LINEAR_MODES"]

#: Values of a param group's ``"structure"`` key that give its tensors a Γ (``None``: plain SGD).
STRUCTURES = ("filter", "lasso")
#: Values of :func:`dessilbi_param_groups`'s ``linear`` argument.
LINEAR_MODES = ("none", "lasso", "filter")

Structure = Literal["filter", "lasso"]

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
}

# torch's fused SGD kernel (what ``torch.optim.SGD(fused=True)`` runs) is private: it is the
# only torch kernel that updates a parameter and its momentum buffer in one pass over memory,
# which is what the ``fused`` route is for; the public ``torch._foreach_*`` route computes the
# same (tests/test_optim.py checks both against the reference loop). Feature-detected, so an
# older torch takes the foreach route by default and refuses ``fused=True``. CPU only: there
# it is tested and measured.
_HAS_FUSED_SGD = hasattr(torch, "_fused_sgd_")
_FUSED_DEVICES = ("cpu",)
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The fused route updates structured tensors in blocks of whole filters of about this many
# elements, so that W, V, g, the momentum buffer and the coupling W − Γ of one block (5 x 256
# KiB in float32) stay in a core's 2 MiB L2 cache across the block's four passes: on the
# development CPU a block's passes then cost 2-3x less than passes over whole tensors, which
# live in L3 (benchmarks/optimizer_step.py).
_BLOCK_NUMEL = 65536


class _FilterState(MutableMapping[str, Any]):
    """The state of one ``"filter"``-structured parameter, a mapping like any optimizer state
    with the documented entries ``"V"``, ``"gamma"`` and ``"momentum_buffer"``.

    Γ is not stored: after a step it is a per-filter scale of V, ``Γ_g = scale[g]·V_g`` with
    ``scale = κ·max(0, 1 − λ/‖V_g‖)``, kept as one value per filter (``.scale``). Reading
    ``"gamma"`` computes it (a new tensor each time; writing into it changes nothing).
    Assigning ``"gamma"`` (as checkpoint loading and growth's carry-over do) stores that tensor
    as Γ; the next step starts from it and then returns to the scale.
    """

    def __init__(self, entries: dict[str, Any], scale: Tensor | None = None) -> None:
        self.entries = entries  # "V", "momentum_buffer", a stored "gamma", anything else
        self.scale = scale  # shape (p.shape[0],); None until the optimizer has read this state

    def _gamma_is_virtual(self) -> bool:
        return "gamma" not in self.entries and self.scale is not None and "V" in self.entries

    def __getitem__(self, key: str) -> Any:
        if key == "gamma" and self._gamma_is_virtual():
            v = self.entries["V"]
            return v * self.scale.view(_column(v))  # type: ignore[union-attr]
        return self.entries[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.entries[key] = value

    def __delitem__(self, key: str) -> None:
        if key == "gamma" and self._gamma_is_virtual():
            self.scale = None
        else:
            del self.entries[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.entries
        if self._gamma_is_virtual():
            yield "gamma"

    def __len__(self) -> int:
        return len(self.entries) + self._gamma_is_virtual()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


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
        structure = self._structure_of(p)
        if structure == "filter":
            return self._filter_state(p, self.param_groups[self._group_index(p)])
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
            return state.scale.ne(0)  # type: ignore[union-attr]  # Γ_g = scale[g]·V_g, scale[g] > 0 iff ‖V_g‖ > λ
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
        if not isinstance(state, _FilterState):
            state = self.state[p] = _FilterState(dict(state))
        entries = state.entries
        for key, value in entries.items():  # the fused kernel reads raw memory: one layout
            if isinstance(value, Tensor) and value.shape == p.shape and value.stride() != p.stride():
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
    ) -> None:
        structure = group["structure"]
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise UsageError(
                    "DessiLBI does not support sparse gradients; use dense modules "
                    "(e.g. nn.Embedding(..., sparse=False))"
                )
            params.append(p)
            grads.append(p.grad)
            if structure == "filter":
                state = self._filter_state(p, group)
                gammas.append(state.entries.get("gamma"))
                scales.append(state.scale)  # type: ignore[arg-type]
            else:
                state = self.init_state(p)
                if structure == "lasso":
                    gammas.append(state["gamma"])
            if structure is not None:
                vs.append(state["V"])
            if group["momentum"] != 0:
                momentum_buffers.append(state.get("momentum_buffer"))

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
            self._init_group(group, params, grads, momentum_buffers, vs, gammas, scales)
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
            )
            for i, p in enumerate(params):
                state = self.state[p]
                if group["momentum"] != 0:
                    state["momentum_buffer"] = momentum_buffers[i]
                if isinstance(state, _FilterState):
                    state.entries.pop("gamma", None)  # Γ is scale·V again
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
        fused (bool, optional): True: the path on torch's fused SGD kernel, CPU tensors of a
            floating dtype only, structured tensors updated in cache-sized blocks of filters
            (the fewest passes over memory); must not be set with ``foreach=True``. With both
            None, each param group takes ``fused`` when all its tensors are dense CPU tensors
            of one layout that the kernel takes, else ``foreach`` when all are plain dense
            tensors, else the reference loop (default: None)

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
    if h["foreach"] and h["fused"]:
        raise ValueError("Invalid foreach: True with fused=True (choose one of them)")


# -- functional core ---------------------------------------------------------------------------


def dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor | None],
    gamma_scales: list[Tensor],
    *,
    structure: Structure | None,
    lr: float,
    kappa: float,
    mu: float,
    lam: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional DessiLBI: update ``params`` and the state lists in place; see
    :class:`DessiLBI` for the math and the ``foreach``/``fused`` choice.

    ``momentum_buffer_list`` has one entry per param when momentum != 0 (``None`` where the
    buffer does not exist yet; it is created and written back into the list), else is empty.
    ``vs`` and ``gammas`` have one entry per param when ``structure`` is set, else are empty.
    ``"lasso"``: ``gammas[i]`` is Γ, updated in place. ``"filter"``: ``gamma_scales[i]``
    (shape ``(p.shape[0],)``) holds the per-filter factors of Γ = scale·V and is overwritten
    with those of the new Γ; ``gammas[i]`` is ``None`` (Γ_{t-1} = scale·V_{t-1}) or a tensor
    to use as Γ_{t-1} instead, left unmodified. ``gamma_scales`` is empty otherwise.
    """
    if foreach is None and fused is None:
        fused = _fusable(params, grads, momentum_buffer_list, vs, gammas)
        foreach = not fused and _plain(params)
    elif fused and not _fusable(params, grads, momentum_buffer_list, vs, gammas):
        raise UsageError(
            "DessiLBI(fused=True) needs dense CPU tensors of a floating dtype, each state tensor and "
            "gradient laid out like its parameter; use foreach=True"
        )
    if not (fused or foreach):
        func = _single_tensor_dessilbi
    else:
        func = _fused_dessilbi if fused else _multi_tensor_dessilbi
    hyper = dict(structure=structure, lr=lr, kappa=kappa, mu=mu, lam=lam, momentum=momentum, dampening=dampening,
                 nesterov=nesterov, weight_decay=weight_decay)
    if func is _single_tensor_dessilbi:
        func(params, grads, momentum_buffer_list, vs, gammas, gamma_scales, **hyper)
        return
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):  # one device and dtype per multi-tensor call
        buckets.setdefault((p.device, p.dtype), []).append(i)
    for idx in buckets.values():
        def sub(xs: list) -> list:
            return [xs[i] for i in idx] if xs else xs

        bufs = sub(momentum_buffer_list)
        func(sub(params), sub(grads), bufs, sub(vs), sub(gammas), sub(gamma_scales), **hyper)
        for k, i in enumerate(idx if bufs else ()):
            momentum_buffer_list[i] = bufs[k]


def _plain(params: list[Tensor]) -> bool:
    """Whether the multi-tensor path takes ``params`` (plain dense real tensors)."""
    return not torch.jit.is_scripting() and all(
        type(p) in (Tensor, nn.Parameter) and p.layout == torch.strided and not p.is_complex() for p in params
    )


def _fusable(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor | None],
) -> bool:
    """Whether torch's fused SGD kernel takes these tensors. It walks raw memory, so each
    parameter must be dense (contiguous or channels-last) and its gradient and state laid out
    the same way: a mix of layouts gives wrong results, not an error."""
    if not (_HAS_FUSED_SGD and _plain(params)):
        return False
    for i, p in enumerate(params):
        if p.device.type not in _FUSED_DEVICES or p.dtype not in _FUSED_DTYPES:
            return False
        if not (p.is_contiguous() or (p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last))):
            return False
        others = [grads[i]] + [xs[i] for xs in (momentum_buffer_list, vs, gammas) if xs]
        if any(t is not None and (t.stride() != p.stride() or t.dtype != p.dtype) for t in others):
            return False
    return True


def _single_tensor_dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor | None],
    gamma_scales: list[Tensor],
    *,
    structure: Structure | None,
    lr: float,
    kappa: float,
    mu: float,
    lam: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    for i, param in enumerate(params):
        d = grads[i]
        if weight_decay != 0:
            d = d.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = momentum_buffer_list[i]
            if buf is None:
                buf = torch.clone(d).detach()
                momentum_buffer_list[i] = buf
            else:
                buf.mul_(momentum).add_(d, alpha=1 - dampening)
            d = d.add(buf, alpha=momentum) if nesterov else buf

        if structure is None:
            param.add_(d, alpha=-kappa * lr)
            continue
        v, gamma = vs[i], gammas[i]
        if gamma is None:  # "filter": Γ_{t-1} = scale·V_{t-1}, one factor per filter
            gamma = v * gamma_scales[i].view(_column(v))
        coupling = param - gamma  # W - Γ, before this step
        param.add_(d + coupling / mu, alpha=-kappa * lr)  # W ← W − κα(d + (W − Γ)/μ)
        v.add_(coupling, alpha=lr / mu)  # V ← V + (α/μ)(W − Γ)
        if structure == "filter":  # Γ ← κ prox(V) = κ·max(0, 1 − λ/‖V_g‖)·V_g: keep the factors
            gamma_scales[i].copy_(_filter_scale(_group_norms(v), lam=lam, kappa=kappa))
        else:
            gamma.copy_(_lasso_prox(v, lam=lam, kappa=kappa))  # Γ ← κ sign(V) max(|V| − λ, 0)


def _lasso_prox(v: Tensor, *, lam: float, kappa: float) -> Tensor:
    """κ·sign(V)·max(|V| − λ, 0), a new tensor shaped like ``v``."""
    out = F.softshrink(v, lam) if lam > 0 else v.clone()
    return out.mul_(kappa) if kappa != 1 else out


def _group_norms(v: Tensor) -> Tensor:
    """||V_g||₂ of each slice ``v[g]`` along dim 0, shape ``(n,)``."""
    if v.is_contiguous():  # one reduction over a 2-d view is the faster kernel
        return torch.linalg.vector_norm(v.view(v.shape[0], -1), dim=1)
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())))


def _filter_scale(norms: Tensor, *, lam: float, kappa: float) -> Tensor:
    """κ·max(0, 1 − λ/||V_g||): exactly 0 where ||V_g|| <= λ, including ||V_g|| = 0 (no NaN)."""
    scale = torch.where(norms > lam, norms.reciprocal().mul_(-lam).add_(1), 0.0)
    return scale.mul_(kappa) if kappa != 1 else scale


def _column(v: Tensor) -> tuple[int, ...]:
    """Shape ``(n, 1, ..., 1)``: one value per slice along dim 0, broadcasting against ``v``."""
    return (-1,) + (1,) * (v.dim() - 1)


def _couplings(params: list[Tensor], vs: list[Tensor], gammas: list[Tensor | None], scales: list[Tensor]) -> list[Tensor]:
    """D = W − Γ_{t-1} for each tensor (new tensors); Γ from ``gammas[i]``, else scale·V."""
    return [
        torch.addcmul(w, v, s.view(_column(v)), value=-1) if g is None else torch.sub(w, g)
        for w, v, g, s in zip(params, vs, gammas, scales or [None] * len(params))  # type: ignore[list-item]
    ]


def _prox_(
    vs: list[Tensor],
    gammas: list[Tensor | None],
    scales: list[Tensor],
    norms: list[Tensor] | None = None,
    *,
    structure: Structure,
    lam: float,
    kappa: float,
) -> None:
    """Γ ← κ·prox_λ(V): the factors into ``scales`` ("filter"; ``norms`` are ‖V_g‖ if already
    known), or Γ into ``gammas`` ("lasso")."""
    if structure == "lasso":
        for v, gamma in zip(vs, gammas):
            gamma.copy_(_lasso_prox(v, lam=lam, kappa=kappa))  # type: ignore[union-attr]
        return
    # One scale computation for every filter of every tensor (few small kernels, not per tensor).
    all_norms = torch.cat(norms if norms is not None else [_group_norms(v) for v in vs])
    for scale, new in zip(scales, _filter_scale(all_norms, lam=lam, kappa=kappa).split([s.numel() for s in scales])):
        scale.copy_(new)


def _multi_tensor_dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor | None],
    gamma_scales: list[Tensor],
    *,
    structure: Structure | None,
    lr: float,
    kappa: float,
    mu: float,
    lam: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    # The reference loop's equations with torch._foreach_* ops, for tensors of one device and
    # dtype: D = W − Γ once, then V += (α/μ)D, the momentum-SGD step, W −= (κα/μ)D, Γ ← κ prox(V).
    if not params:
        return
    idx = list(range(len(params)))
    couplings = _couplings(params, vs, gammas, gamma_scales) if structure is not None else []
    if couplings:
        torch._foreach_add_(vs, couplings, alpha=lr / mu)
    d = _foreach_direction(params, grads, momentum_buffer_list, idx, momentum=momentum, dampening=dampening,
                           nesterov=nesterov, weight_decay=weight_decay)  # reads W_{t-1}
    torch._foreach_add_(params, d, alpha=-kappa * lr)
    if structure is not None:
        torch._foreach_add_(params, couplings, alpha=-kappa * lr / mu)
        _prox_(vs, gammas, gamma_scales, structure=structure, lam=lam, kappa=kappa)


def _fused_dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor | None],
    gamma_scales: list[Tensor],
    *,
    structure: Structure | None,
    lr: float,
    kappa: float,
    mu: float,
    lam: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    # The reference loop's equations on CPU tensors of one dtype. The momentum-SGD step is one
    # pass of torch's fused SGD kernel (reads W, g, b; writes W, b). A structured tensor is
    # updated block by block (whole filters, about _BLOCK_NUMEL elements; small tensors share
    # a block), each block's passes done before the next block's: D = W − Γ (Γ = scale·V),
    # V += (α/μ)D, the fused step (its weight decay reads W_{t-1}), W −= (κα/μ)D, ‖V_g‖, so
    # that only the first touch of each array reaches beyond the core's cache.
    if not params:
        return
    step = dict(lr=kappa * lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
    first = [False] * len(params)
    if momentum != 0:
        for i, buf in enumerate(momentum_buffer_list):
            if buf is None:  # set to the (decayed) gradient by the kernel's first-step branch
                momentum_buffer_list[i] = torch.empty_like(params[i])
                first[i] = True
    bufs: list[Tensor] = momentum_buffer_list  # type: ignore[assignment]
    if structure is None:
        _fused_momentum_step_(params, grads, bufs, first, **step)
        return
    norms: list[list[Tensor]] = [[] for _ in params]
    for wave in _blocks(params):
        def cut(xs: list) -> list:
            return [xs[i][rows] for i, rows in wave] if xs else xs

        w, v = cut(params), cut(vs)
        couplings = _couplings(w, v, [None if gammas[i] is None else gammas[i][rows] for i, rows in wave],  # type: ignore[index]
                               cut(gamma_scales))
        torch._foreach_add_(v, couplings, alpha=lr / mu)
        _fused_momentum_step_(w, cut(grads), cut(bufs), [first[i] for i, _ in wave], **step)
        torch._foreach_add_(w, couplings, alpha=-kappa * lr / mu)
        if structure == "filter":
            for (i, _), block in zip(wave, v):
                norms[i].append(_group_norms(block))
    per_tensor = [torch.cat(n) if n else v.new_zeros(0) for n, v in zip(norms, vs)]
    _prox_(vs, gammas, gamma_scales, per_tensor if structure == "filter" else None, structure=structure, lam=lam,
           kappa=kappa)


def _blocks(params: list[Tensor], numel: int | None = None) -> list[list[tuple[int, slice]]]:
    """``params`` cut along dim 0 into blocks of whole slices of at most ``numel`` elements
    (default: ``_BLOCK_NUMEL``), in order, grouped into waves of at most ``numel`` elements (a
    slice larger than ``numel`` is a wave of its own): ``[[(tensor index, rows), ...], ...]``."""
    numel = _BLOCK_NUMEL if numel is None else numel
    waves: list[list[tuple[int, slice]]] = []
    wave: list[tuple[int, slice]] = []
    size = 0
    for i, p in enumerate(params):
        if p.numel() == 0:
            continue
        row = p.numel() // p.shape[0]
        rows = max(1, numel // row)
        for start in range(0, p.shape[0], rows):
            stop = min(p.shape[0], start + rows)
            n = (stop - start) * row
            if wave and size + n > numel:
                waves.append(wave)
                wave, size = [], 0
            wave.append((i, slice(start, stop)))
            size += n
    if wave:
        waves.append(wave)
    return waves


def _fused_momentum_step_(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    first: list[bool],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    """W ← W − lr·d with torch.optim.SGD's weight decay and momentum, one fused pass; ``bufs``
    (empty when momentum == 0) are set to the first (decayed) gradient where ``first``."""
    kw: dict[str, Any] = dict(
        weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=dampening, nesterov=nesterov, maximize=False
    )
    if momentum == 0:
        torch._fused_sgd_(params, grads, [], is_first_step=False, **kw)  # type: ignore[attr-defined]
        return
    for flag in (False, True):
        sel = [k for k, f in enumerate(first) if f == flag]
        if sel:
            torch._fused_sgd_(  # type: ignore[attr-defined]
                [params[k] for k in sel], [grads[k] for k in sel], [bufs[k] for k in sel], is_first_step=flag, **kw
            )


def _foreach_direction(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    idx: list[int],
    *,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> list[Tensor]:
    """d of torch.optim.SGD (weight decay, then momentum) with foreach ops; creates and
    updates the buffers in ``momentum_buffer_list`` (indexed by ``idx``). Never modifies grads."""
    d = grads
    if weight_decay != 0:
        d = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum == 0:
        return d
    bufs: list[Tensor] = []
    if all(momentum_buffer_list[i] is not None for i in idx):
        bufs = [momentum_buffer_list[i] for i in idx]  # type: ignore[misc]
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, d, alpha=1 - dampening)
    else:
        for k, i in enumerate(idx):
            buf = momentum_buffer_list[i]
            if buf is None:
                buf = torch.clone(d[k]).detach()
                momentum_buffer_list[i] = buf
            else:
                buf.mul_(momentum).add_(d[k], alpha=1 - dampening)
            bufs.append(buf)
    if not nesterov:
        return bufs
    if d is grads:
        return torch._foreach_add(grads, bufs, alpha=momentum)
    torch._foreach_add_(d, bufs, alpha=momentum)
    return d


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

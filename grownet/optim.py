r"""DessiLBI: momentum SGD coupled with a sparse structure parameter Γ (METHOD.md §1).

:class:`DessiLBI` is a :class:`torch.optim.Optimizer`; :func:`dessilbi` is its functional core,
with a readable per-tensor reference (``_single_tensor_dessilbi``) and a multi-tensor fast path
(``_multi_tensor_dessilbi``) side by side. :func:`dessilbi_param_groups` decides which tensors
carry Γ; :func:`filter_activity` reads the share of each structured tensor's groups in Γ's
support, the signal the grower acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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
}

# torch's fused SGD kernel (what ``torch.optim.SGD(fused=True)`` runs): one pass over memory
# for the momentum step, and, with other arguments, for the V/Γ bookkeeping (see
# ``_multi_tensor_dessilbi``). Feature-detected so an older torch takes the foreach route.
# Used on CPU only, where it is tested and measured; elsewhere the torch._foreach_* route runs.
_HAS_FUSED_SGD = hasattr(torch, "_fused_sgd_")
_FUSED_DEVICES = ("cpu",)
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The kernel splits every tensor, however small, across all intra-op threads (ATen's foreach
# ops keep a tensor below this grain size on one thread). With several threads, smaller
# tensors take the foreach route: a parallel region per small tensor costs more than the
# passes over memory it saves, and far more when another process holds a core.
_FUSED_MIN_NUMEL = 32768


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

    def init_state(self, p: Tensor) -> dict[str, Tensor]:
        """``p``'s state, with V and Γ created (zeros shaped like ``p``) if ``p`` is structured
        and they do not exist yet. The momentum buffer is created by the first step (it starts
        as the first gradient, as in :class:`torch.optim.SGD`).

        V and Γ are laid out like ``p`` (e.g. channels-last), as the fused route needs; growth
        code calls this for parameters that are new after a growth.
        """
        structure = self._structure_of(p)
        state = self.state[p]
        if structure is not None and "V" not in state:
            state["V"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["gamma"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def gamma(self, p: Tensor) -> Tensor:
        """Γ of structured parameter ``p``: the live state tensor, shaped like ``p`` (zeros
        before the first step)."""
        if self._structure_of(p) is None:
            raise UsageError(
                f"parameter of shape {tuple(p.shape)} has no Γ: its param group has no 'structure'; "
                "put it in a group with structure 'filter' or 'lasso'"
            )
        return self.init_state(p)["gamma"]

    def support(self, p: Tensor) -> Tensor:
        """Bool tensor, one entry per group of ``p``: ``Γ_g != 0``. Shape ``(p.shape[0],)`` for
        ``"filter"`` (one group per output filter), ``p.shape`` for ``"lasso"``."""
        gamma = self.gamma(p)
        if self._structure_of(p) == "filter":
            return torch.flatten(gamma, 1).ne(0).any(dim=1)
        return gamma.ne(0)

    def _structure_of(self, p: Tensor) -> Structure | None:
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                return group["structure"]
        raise UsageError(
            f"tensor of shape {tuple(p.shape)} is not a parameter of this optimizer; "
            "pass one of the tensors given to DessiLBI"
        )

    # -- step ------------------------------------------------------------------------------

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        momentum_buffers: list[Tensor | None],
        vs: list[Tensor],
        gammas: list[Tensor],
    ) -> None:
        structured = group["structure"] is not None
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
            state = self.state[p]
            if group["momentum"] != 0:
                momentum_buffers.append(state.get("momentum_buffer"))
            if structured:
                if "V" not in state:
                    self.init_state(p)
                vs.append(state["V"])
                gammas.append(state["gamma"])

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
            gammas: list[Tensor] = []
            self._init_group(group, params, grads, momentum_buffers, vs, gammas)
            dessilbi(
                params,
                grads,
                momentum_buffers,
                vs,
                gammas,
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
            )
            if group["momentum"] != 0:
                for p, buf in zip(params, momentum_buffers):
                    self.state[p]["momentum_buffer"] = buf
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
        foreach (bool, optional): True: the multi-tensor path (on CPU torch's fused SGD
            kernel, elsewhere ``torch._foreach_*`` ops; a few passes over memory per step);
            False: the per-tensor reference loop; None: the multi-tensor path whenever every
            tensor is a plain dense tensor (on CPU it measured 1.3-2x faster than the
            reference loop, benchmarks/optimizer_step.py) (default: None)

    State, per parameter ``p`` (``optimizer.state[p]``; growth code copies these):
        ``"V"``: :math:`V`, shaped like ``p`` (structured parameters only).
        ``"gamma"``: :math:`\Gamma`, shaped like ``p`` (structured parameters only).
        ``"momentum_buffer"``: :math:`b`, shaped like ``p``; only when momentum != 0, created
        by the first step that sees a gradient for ``p``.

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
        (its V and Γ do not move). The multi-tensor path computes the same equations in
        another order, so it matches the reference loop to rounding, not bit for bit.
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
    if h["foreach"] not in (None, True, False):
        raise ValueError(f"Invalid foreach: {h['foreach']!r} (must be True, False or None)")


# -- functional core ---------------------------------------------------------------------------


def dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor],
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
) -> None:
    """Functional DessiLBI: update ``params`` (and ``momentum_buffer_list``, ``vs``, ``gammas``)
    in place; see :class:`DessiLBI` for the math.

    ``momentum_buffer_list`` has one entry per param when momentum != 0 (``None`` where the
    buffer does not exist yet; it is created and written back into the list), else is empty.
    ``vs`` and ``gammas`` have one entry per param when ``structure`` is set, else are empty.
    """
    if foreach is None:
        foreach = _default_foreach(params)
    func = _multi_tensor_dessilbi if foreach else _single_tensor_dessilbi
    func(
        params,
        grads,
        momentum_buffer_list,
        vs,
        gammas,
        structure=structure,
        lr=lr,
        kappa=kappa,
        mu=mu,
        lam=lam,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
    )


def _default_foreach(params: list[Tensor]) -> bool:
    # Measured on CPU (benchmarks/optimizer_step.py, and a ResNet-20 at CIFAR widths): the
    # multi-tensor path beats the reference loop; on CUDA foreach kernels are torch's default.
    return not torch.jit.is_scripting() and all(
        type(p) in (Tensor, nn.Parameter) and p.layout == torch.strided and not p.is_complex() for p in params
    )


def _single_tensor_dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor],
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
        coupling = param - gamma  # W - Γ, before this step
        param.add_(d + coupling / mu, alpha=-kappa * lr)  # W ← W − κα(d + (W − Γ)/μ)
        v.add_(coupling, alpha=lr / mu)  # V ← V + (α/μ)(W − Γ)
        gamma.copy_(_prox(v, structure=structure, lam=lam, kappa=kappa))  # Γ ← κ prox(V)


def _prox(v: Tensor, *, structure: Structure, lam: float, kappa: float) -> Tensor:
    """κ·prox_λ(V), a new tensor shaped like ``v``."""
    if structure == "lasso":
        out = torch.sign(v) * torch.clamp(v.abs() - lam, min=0)
        return out * kappa if kappa != 1 else out
    scale = _group_scale(_group_norms(v), lam=lam)
    if kappa != 1:
        scale = scale * kappa
    return v * scale.view(_column(v))


def _group_norms(v: Tensor) -> Tensor:
    """||V_g||₂ of each slice ``v[g]`` along dim 0, shape ``(n,)``."""
    if v.is_contiguous():  # one reduction over a 2-d view is the faster kernel
        return torch.linalg.vector_norm(v.view(v.shape[0], -1), dim=1)
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())))


def _group_scale(norms: Tensor, *, lam: float) -> Tensor:
    """max(0, 1 − λ/||V_g||): exactly 0 where ||V_g|| <= λ, including ||V_g|| = 0 (no NaN)."""
    return torch.where(norms > lam, norms.reciprocal().mul_(-lam).add_(1), 0.0)


def _column(v: Tensor) -> tuple[int, ...]:
    """Shape ``(n, 1, ..., 1)``: one value per slice along dim 0, broadcasting against ``v``."""
    return (-1,) + (1,) * (v.dim() - 1)


def _multi_tensor_dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor],
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
    # The reference loop's equations, reordered to touch memory as few times as possible: with
    # D = W_old − Γ_old held in Γ's buffer, on the fused route a structured tensor costs
    #   weight_decay == 0:  [Γ ← D; W ← W − (κα/μ)·D] one pass;  V ← V + (α/μ)·D;
    #                       the momentum-SGD step W ← W − κα·d, one pass (torch's SGD kernel);
    #   weight_decay != 0:  [Γ ← D; V ← V + (α/μ)·D] one pass;  the momentum-SGD step (its
    #                       decay term needs W_old);  W ← W − (κα/μ)·D;
    # then per-filter norms of V and Γ ← κ·scale·V (_multi_tensor_prox_).
    if not params:
        return
    structured = structure is not None
    hyper = dict(lr=lr, kappa=kappa, mu=mu, momentum=momentum, dampening=dampening, nesterov=nesterov,
                 weight_decay=weight_decay)
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        buckets.setdefault((p.device, p.dtype), []).append(i)
    min_numel = _FUSED_MIN_NUMEL if torch.get_num_threads() > 1 else 0

    for idx in buckets.values():
        fused, rest = [], []
        for i in idx:
            ok = params[i].numel() >= min_numel and _fusable(
                params[i], grads[i], momentum_buffer_list[i] if momentum != 0 else None
            )
            if ok and structured:
                ok = _fusable(params[i], vs[i], gammas[i])
            (fused if ok else rest).append(i)
        for route, sel in ((_fused_update_, fused), (_foreach_update_, rest)):
            if sel:
                route(
                    [params[i] for i in sel],
                    [grads[i] for i in sel],
                    momentum_buffer_list,
                    sel,
                    [vs[i] for i in sel] if structured else None,
                    [gammas[i] for i in sel] if structured else None,
                    **hyper,
                )
        if structured:
            _multi_tensor_prox_([vs[i] for i in idx], [gammas[i] for i in idx], structure=structure, lam=lam,
                                kappa=kappa)


def _fused_update_(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    idx: list[int],
    vs: list[Tensor] | None,
    gammas: list[Tensor] | None,
    *,
    lr: float,
    kappa: float,
    mu: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    """W, V and Γ ← W_old − Γ_old (``vs``/``gammas`` None: plain SGD) with torch's fused kernel."""
    step = dict(lr=kappa * lr, momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay)
    if vs is None or gammas is None:
        _fused_momentum_step_(params, grads, momentum_buffer_list, idx, **step)
    elif weight_decay == 0:
        _fused_sub_and_axpy_(params, params, gammas, alpha=-kappa * lr / mu)  # Γ ← D; W ← W − (κα/μ)·D
        torch._foreach_add_(vs, gammas, alpha=lr / mu)
        _fused_momentum_step_(params, grads, momentum_buffer_list, idx, **step)
    else:
        _fused_sub_and_axpy_(vs, params, gammas, alpha=lr / mu)  # Γ ← D; V ← V + (α/μ)·D
        _fused_momentum_step_(params, grads, momentum_buffer_list, idx, **step)
        torch._foreach_add_(params, gammas, alpha=-kappa * lr / mu)


def _foreach_update_(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    idx: list[int],
    vs: list[Tensor] | None,
    gammas: list[Tensor] | None,
    *,
    lr: float,
    kappa: float,
    mu: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    """The same as :func:`_fused_update_` with ``torch._foreach_*`` ops (any device, layout)."""
    if vs is not None and gammas is not None:
        torch._foreach_sub_(gammas, params)  # Γ ← Γ − W = −D
        torch._foreach_add_(vs, gammas, alpha=-lr / mu)
    d = _foreach_direction(
        params,
        grads,
        momentum_buffer_list,
        idx,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=weight_decay,
    )
    torch._foreach_add_(params, d, alpha=-kappa * lr)
    if gammas is not None:
        torch._foreach_add_(params, gammas, alpha=kappa * lr / mu)


def _fusable(a: Tensor, b: Tensor, c: Tensor | None) -> bool:
    """Whether torch's fused SGD kernel can take ``a``, ``b``, ``c`` (``c`` may be absent). It
    walks raw memory, so all must share one dense layout: a mix of layouts gives wrong results,
    not an error."""
    if not _HAS_FUSED_SGD or a.device.type not in _FUSED_DEVICES or a.dtype not in _FUSED_DTYPES:
        return False
    if a.is_contiguous() and b.is_contiguous() and (c is None or c.is_contiguous()):
        return True
    cl = torch.channels_last
    return (
        a.dim() == 4
        and a.is_contiguous(memory_format=cl)
        and b.is_contiguous(memory_format=cl)
        and (c is None or c.is_contiguous(memory_format=cl))
    )


def _fused_sub_and_axpy_(ps: list[Tensor], qs: list[Tensor], bufs: list[Tensor], *, alpha: float) -> None:
    """``buf ← q − buf``, then ``p ← p + alpha·buf``, in one pass over memory; ``p`` may be ``q``.

    torch's fused SGD kernel computes, element by element (all reads before the writes),
    ``buf ← m·buf + grad; p ← p − lr·buf``; this is that kernel with (p, grad, buf) = (p, q,
    buf), m = −1 and lr = −alpha.
    """
    torch._fused_sgd_(  # type: ignore[attr-defined]
        ps,
        qs,
        bufs,
        weight_decay=0.0,
        momentum=-1.0,
        lr=-alpha,
        dampening=0.0,
        nesterov=False,
        maximize=False,
        is_first_step=False,
    )


def _fused_momentum_step_(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    idx: list[int],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    """W ← W − lr·d with torch.optim.SGD's momentum (one fused pass); creates missing buffers
    in ``momentum_buffer_list`` (indexed by ``idx``)."""
    kw: dict[str, Any] = dict(
        weight_decay=weight_decay,
        momentum=momentum,
        lr=lr,
        dampening=dampening,
        nesterov=nesterov,
        maximize=False,
    )
    if momentum == 0:
        torch._fused_sgd_(params, grads, [], is_first_step=False, **kw)  # type: ignore[attr-defined]
        return
    # A new buffer is set to the (decayed) gradient by the kernel's first-step branch.
    for first in (False, True):
        sel = [k for k, i in enumerate(idx) if (momentum_buffer_list[i] is None) == first]
        if not sel:
            continue
        if first:
            for k in sel:
                momentum_buffer_list[idx[k]] = torch.empty_like(params[k])
        bufs = [momentum_buffer_list[idx[k]] for k in sel]
        torch._fused_sgd_(  # type: ignore[attr-defined]
            [params[k] for k in sel], [grads[k] for k in sel], bufs, is_first_step=first, **kw
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


def _multi_tensor_prox_(
    vs: list[Tensor], gammas: list[Tensor], *, structure: Structure, lam: float, kappa: float
) -> None:
    """Γ ← κ·prox_λ(V) for tensors of one device and dtype."""
    if structure == "lasso":
        for v, gamma in zip(vs, gammas):
            gamma.copy_(F.softshrink(v, lam))
        if kappa != 1:
            torch._foreach_mul_(gammas, kappa)
        return
    # One scale computation for every filter of every tensor (few small kernels, not per tensor).
    scale = _group_scale(torch.cat([_group_norms(v) for v in vs]), lam=lam)
    if kappa != 1:
        scale.mul_(kappa)
    for v, gamma, s in zip(vs, gammas, scale.split([v.shape[0] for v in vs])):
        torch.mul(v, s.view(_column(v)), out=gamma)


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

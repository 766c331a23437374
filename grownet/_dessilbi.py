r"""DessiLBI's functional core (METHOD.md §1; the class and the math are in :mod:`grownet.optim`).

:func:`dessilbi` updates lists of tensors in place by one of three paths, chosen as in
``torch/optim/sgd.py``: ``_single_tensor_dessilbi``, the readable per-tensor reference that the
others are tested against; ``_multi_tensor_dessilbi`` on ``torch._foreach_*`` ops (any device);
``_fused_dessilbi`` on torch's fused SGD kernel (CPU and CUDA).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UsageError

Structure = Literal["filter", "lasso"]

logger = logging.getLogger(__name__)

# torch's fused SGD kernel (what ``torch.optim.SGD(fused=True)`` runs) is private: it is the
# only torch kernel that writes two tensors in one pass over memory (a parameter and its
# momentum buffer), which is what the ``fused`` route is for: the momentum step, and without
# weight decay the coupling of W and V too (_fused_coupling_); the public ``torch._foreach_*``
# route computes the same (tests/test_optim.py checks both against the reference loop). Feature-detected, so an
# older torch takes the foreach route by default and refuses ``fused=True``. On the devices
# torch.optim.SGD(fused=True) runs on, the CPU and CUDA; the default on the CPU only: on lent
# H200s the fused path measured no faster than the foreach path, a GPU step of these nets
# being the host's time to launch kernels (the per-tensor ones for Γ's factors and norms are
# on both paths): 3.08x against 3.01x SGD's step (benchmarks/optimizer_step.py --device cuda),
# and 100 steps back to back 1156 µs against 971 µs for the benchmark's grown net, 634 against
# 625 µs for its VGG (reports/device-runs/fused_vs_foreach_cuda.py, alternating, 2026-11-26).
_HAS_FUSED_SGD = hasattr(torch, "_fused_sgd_")
_FUSED_DEVICES = ("cpu", "cuda")
_DEFAULT_FUSED_DEVICES = ("cpu",)
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class _Step:
    """The hyperparameters of one step of one param group, as the paths read them (the math
    stays a function of its arguments: no path reads a param group)."""

    structure: Structure | None
    lr: float
    kappa: float
    mu: float
    lam: float
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float

    @property
    def w_rate(self) -> float:
        """a = κα/μ: W's step along the coupling D = W − Γ (W ← W − a·D)."""
        return self.kappa * self.lr / self.mu

    @property
    def v_rate(self) -> float:
        """c = α/μ: V's step along D (V ← V + c·D)."""
        return self.lr / self.mu


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
    compiled: bool = False,
) -> None:
    """Functional DessiLBI: update ``params`` and the state lists in place; see
    :class:`DessiLBI` for the math and the ``foreach``/``fused``/``compiled`` choice.

    ``momentum_buffer_list`` has one entry per param when momentum != 0 (``None`` where the
    buffer does not exist yet; it is created and written back into the list), else is empty.
    ``vs`` and ``gammas`` have one entry per param when ``structure`` is set, else are empty.
    ``"lasso"``: ``gammas[i]`` is Γ, updated in place. ``"filter"``: ``gamma_scales[i]``
    (shape ``(p.shape[0],)``) holds the per-filter factors of Γ = scale·V and is overwritten
    with those of the new Γ; ``gammas[i]`` is ``None`` (Γ_{t-1} = scale·V_{t-1}) or a tensor
    to use as Γ_{t-1} instead, left unmodified. ``gamma_scales`` is empty otherwise.
    """
    if foreach is None and fused is None:  # the fused path by default on the CPU only (see _DEFAULT_FUSED_DEVICES)
        fused = _fusable(params, grads, momentum_buffer_list, vs, gammas, devices=_DEFAULT_FUSED_DEVICES)
        foreach = not fused and _plain(params)
    elif fused and not _fusable(params, grads, momentum_buffer_list, vs, gammas):
        raise UsageError(
            "DessiLBI(fused=True) needs dense CPU or CUDA tensors of a floating dtype, each state tensor "
            "and gradient laid out like its parameter; use foreach=True"
        )
    if not (fused or foreach):
        func = _single_tensor_dessilbi
    else:
        func = _fused_dessilbi if fused else _multi_tensor_dessilbi
    h = _Step(structure, lr, kappa, mu, lam, momentum, dampening, nesterov, weight_decay)
    if compiled and structure == "filter" and _plain(params):
        func = functools.partial(_compiled_dessilbi, eager=func)
    elif func is _single_tensor_dessilbi:
        func(params, grads, momentum_buffer_list, vs, gammas, gamma_scales, h)
        return
    if not params or all(p.dtype is params[0].dtype and p.device == params[0].device for p in params):
        func(params, grads, momentum_buffer_list, vs, gammas, gamma_scales, h)
        return
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):  # one device and dtype per multi-tensor call
        buckets.setdefault((p.device, p.dtype), []).append(i)
    for idx in buckets.values():
        def sub(xs: list) -> list:
            return [xs[i] for i in idx] if xs else xs

        bufs = sub(momentum_buffer_list)
        func(sub(params), sub(grads), bufs, sub(vs), sub(gammas), sub(gamma_scales), h)
        for k, i in enumerate(idx if bufs else ()):
            momentum_buffer_list[i] = bufs[k]


def _plain(params: list[Tensor]) -> bool:
    """Whether the multi-tensor path takes ``params`` (plain dense real tensors)."""
    return not torch.jit.is_scripting() and all(
        type(p) in _PLAIN_TYPES and p.layout is torch.strided and not p.is_complex() for p in params
    )


_PLAIN_TYPES = (Tensor, nn.Parameter)


def _fusable(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor | None],
    devices: tuple[str, ...] = _FUSED_DEVICES,
) -> bool:
    """Whether torch's fused SGD kernel takes these tensors, all on ``devices`` (device types).
    It walks raw memory, so each parameter must be dense (contiguous or channels-last) and its
    gradient and state laid out the same way: a mix of layouts gives wrong results, not an
    error (torch.optim.SGD(fused=True) itself has no such check: on torch 2.13's CPU kernel a
    transposed gradient of a 4x5 parameter moved it by up to 2.7 from the foreach result).
    Run every step: about 4% of the benchmark VGG's step, 12% of its grown net's (40 tensors;
    benchmarks/optimizer_step.py's docstring)."""
    if not (_HAS_FUSED_SGD and _plain(params)):
        return False
    for p in params:
        if not (p.device.type in devices and p.dtype in _FUSED_DTYPES and (
                p.is_contiguous() or (p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)))):
            return False
    strides = [p.stride() for p in params]
    dtypes = [p.dtype for p in params]
    for xs in (grads, momentum_buffer_list, vs, gammas):
        if xs and not all(t is None or (t.stride() == st and t.dtype is dt) for t, st, dt in zip(xs, strides, dtypes)):
            return False
    return True


def _single_tensor_dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor | None],
    gamma_scales: list[Tensor],
    h: _Step,
) -> None:
    for i, param in enumerate(params):
        d = grads[i]
        if h.weight_decay != 0:
            d = d.add(param, alpha=h.weight_decay)
        if h.momentum != 0:
            buf = momentum_buffer_list[i]
            if buf is None:
                buf = torch.clone(d).detach()
                momentum_buffer_list[i] = buf
            else:
                buf.mul_(h.momentum).add_(d, alpha=1 - h.dampening)
            d = d.add(buf, alpha=h.momentum) if h.nesterov else buf

        if h.structure is None:
            param.add_(d, alpha=-h.kappa * h.lr)
            continue
        v, gamma = vs[i], gammas[i]
        if gamma is None:  # "filter": Γ_{t-1} = scale·V_{t-1}, one factor per filter
            gamma = v * gamma_scales[i].view(_column(v))
        coupling = param - gamma  # W - Γ, before this step
        param.add_(d + coupling / h.mu, alpha=-h.kappa * h.lr)  # W ← W − κα(d + (W − Γ)/μ)
        v.add_(coupling, alpha=h.lr / h.mu)  # V ← V + (α/μ)(W − Γ)
        if h.structure == "filter":  # Γ ← κ prox(V) = κ·max(0, 1 − λ/‖V_g‖)·V_g: keep the factors
            gamma_scales[i].copy_(_filter_scale(_group_norms(v), lam=h.lam, kappa=h.kappa))
        else:
            gamma.copy_(_lasso_prox(v, lam=h.lam, kappa=h.kappa))  # Γ ← κ sign(V) max(|V| − λ, 0)


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
    """κ·max(0, 1 − λ/||V_g||): exactly 0 where ||V_g|| <= λ, including ||V_g|| = 0 (no NaN;
    a NaN norm, from a V that is NaN already, gives NaN)."""
    if lam > 0:  # 1 − λ/0 = −inf, clamped to 0
        scale = norms.reciprocal().mul_(-lam).add_(1).clamp_min_(0)
    else:  # λ = 0: 1 where ||V_g|| > 0 (0/0 would be NaN)
        scale = norms.gt(0).to(norms.dtype)
    return scale.mul_(kappa) if kappa != 1 else scale


def _column(v: Tensor) -> tuple[int, ...]:
    """Shape ``(n, 1, ..., 1)``: one value per slice along dim 0, broadcasting against ``v``."""
    return (-1,) + (1,) * (v.dim() - 1)


def _couplings(
    params: list[Tensor], vs: list[Tensor], gammas: list[Tensor | None], scales: list[Tensor]
) -> list[Tensor]:
    """D = W − Γ_{t-1} for each tensor (new tensors); Γ from ``gammas[i]``, else scale·V."""
    return [
        torch.addcmul(w, v, s.view(_column(v)), value=-1) if g is None else torch.sub(w, g)
        for w, v, g, s in zip(params, vs, gammas, scales or [None] * len(params))  # type: ignore[list-item]
    ]


def _prox_(
    vs: list[Tensor],
    gammas: list[Tensor | None],
    scales: list[Tensor],
    *,
    structure: Structure,
    lam: float,
    kappa: float,
) -> None:
    """Γ ← κ·prox_λ(V): the factors into ``scales`` ("filter"), or Γ into ``gammas`` ("lasso")."""
    if structure == "lasso":
        for v, gamma in zip(vs, gammas):
            gamma.copy_(_lasso_prox(v, lam=lam, kappa=kappa))  # type: ignore[union-attr]
        return
    # One scale computation for every filter of every tensor (few small kernels, not per tensor).
    all_norms = torch.cat([_group_norms(v) for v in vs])
    torch._foreach_copy_(scales, _filter_scale(all_norms, lam=lam, kappa=kappa).split([s.shape[0] for s in scales]))


def _multi_tensor_dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor | None],
    gamma_scales: list[Tensor],
    h: _Step,
) -> None:
    # The reference loop's equations with torch._foreach_* ops, for tensors of one device and dtype.
    def momentum_step() -> None:
        d = _foreach_direction(params, grads, momentum_buffer_list, list(range(len(params))), momentum=h.momentum,
                               dampening=h.dampening, nesterov=h.nesterov, weight_decay=h.weight_decay)
        torch._foreach_add_(params, d, alpha=-h.kappa * h.lr)

    _coupled_step_(params, vs, gammas, gamma_scales, h, momentum_step)


def _fused_dessilbi(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffer_list: list[Tensor | None],
    vs: list[Tensor],
    gammas: list[Tensor | None],
    gamma_scales: list[Tensor],
    h: _Step,
) -> None:
    # The reference loop's equations on tensors of one device and dtype, the momentum-SGD step
    # one pass of torch's fused SGD kernel (reads W, g, b; writes W, b).
    first = [False] * len(params)
    if h.momentum != 0:
        for i, buf in enumerate(momentum_buffer_list):
            if buf is None:  # set to the (decayed) gradient by the kernel's first-step branch
                momentum_buffer_list[i] = torch.empty_like(params[i])
                first[i] = True
    bufs: list[Tensor] = momentum_buffer_list  # type: ignore[assignment]
    step = dict(lr=h.kappa * h.lr, momentum=h.momentum, dampening=h.dampening, nesterov=h.nesterov,
                weight_decay=h.weight_decay)
    if (h.structure is not None and params and h.weight_decay == 0 and h.w_rate <= _FUSED_COUPLING_MAX
            and _fused_coupling_works(params[0].device)):
        # Without weight decay the momentum step does not read W_{t-1}, so the coupling may go
        # first, in one pass of its own: 13 passes over memory instead of 15 (no D written).
        _fused_coupling_(params, vs, gammas, gamma_scales, h)
        _fused_momentum_step_(params, grads, bufs, first, **step)
        _prox_(vs, gammas, gamma_scales, structure=h.structure, lam=h.lam, kappa=h.kappa)
        return
    _coupled_step_(params, vs, gammas, gamma_scales, h,
                   lambda: _fused_momentum_step_(params, grads, bufs, first, **step))


#: Largest a = κα/μ for which :func:`_fused_coupling_` runs (it divides by (1 − a)²; the
#: reference values give a = 5e-4). Above it the fused path writes D as the others do.
_FUSED_COUPLING_MAX = 0.1
#: Whether this torch's fused SGD kernel computes :func:`_fused_coupling_`, per device type
#: ("cpu", "cuda"; absent: not checked yet).
_FUSED_COUPLING_OK: dict[str, bool] = {}


def _fused_coupling_works(device: torch.device) -> bool:
    """Whether torch's fused SGD kernel computes :func:`_fused_coupling_`'s algebra: it is
    given a negative learning rate and a dampening above 1, which torch.optim.SGD never
    passes, so a torch that validates them, or changes the kernel, must not be trusted with
    it. Checked once per process and device type (each has its own kernel) on four float64
    values against the coupling's formulas; on a mismatch or an error a warning is logged and
    the fused path writes D instead."""
    ok = _FUSED_COUPLING_OK.get(device.type)
    if ok is None:
        w, v, g = (torch.tensor(x, dtype=torch.float64, device=device)
                   for x in ([1.0, -2.0, 0.5, 3.0], [0.3, 2.0, -1.0, 0.0], [0.9, -1.0, 0.0, 2.5]))
        h = _Step("lasso", lr=0.1, kappa=2.0, mu=4.0, lam=0.0, momentum=0.0, dampening=0.0, nesterov=False,
                  weight_decay=0.0)
        a, c = h.w_rate, h.v_rate
        got_w, got_v = w.clone(), v.clone()
        try:
            _fused_coupling_([got_w], [got_v], [g], [], h)
            ok = torch.allclose(got_w, w - a * (w - g), rtol=1e-12, atol=0) and torch.allclose(
                got_v, v + c * (w - g), rtol=1e-12, atol=1e-15)
        except RuntimeError as e:
            ok, why = False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            why = "its result differs from the coupling's formulas"
        if not ok:
            logger.warning("DessiLBI: torch's fused SGD kernel on %s cannot run the coupling pass (%s); the fused "
                           "path writes W − Γ instead", device.type, why)
        _FUSED_COUPLING_OK[device.type] = ok
    return ok


def _fused_coupling_(
    params: list[Tensor], vs: list[Tensor], gammas: list[Tensor | None], scales: list[Tensor], h: _Step
) -> None:
    r"""W ← W − a(W − Γ) and V ← V + c(W − Γ) with a = κα/μ, c = α/μ (Γ = Γ_{t-1}; the
    reference loop's coupling terms), both in one pass of torch's fused SGD kernel, the only
    torch kernel that writes two tensors per pass. Given parameter X, momentum buffer Y and
    gradient Z it computes, with Nesterov momentum m, dampening τ and learning rate η,
    ``Y ← mY + (1 − τ)Z`` and ``X ← X − η(Z + mY)``, the new Y. Here X = V, Y = W,
    Z = −(1 − a)Γ, m = 1 − a, 1 − τ = −a/(1 − a), η = −c/(1 − a)²:

        W ← (1 − a)W + (−a/(1 − a))(−(1 − a)Γ) = W − a(W − Γ)
        Z + mW_new = (1 − a)(−Γ + (1 − a)W + aΓ) = (1 − a)²(W − Γ)
        V ← V + c/(1 − a)² · (1 − a)²(W − Γ) = V + c(W − Γ)

    Making Z reads V and writes Z (Γ = scale·V is not stored): the pass over memory that keeps
    this route above a single generated kernel (``compiled``). Keeping P = W + κV instead (the
    coupling cancels in P, which then takes plain momentum SGD; V is one ``addcmul`` and
    W = P − κV: 12 passes, 4 writes) measured slower, as it touches a fifth weight-sized
    tensor (benchmarks/optimizer_step.py). tests/test_optim.py holds this route to the
    reference loop over 50 steps."""
    a, c = h.w_rate, h.v_rate
    # Z is a new tensor each step, not a kept buffer: the allocator hands back memory the last
    # step freed, still in cache, where a kept buffer is cold (benchmarks/optimizer_step.py).
    # All tensors' factors in two kernels (a foreach op would run one per tensor on the CPU).
    factors = torch.cat(scales).mul_(a - 1).split([s.shape[0] for s in scales]) if scales else [None] * len(vs)
    zs = [torch.mul(g, a - 1) if g is not None else torch.mul(v, m.view(_column(v)))  # type: ignore[union-attr]
          for v, g, m in zip(vs, gammas, factors)]
    torch._fused_sgd_(  # type: ignore[attr-defined]
        vs, zs, params, weight_decay=0.0, momentum=1 - a, lr=-c / (1 - a) ** 2, dampening=1 + a / (1 - a),
        nesterov=True, maximize=False, is_first_step=False,
    )


def _coupled_step_(
    params: list[Tensor],
    vs: list[Tensor],
    gammas: list[Tensor | None],
    gamma_scales: list[Tensor],
    h: _Step,
    momentum_step: Callable[[], None],
) -> None:
    """W ← W − κα(d + D/μ), V ← V + (α/μ)D with D = W − Γ computed once, then Γ ← κ prox(V);
    ``momentum_step`` does W ← W − κα·d (and the buffers) and may read W_{t-1} (weight decay)."""
    if not params:
        return
    if h.structure is None:
        momentum_step()
        return
    couplings = _couplings(params, vs, gammas, gamma_scales)
    torch._foreach_add_(vs, couplings, alpha=h.v_rate)
    momentum_step()
    torch._foreach_add_(params, couplings, alpha=-h.w_rate)
    _prox_(vs, gammas, gamma_scales, structure=h.structure, lam=h.lam, kappa=h.kappa)


def _compiled_dessilbi(*args: Any, eager: Callable[..., None]) -> None:
    # ``args``: a path's arguments (params, grads, momentum_buffer_list, vs, gammas,
    # gamma_scales, h), for "filter" tensors of one device and dtype, which go through
    # _filter_update compiled by torch.compile: one generated kernel per tensor reads W, g,
    # b, V (and the factors) and writes W, b, V: the fewest passes over memory, which no
    # sequence of torch's eager kernels reaches (none writes two tensors with a per-filter
    # coefficient). A step that creates momentum buffers or starts from a stored Γ, and every
    # step after compilation failed, takes the ``eager`` path instead.
    global _COMPILED, _COMPILE_FAILED
    params, grads, momentum_buffer_list, vs, gammas, gamma_scales, h = args
    if (
        _COMPILE_FAILED is not None
        or any(b is None for b in momentum_buffer_list)
        or any(g is not None for g in gammas)
    ):
        eager(*args)
        return
    if _COMPILED is None:  # shapes dynamic: a growth that changes widths does not recompile
        _COMPILED = torch.compile(_filter_update, dynamic=True, fullgraph=True)
    # Hyperparameters as a tensor, so that a new learning rate does not recompile.
    hyper = torch.tensor([h.lr, h.kappa, h.mu, h.lam, h.momentum, h.dampening, h.weight_decay],
                         dtype=torch.float64, device=params[0].device)
    try:
        _COMPILED(params, grads, momentum_buffer_list, vs, gamma_scales, hyper, h.nesterov)
    except Exception as e:  # compilation fails before the kernel touches a tensor
        if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise
        _COMPILE_FAILED = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        logger.warning("DessiLBI(compiled=True): torch.compile failed (%s); the eager path runs instead",
                       _COMPILE_FAILED)
        eager(*args)


# The compiled _filter_update (made on first use), and why compilation failed if it did.
_COMPILED: Callable[..., None] | None = None
_COMPILE_FAILED: str | None = None


def _filter_update(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    vs: list[Tensor],
    scales: list[Tensor],
    hyper: Tensor,
    nesterov: bool,
) -> None:
    """The reference loop's "filter" step for tensors whose momentum buffers exist (or
    momentum is 0: ``bufs`` empty) and whose Γ is scale·V, written for torch.compile.
    ``hyper`` = [lr, kappa, mu, lam, momentum, dampening, weight_decay]."""
    lr, kappa, mu, lam, momentum, dampening, weight_decay = hyper.unbind()
    for i, (w, v, s) in enumerate(zip(params, vs, scales)):
        coupling = w - s.view(_column(v)) * v  # W − Γ, Γ = scale·V
        d = grads[i] + weight_decay * w
        if bufs:
            b = bufs[i]
            b.copy_(momentum * b + (1 - dampening) * d)
            d = d + momentum * b if nesterov else b
        v.add_(coupling * (lr / mu))
        w.sub_((d + coupling / mu) * (kappa * lr))
        norms = torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())))
        s.copy_(torch.where(norms > lam, 1 - lam / norms, 0.0) * kappa)


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
    if momentum == 0 or not any(first):
        torch._fused_sgd_(params, grads, bufs, is_first_step=False, **kw)  # type: ignore[attr-defined]
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

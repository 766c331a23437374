"""Specification of the DessiLBI optimizer (METHOD.md §1), its param groups and filter activity.

The update is checked against a hand-written loop of METHOD.md's equations; both code paths
(the per-tensor reference and the multi-tensor fast path, fused or not) are checked against it
and against each other.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import grownet._dessilbi as functional
from grownet import seeds
from grownet.arch import Architecture
from grownet.errors import UsageError
from grownet.models import build_model
from grownet.optim import DessiLBI, dessilbi_param_groups, filter_activity

# Hyperparameters that make every term matter within 50 steps: a small mu couples W and Γ
# strongly; lam lets some, not all, filters (and, with LASSO_LAM, linear weights) enter Γ's support.
HP = dict(lr=0.1, kappa=2.0, mu=5.0, lam=0.25, momentum=0.9)
LASSO_LAM = 0.12


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds waiting on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyCNN(nn.Module):
    """conv(bias)-BN-ReLU, conv-ReLU, GAP, hidden linear, ReLU, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.hidden = nn.Linear(6, 7)
        self.classifier = nn.Linear(7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        x = F.relu(self.hidden(F.adaptive_avg_pool2d(x, 1).flatten(1)))
        return self.classifier(x)


def make_model(dtype: torch.dtype = torch.float64, seed: int = 0, device: str = "cpu") -> nn.Module:
    torch.manual_seed(seed)
    return TinyCNN().to(device, dtype)


def batches(n: int, dtype: torch.dtype = torch.float64, seed: int = 1, device: str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(8, 3, 6, 6, generator=g, dtype=dtype), torch.randint(0, 4, (8,), generator=g)) for _ in range(n)]
    return [(x.to(device), y.to(device)) for x, y in data]


def train(model: nn.Module, opt: torch.optim.Optimizer, data: list) -> None:
    for x, y in data:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def reference_run(model: nn.Module, groups: list[dict], data: list, *, lr, kappa, mu, lam, momentum,
                  dampening=0.0, nesterov=False, state: dict | None = None) -> dict:
    """METHOD.md §1 written out literally, with torch.optim.SGD's weight decay and momentum
    conventions, from ``state`` (default: none). Returns {param: {"b", "V", "G"}}."""
    state = {} if state is None else state
    for x, y in data:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for group in groups:
                structure, wd, group_lam = group.get("structure"), group["weight_decay"], group.get("lam", lam)
                for W in group["params"]:
                    s = state.setdefault(W, {})
                    g = W.grad + wd * W
                    s["b"] = g.clone() if "b" not in s else momentum * s["b"] + (1 - dampening) * g
                    d = g + momentum * s["b"] if nesterov else s["b"]
                    if structure is None:
                        W.copy_(W - kappa * lr * d)
                        continue
                    V = s.get("V", torch.zeros_like(W))
                    G = s.get("G", torch.zeros_like(W))
                    W_new = W - kappa * lr * (d + (W - G) / mu)
                    V_new = V + (lr / mu) * (W - G)
                    if structure == "filter":
                        norms = V_new.flatten(1).norm(dim=1)
                        shrink = torch.clamp(1 - group_lam / norms, min=0).view(-1, *[1] * (W.dim() - 1))
                        G_new = kappa * shrink * V_new
                    else:
                        G_new = kappa * torch.sign(V_new) * torch.clamp(V_new.abs() - group_lam, min=0)
                    W.copy_(W_new)
                    s["V"], s["G"] = V_new, G_new
    return state


def assert_matches_reference(model, opt, ref_model, ref_state, *, atol):
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=f"parameter {name}")
        st = opt.state[p]
        torch.testing.assert_close(st["momentum_buffer"], ref_state[q]["b"], rtol=0, atol=atol, msg=f"buffer {name}")
        if "V" in ref_state[q]:
            torch.testing.assert_close(st["V"], ref_state[q]["V"], rtol=0, atol=atol, msg=f"V {name}")
            torch.testing.assert_close(st["gamma"], ref_state[q]["G"], rtol=0, atol=atol, msg=f"gamma {name}")
        else:
            assert set(st) == {"momentum_buffer"}


def groups_for(model: nn.Module, **kwargs) -> list[dict]:
    """dessilbi_param_groups, with the lasso group's own threshold LASSO_LAM."""
    groups = dessilbi_param_groups(model, **kwargs)
    for group in groups:
        if group.get("structure") == "lasso":
            group["lam"] = LASSO_LAM
    return groups


def run_both(route, *, linear="lasso", weight_decay=1e-3, steps=50, device="cpu", **hp):
    hp = {**HP, **hp}
    data = batches(steps, device=device)
    model = make_model(device=device)
    ref_model = copy.deepcopy(model)
    opt = DessiLBI(groups_for(model, linear=linear, weight_decay=weight_decay), **route, **hp)
    train(model, opt, data)
    ref_state = reference_run(ref_model, groups_for(ref_model, linear=linear, weight_decay=weight_decay), data, **hp)
    return model, opt, ref_model, ref_state


ROUTES = {
    "reference": dict(foreach=False),
    "foreach": dict(foreach=True),
    "fused": dict(fused=True),
}


@pytest.fixture(params=list(ROUTES))
def route(request):
    """DessiLBI's path selection: the reference loop, the foreach path, the fused path."""
    return ROUTES[request.param]


def record_paths(monkeypatch) -> list[str]:
    """A list that each of DessiLBI's three paths appends its function's name to when it runs."""
    calls: list[str] = []
    for name in ("_single_tensor_dessilbi", "_multi_tensor_dessilbi", "_fused_dessilbi"):
        real = getattr(functional, name)
        def spy(*a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(functional, name, spy)
    return calls


def test_the_path_is_chosen_per_group_by_the_flags(monkeypatch):
    """foreach/fused pick the path as in torch.optim.SGD; with neither set, dense CPU tensors
    take the fused path and others the foreach path (never a mix inside one group)."""
    calls = record_paths(monkeypatch)
    x, y = batches(1)[0]
    for flags, expected in [
        (dict(), "_fused_dessilbi"),
        (dict(foreach=True), "_multi_tensor_dessilbi"),
        (dict(foreach=False), "_single_tensor_dessilbi"),
        (dict(fused=True), "_fused_dessilbi"),
        (dict(fused=False), "_single_tensor_dessilbi"),
    ]:
        model = make_model()
        opt = DessiLBI(dessilbi_param_groups(model), **flags)
        F.cross_entropy(model(x), y).backward()
        calls.clear()
        opt.step()
        assert calls == [expected] * len(opt.param_groups), flags
    # A gradient laid out unlike its parameter: the fused kernel would read it in the wrong
    # order, so the default takes the foreach path and fused=True refuses.
    model = make_model()
    F.cross_entropy(model(x), y).backward()
    model.conv2.weight.grad = model.conv2.weight.grad.contiguous(memory_format=torch.channels_last)
    opt = DessiLBI(dessilbi_param_groups(model))
    calls.clear()
    opt.step()
    assert calls == ["_multi_tensor_dessilbi", "_fused_dessilbi"]
    with pytest.raises(UsageError, match=r"fused=True\) needs dense CPU or CUDA tensors.*; use foreach=True"):
        DessiLBI(dessilbi_param_groups(model), fused=True).step()


# -- the update equations --------------------------------------------------------------------


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_update_matches_method_equations(route, weight_decay, device):
    model, opt, ref_model, ref_state = run_both(route, weight_decay=weight_decay, device=device)
    assert_matches_reference(model, opt, ref_model, ref_state, atol=1e-6)
    # The run exercised the prox on both sides of the threshold.
    support = opt.support(model.conv2.weight)
    assert 0 < support.sum() < support.numel()
    lasso = opt.support(model.hidden.weight)
    assert 0 < lasso.sum() < lasso.numel()


@pytest.mark.parametrize("mu, coupled", [(5.0, True), (0.5, False)])  # a = κα/μ: 0.04, 0.4 (above the pass's 0.1)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_without_weight_decay_the_fused_route_couples_in_one_kernel_pass(monkeypatch, mu, coupled, momentum):
    """The fused route without weight decay moves W and V by their coupling terms in one pass of
    torch's fused SGD kernel (_fused_coupling_), from Γ = scale·V and from a Γ assigned to the
    state (growth's carry-over, a checkpoint): "filter" and "lasso" tensors match the per-tensor
    reference within 1e-6 (float64) over 50 steps. Where a = κα/μ > 0.1 the route writes D instead."""
    calls: list[int] = []
    real = functional._fused_coupling_
    monkeypatch.setattr(functional, "_fused_coupling_", lambda *a: calls.append(len(a[0])) or real(*a))
    data = batches(50)
    runs = []
    for route in (ROUTES["fused"], ROUTES["reference"]):
        model = make_model()
        hp = {**HP, "mu": mu, "momentum": momentum, "lam": 0.1}  # filters enter Γ's support by step 25
        opt = DessiLBI(groups_for(model, linear="lasso", weight_decay=0.0), **route, **hp)
        train(model, opt, data[:25])
        for p in (model.conv2.weight, model.hidden.weight):
            assert opt.gamma(p).ne(0).any()
            opt.state[p]["gamma"] = 0.5 * opt.gamma(p)  # not κ·prox(V): the next step starts from it
        train(model, opt, data[25:])
        runs.append((model, opt))
    assert bool(calls) == coupled
    (m1, o1), (m2, o2) = runs
    for (name, p), q in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=f"parameter {name}")
        for key in o2.state[q]:
            torch.testing.assert_close(o1.state[p][key], o2.state[q][key], rtol=0, atol=1e-6, msg=f"{key} {name}")
    support = torch.cat([o1.support(p).flatten() for g in o1.param_groups if g["structure"] for p in g["params"]])
    assert 0 < support.sum() < support.numel()  # the prox acted on both sides of λ


@pytest.mark.parametrize("route", [dict(fused=True), dict(foreach=True)], ids=["fused", "foreach"])
def test_a_group_of_two_dtypes_is_stepped_per_dtype_like_the_reference(route):
    """Tensors of two dtypes in one call go to the multi-tensor paths one dtype at a time; the
    momentum buffers those calls create land in the caller's list at the right places."""
    g = torch.Generator().manual_seed(3)
    shapes_dtypes = [((6, 3, 3, 3), torch.float32), ((5, 6, 3, 3), torch.float64), ((4, 5, 1, 1), torch.float32)]

    def state() -> tuple[list[torch.Tensor], ...]:
        ws = [torch.randn(sh, generator=g, dtype=torch.float64).to(dt) for sh, dt in shapes_dtypes]
        vs = [torch.randn(sh, generator=g, dtype=torch.float64).to(dt) * 2 for sh, dt in shapes_dtypes]
        return ws, vs

    ws, vs = state()
    grads = [[torch.randn(w.shape, generator=g, dtype=torch.float64).to(w.dtype) for w in ws] for _ in range(5)]
    runs = []
    for kw in (route, dict(foreach=False)):
        w_, v_ = [w.clone() for w in ws], [v.clone() for v in vs]
        bufs: list[torch.Tensor | None] = [None] * len(ws)
        scales = [functional._filter_scale(functional._group_norms(v), lam=1.0, kappa=1.0) for v in v_]
        for gr in grads:
            functional.dessilbi(w_, gr, bufs, v_, [None] * len(ws), scales, structure="filter", lr=0.1, kappa=1.0,
                                mu=5.0, lam=1.0, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0, **kw)
        runs.append((w_, v_, bufs, scales))
    for got, want in zip(*runs):
        for a, b in zip(got, want):
            assert a.dtype == b.dtype
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert [b.dtype for b in runs[0][2]] == [dt for _, dt in shapes_dtypes]


def test_a_torch_whose_fused_kernel_refuses_the_coupling_pass_gets_the_d_path(monkeypatch, caplog):
    """The coupling pass gives torch's fused SGD kernel a negative learning rate; where a torch
    refuses (or computes otherwise), the check made once per process says so in a warning and
    the fused route writes D, still equal to the reference."""
    cpu = torch.device("cpu")
    assert functional._fused_coupling_works(cpu)  # this torch computes it
    monkeypatch.setattr(functional, "_FUSED_COUPLING_OK", {})

    def refuses(*args, **kwargs):
        raise RuntimeError("Invalid learning rate: -0.0125")

    real = functional._fused_coupling_
    monkeypatch.setattr(functional, "_fused_coupling_", refuses)
    with caplog.at_level("WARNING", logger="grownet._dessilbi"):
        assert not functional._fused_coupling_works(cpu)
    assert "on cpu cannot run the coupling pass (RuntimeError: Invalid learning rate: -0.0125)" in caplog.text
    calls: list[int] = []
    monkeypatch.setattr(functional, "_fused_coupling_", lambda *a: calls.append(1) or real(*a))
    model, opt, ref_model, ref_state = run_both(ROUTES["fused"], weight_decay=0.0, steps=20)
    assert calls == [] and not functional._fused_coupling_works(cpu)  # checked once, not again
    assert_matches_reference(model, opt, ref_model, ref_state, atol=1e-6)


@CUDA
def test_on_cuda_fused_true_couples_in_one_kernel_pass_and_the_default_stays_foreach(monkeypatch):
    """CUDA has its own fused SGD kernel: with fused=True the coupling pass is checked on it
    (once per device type) and runs there, equal to the reference loop; with neither flag set
    CUDA tensors take the foreach path, as in torch.optim.SGD (the fused one measured no faster
    there)."""
    monkeypatch.setattr(functional, "_FUSED_COUPLING_OK", {})
    devices: list[str] = []
    real = functional._fused_coupling_
    monkeypatch.setattr(functional, "_fused_coupling_", lambda *a: devices.append(a[0][0].device.type) or real(*a))
    model, opt, ref_model, ref_state = run_both(ROUTES["fused"], weight_decay=0.0, steps=20, device="cuda")
    assert functional._FUSED_COUPLING_OK == {"cuda": True}
    assert devices.count("cuda") > 1 and set(devices) == {"cuda"}  # the check, then the steps
    assert_matches_reference(model, opt, ref_model, ref_state, atol=1e-6)

    paths = record_paths(monkeypatch)
    run_both({}, steps=1, device="cuda")
    assert paths and set(paths) == {"_multi_tensor_dessilbi"}


@pytest.mark.parametrize("variant", [dict(nesterov=True), dict(dampening=0.5), dict(momentum=0.0)])
def test_nesterov_dampening_and_no_momentum_match_equations(route, variant):
    model, opt, ref_model, ref_state = run_both(route, steps=20, **variant)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        if "V" in ref_state[q]:
            torch.testing.assert_close(opt.state[p]["gamma"], ref_state[q]["G"], rtol=0, atol=1e-6)
    if variant.get("momentum") == 0.0:
        assert all("momentum_buffer" not in opt.state[p] for p in model.parameters())
    else:
        for p, q in zip(model.parameters(), ref_model.parameters()):
            torch.testing.assert_close(opt.state[p]["momentum_buffer"], ref_state[q]["b"], rtol=0, atol=1e-6)


def test_plain_params_take_momentum_sgd_at_kappa_lr():
    model = make_model()
    ref = copy.deepcopy(model)
    data = batches(20)
    train(model, DessiLBI(model.parameters(), lr=0.05, kappa=3.0, momentum=0.9, weight_decay=1e-2), data)
    train(ref, torch.optim.SGD(ref.parameters(), lr=0.15, momentum=0.9, weight_decay=1e-2, foreach=False), data)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("fast", ["foreach", "fused"])
def test_fast_and_reference_paths_agree_in_float32(fast, channels_last):
    """The foreach and fused paths and the reference loop give the same trajectory."""
    data = batches(30, dtype=torch.float32)
    runs = []
    for flags in (ROUTES[fast], ROUTES["reference"]):
        model = make_model(torch.float32)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = DessiLBI(dessilbi_param_groups(model, linear="filter", weight_decay=1e-3), **flags, **HP)
        train(model, opt, [(x.contiguous(memory_format=torch.channels_last) if channels_last else x, y) for x, y in data])
        runs.append((model, opt))
    (m1, o1), (m2, o2) = runs
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert o1.state[p].keys() == o2.state[q].keys()
        for key in o1.state[p]:
            torch.testing.assert_close(o1.state[p][key], o2.state[q][key], rtol=1e-5, atol=1e-6)
    if channels_last:
        assert m1.conv2.weight.is_contiguous(memory_format=torch.channels_last)
        for key in ("V", "gamma", "momentum_buffer"):
            assert o1.state[m1.conv2.weight][key].is_contiguous(memory_format=torch.channels_last), key


def test_state_in_another_layout_than_its_parameter_is_still_correct():
    """State laid out unlike its parameter (e.g. written by other code, or left by a parameter
    that changed layout between steps) must not reach the fused kernel, which would read it in
    the wrong order."""
    data = batches(10)
    model = make_model().to(memory_format=torch.channels_last)
    ref_model = copy.deepcopy(model)
    opt = DessiLBI(dessilbi_param_groups(model), fused=True, **HP)
    train(model, opt, data[:1])
    for p in (model.conv1.weight, model.conv2.weight):
        st = opt.state[p]
        for key in ("V", "gamma", "momentum_buffer"):
            st[key] = st[key].contiguous()  # same values, other layout
    train(model, opt, data[1:5])
    model.to(memory_format=torch.contiguous_format)  # the parameters' layout changes; their state stays
    assert model.conv2.weight.is_contiguous() and not opt.state[model.conv2.weight]["V"].is_contiguous()
    train(model, opt, data[5:])
    ref_state = reference_run(ref_model, dessilbi_param_groups(ref_model), data, **HP)
    assert_matches_reference(model, opt, ref_model, ref_state, atol=1e-9)


FAMILIES = {
    "vgg": seeds.vgg(4, (1, 2), input_size=8, num_classes=4),
    "resnet": seeds.resnet((4, 6), 1, input_size=8, num_classes=4),
}


def assert_path_equals_the_reference(
    flags: dict, family: str, momentum: float, weight_decay: float, device: str = "cpu"
) -> None:
    """50 steps of a seeds preset of ``family`` (float64) with ``flags`` and with the reference
    loop: every parameter and state entry within 1e-6."""
    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(8, 3, 8, 8, generator=g, dtype=torch.float64).to(device),
             torch.randint(0, 4, (8,), generator=g).to(device)) for _ in range(50)]
    runs = []
    for route in (flags, ROUTES["reference"]):
        torch.manual_seed(0)
        model = build_model(FAMILIES[family]).double().to(device)
        # λ = 0.6: some filters of every run enter Γ's support within the 50 steps, not all
        opt = DessiLBI(dessilbi_param_groups(model, weight_decay=weight_decay),
                       **{**HP, "momentum": momentum, "lam": 0.6}, **route)
        train(model, opt, data)
        runs.append((model, opt))
    (m1, o1), (m2, o2) = runs
    for (name, p), q in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=f"parameter {name}")
        assert o1.state[p].keys() == o2.state[q].keys()
        for key in o1.state[p]:
            torch.testing.assert_close(o1.state[p][key], o2.state[q][key], rtol=0, atol=1e-6, msg=f"{key} {name}")
    supports = torch.cat([o1.support(p) for group in o1.param_groups if group["structure"] for p in group["params"]])
    assert 0 < supports.sum() < supports.numel()  # the prox acted on both sides of λ


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(
    "fast, device",
    [("foreach", "cpu"), ("fused", "cpu"), pytest.param("foreach", "cuda", marks=CUDA),
     pytest.param("fused", "cuda", marks=CUDA)],
)
def test_fast_paths_equal_the_reference_over_50_steps(fast, device, family, momentum, weight_decay):
    """Both grownet families: the foreach and fused paths against the reference loop."""
    assert_path_equals_the_reference(ROUTES[fast], family, momentum, weight_decay, device)


@pytest.fixture
def fresh_compile(monkeypatch):
    """A torch.compile of the test's own: no kernel or failure left by an earlier test."""
    monkeypatch.setattr(functional, "_COMPILED", None)
    monkeypatch.setattr(functional, "_COMPILE_FAILED", None)


SLOW = pytest.mark.slow


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize(
    "family, momentum, device",
    [
        ("resnet", 0.9, "cpu"),
        pytest.param("resnet", 0.0, "cpu", marks=SLOW),
        pytest.param("vgg", 0.9, "cpu", marks=SLOW),
        pytest.param("vgg", 0.0, "cpu", marks=SLOW),
        pytest.param("resnet", 0.9, "cuda", marks=CUDA),
    ],
)
def test_the_compiled_path_equals_the_reference_over_50_steps(family, momentum, device, weight_decay, fresh_compile):
    """compiled=True (a torch.compile kernel; each family and momentum on/off compiles anew,
    about 15 s, so all but one case are marked slow) against the reference loop."""
    assert_path_equals_the_reference(dict(compiled=True), family, momentum, weight_decay, device)
    assert functional._COMPILE_FAILED is None and functional._COMPILED is not None


def test_a_failed_compilation_falls_back_to_the_eager_path(fresh_compile, caplog):
    """With no working C++ compiler torch.compile fails: a warning, then the path that
    foreach/fused select, with the same results."""
    import torch._inductor.config as inductor

    data = batches(3, dtype=torch.float32)
    runs = []
    for flags in (dict(compiled=True), dict()):
        model = make_model(torch.float32)
        opt = DessiLBI(dessilbi_param_groups(model), **flags, **HP)
        with inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "force_disable_caches": True}):
            train(model, opt, data)
        runs.append(model)
    assert "torch.compile failed (InductorError: InvalidCxxCompiler" in caplog.text
    assert "InvalidCxxCompiler" in functional._COMPILE_FAILED
    for p, q in zip(*(m.parameters() for m in runs)):
        assert torch.equal(p, q)


# -- the prox ----------------------------------------------------------------------------------


def one_step_prox(V0: torch.Tensor, structure: str, *, lam: float, kappa: float, route: dict) -> torch.Tensor:
    """Γ after one step from V = V0 with W = Γ = 0 and a zero gradient: exactly κ·prox(V0)."""
    p = nn.Parameter(torch.zeros_like(V0))
    opt = DessiLBI([{"params": [p], "structure": structure}], lr=0.1, kappa=kappa, mu=10.0, lam=lam, momentum=0.0,
                   **route)
    opt.init_state(p)["V"].copy_(V0)
    p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(opt.state[p]["V"], V0, rtol=0, atol=0)  # V += (α/μ)(W − Γ) = 0
    return opt.gamma(p)


def test_group_prox_zeroes_small_filters_and_shrinks_the_rest(route):
    lam, kappa = 1.0, 2.0
    V0 = torch.zeros(5, 2, 2, 1, dtype=torch.float64)
    rows = {0: [0.0, 0.0], 1: [0.3, 0.4], 2: [0.6, 0.8], 3: [1.2, 1.6], 4: [-3.0, 4.0]}  # norms 0, .5, 1, 2, 5
    for o, (a, b) in rows.items():
        V0[o, 0, 0, 0], V0[o, 1, 1, 0] = a, b
    gamma = one_step_prox(V0, "filter", lam=lam, kappa=kappa, route=route)
    assert not gamma.isnan().any()
    for o in (0, 1, 2):  # ||V_g|| <= λ (including exactly λ and 0): exactly zero
        assert torch.equal(gamma[o], torch.zeros_like(gamma[o]))
    torch.testing.assert_close(gamma[3], kappa * (1 - lam / 2.0) * V0[3], rtol=1e-15, atol=0)
    torch.testing.assert_close(gamma[4], kappa * (1 - lam / 5.0) * V0[4], rtol=1e-15, atol=0)


def test_group_prox_with_zero_threshold_gives_no_nan(route):
    V0 = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64)
    gamma = one_step_prox(V0, "filter", lam=0.0, kappa=1.0, route=route)
    assert torch.equal(gamma, V0)


def test_lasso_prox_is_elementwise_soft_threshold(route):
    V0 = torch.tensor([[-2.5, -1.0, -0.4, 0.0], [0.4, 1.0, 1.5, 3.0]], dtype=torch.float64)
    gamma = one_step_prox(V0, "lasso", lam=1.0, kappa=2.0, route=route)
    expected = torch.tensor([[-3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 4.0]], dtype=torch.float64)
    assert torch.equal(gamma, expected)


# -- the inverse scale space on a toy problem ----------------------------------------------------


def test_gamma_starts_at_zero_and_filters_enter_the_support_over_time():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 5, 5, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()  # the label is in channel 0
    opt = DessiLBI(dessilbi_param_groups(model), lr=0.05, kappa=1.0, mu=20.0, lam=0.5, momentum=0.9)
    conv = model[0].weight
    assert torch.equal(opt.gamma(conv), torch.zeros_like(conv))
    sizes = []
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sizes.append(int(opt.support(conv).sum()))
    first = next(i for i, s in enumerate(sizes) if s > 0)
    assert sizes[0] == 0 and first >= 10  # nothing at step 1: ||V_g|| has to grow past λ first
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))  # filters enter one by one, none leave
    assert 0 < sizes[-1] < 16
    assert filter_activity(model, opt) == {"0.weight": sizes[-1] / 16}


# -- state -------------------------------------------------------------------------------------------


def test_state_names_and_init_state():
    model = make_model()
    opt = DessiLBI(dessilbi_param_groups(model, linear="lasso"))
    st = opt.init_state(model.conv2.weight)
    assert set(st) == {"V", "gamma"}
    assert torch.equal(st["V"], torch.zeros_like(model.conv2.weight))
    assert torch.equal(st["gamma"], torch.zeros_like(model.conv2.weight))
    assert opt.init_state(model.conv2.weight) is st  # idempotent
    assert opt.init_state(model.classifier.weight) == {}  # plain: nothing to create
    train(model, opt, batches(1))
    for name, p in model.named_parameters():
        expected = {"V", "gamma", "momentum_buffer"} if name in ("conv1.weight", "conv2.weight", "hidden.weight") else {"momentum_buffer"}
        assert set(opt.state[p]) == expected, name
        for value in opt.state[p].values():
            assert value.shape == p.shape
    conv, hidden = model.conv2.weight, model.hidden.weight
    assert opt.gamma(hidden) is opt.state[hidden]["gamma"]  # "lasso": Γ is stored
    assert torch.equal(opt.gamma(conv), opt.state[conv]["gamma"])  # "filter": computed from V on read
    assert "gamma" not in opt.state[conv].entries and opt.state[conv].scale.shape == (6,)  # one factor per filter
    assert opt.support(conv).shape == (6,)
    assert opt.support(hidden).shape == (7, 6)
    # state_dict holds the documented entries as plain tensors (torch.load(weights_only=True) reads it)
    sd = opt.state_dict()
    index = [id(p) for g in opt.param_groups for p in g["params"]].index(id(conv))
    assert type(sd["state"][index]) is dict and set(sd["state"][index]) == {"V", "gamma", "momentum_buffer"}
    assert torch.equal(sd["state"][index]["gamma"], opt.gamma(conv))


def test_a_gamma_assigned_to_a_filter_state_is_where_the_next_step_starts():
    """Assigning "gamma" (as growth's carry-over and checkpoint loading do) sets Γ_{t-1} for
    the next step exactly, on every path."""
    data = batches(4)
    for flags in ROUTES.values():
        model = make_model()
        ref_model = copy.deepcopy(model)
        opt = DessiLBI(dessilbi_param_groups(model), **flags, **HP)
        train(model, opt, data[:2])
        ref_state = reference_run(ref_model, dessilbi_param_groups(ref_model), data[:2], **HP)
        for p, q in zip(model.parameters(), ref_model.parameters()):
            if "V" in ref_state[q]:
                ref_state[q]["G"] = torch.full_like(q, 0.01)  # not a per-filter scale of V
                opt.state[p]["gamma"] = torch.full_like(p, 0.01)
        train(model, opt, data[2:])
        ref_state = reference_run(ref_model, dessilbi_param_groups(ref_model), data[2:], state=ref_state, **HP)
        assert_matches_reference(model, opt, ref_model, ref_state, atol=1e-9)


def test_gamma_of_a_plain_or_foreign_tensor_is_a_usage_error():
    model = make_model()
    opt = DessiLBI(dessilbi_param_groups(model))
    with pytest.raises(UsageError, match="no Γ"):
        opt.gamma(model.classifier.weight)
    with pytest.raises(UsageError, match="not a parameter of this optimizer"):
        opt.support(torch.zeros(3, 3))


def test_sparse_gradients_are_rejected():
    emb = nn.Embedding(5, 3, sparse=True)
    opt = DessiLBI(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(UsageError, match="sparse gradients"):
        opt.step()


def test_resume_from_state_dict_is_bit_identical(tmp_path, route):
    data = batches(12, dtype=torch.float32)
    groups = dict(linear="lasso", weight_decay=1e-3)

    model = make_model(torch.float32)
    opt = DessiLBI(groups_for(model, **groups), **route, **HP)
    train(model, opt, data)  # uninterrupted

    model_a = make_model(torch.float32)
    opt_a = DessiLBI(groups_for(model_a, **groups), **route, **HP)
    train(model_a, opt_a, data[:5])
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict()}, tmp_path / "ckpt.pt")
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    model_b = make_model(torch.float32, seed=123)  # other initial weights: all must come from the file
    opt_b = DessiLBI(groups_for(model_b, **groups), **route, **HP)
    model_b.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["opt"])
    train(model_b, opt_b, data[5:])

    for (name, p), q in zip(model.named_parameters(), model_b.parameters()):
        assert torch.equal(p, q), name
        assert opt.state[p].keys() == opt_b.state[q].keys()
        for key, value in opt.state[p].items():
            assert torch.equal(value, opt_b.state[q][key]), (name, key)


DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("family", ["vgg", "resnet"])
def test_a_checkpoint_of_the_previous_format_resumes(family, route):
    """tests/data/dessilbi_v1_checkpoint.pt was written by grownet when Γ was a stored state
    tensor (see make_dessilbi_v1_checkpoint.py): it loads, reads back as saved, and the 6 steps
    after it reproduce the old code's run to 1e-6, on every path."""
    ckpt = torch.load(DATA / "dessilbi_v1_checkpoint.pt", weights_only=True)
    saved = ckpt[family]
    model = build_model(Architecture.from_dict(json.loads(saved["arch"])))
    model.load_state_dict(saved["model"])
    opt = DessiLBI(dessilbi_param_groups(model, linear="lasso", weight_decay=1e-3), **ckpt["hp"])
    opt.load_state_dict(saved["opt"])
    for group in opt.param_groups:
        assert group["fused"] is None  # a key the old format lacks
        group.update({"foreach": None, **route})  # the checkpoint names the reference loop
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, entries in saved["opt"]["state"].items():
        assert opt.state[params[i]].keys() == entries.keys()
        for key, value in entries.items():
            assert torch.equal(opt.state[params[i]][key], value), (i, key)
    train(model, opt, ckpt["batches"][10:])
    for name, value in saved["final_model"].items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
    final = opt.state_dict()["state"]
    assert final.keys() == saved["final_opt"]["state"].keys()
    for i, entries in saved["final_opt"]["state"].items():
        assert final[i].keys() == entries.keys()
        for key, value in entries.items():
            torch.testing.assert_close(final[i][key], value, rtol=0, atol=1e-6, msg=f"{key} of parameter {i}")
    gammas = [v["gamma"] for v in saved["opt"]["state"].values() if "gamma" in v]
    assert any(g.ne(0).any() and not g.ne(0).all() for g in gammas)  # Γ had a partial support


def test_setstate_fills_in_group_keys_of_older_checkpoints():
    model = make_model()
    opt = DessiLBI(dessilbi_param_groups(model))
    state = opt.__getstate__()
    for group in state["param_groups"]:
        for key in ("structure", "foreach", "lam", "nesterov"):
            group.pop(key, None)
    restored = pickle.loads(pickle.dumps(opt))
    restored.__setstate__(state)
    for group in restored.param_groups:
        assert group["structure"] is None and group["foreach"] is None
        assert group["lam"] == 1.0 and group["nesterov"] is False


# -- param groups and activity -----------------------------------------------------------------


def group_of(groups: list[dict], p: torch.Tensor) -> dict:
    (group,) = [g for g in groups if any(q is p for q in g["params"])]
    return group


@pytest.mark.parametrize("linear, hidden_structure", [("none", None), ("lasso", "lasso"), ("filter", "filter")])
def test_param_groups_assignment(linear, hidden_structure):
    model = make_model()
    groups = dessilbi_param_groups(model, linear=linear, weight_decay=5e-4)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for p in (model.conv1.weight, model.conv2.weight):
        assert group_of(groups, p)["structure"] == "filter" and group_of(groups, p)["weight_decay"] == 5e-4
    hidden = group_of(groups, model.hidden.weight)
    assert hidden.get("structure") == hidden_structure and hidden["weight_decay"] == 5e-4
    classifier = group_of(groups, model.classifier.weight)
    assert classifier.get("structure") is None and classifier["weight_decay"] == 5e-4
    for p in (model.conv1.bias, model.bn1.weight, model.bn1.bias, model.hidden.bias, model.classifier.bias):
        assert group_of(groups, p).get("structure") is None and group_of(groups, p)["weight_decay"] == 0.0
    DessiLBI(groups)  # valid groups


def test_param_groups_of_a_grownet_vgg_and_frozen_parameters():
    model = build_model(Architecture("vgg", ((4,), (6, 5)), input_size=8, num_classes=3))
    model.stages[1][1].bn.weight.requires_grad_(False)
    groups = dessilbi_param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    by_kind = {g.get("structure"): [names[id(p)] for p in g["params"]] for g in groups if g["weight_decay"] == 0 or g.get("structure")}
    assert by_kind["filter"] == ["stages.0.0.conv.weight", "stages.1.0.conv.weight", "stages.1.1.conv.weight"]
    assert "stages.1.1.bn.weight" not in {names[id(p)] for g in groups for p in g["params"]}
    assert "classifier.weight" in {names[id(p)] for g in groups if g.get("structure") is None for p in g["params"]}


def test_param_groups_without_weight_decay_share_one_plain_group():
    model = make_model()
    groups = dessilbi_param_groups(model, linear="lasso")
    assert [(g.get("structure"), g["weight_decay"]) for g in groups] == [("filter", 0.0), ("lasso", 0.0), (None, 0.0)]
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in groups[2]["params"]] == [
        "conv1.bias", "bn1.weight", "bn1.bias", "hidden.bias", "classifier.weight", "classifier.bias"
    ]


def test_param_groups_reject_an_unknown_linear_mode():
    with pytest.raises(ValueError, match="Invalid linear: 'rows'"):
        dessilbi_param_groups(make_model(), linear="rows")


def test_filter_activity_on_constructed_state():
    model = make_model()
    opt = DessiLBI(dessilbi_param_groups(model, linear="lasso"))
    assert filter_activity(model, opt) == {"conv1.weight": 0.0, "conv2.weight": 0.0, "hidden.weight": 0.0}
    with torch.no_grad():
        gamma = torch.zeros_like(model.conv1.weight)
        gamma[[1, 4, 6]] = 0.5  # 3 of 8 filters
        opt.state[model.conv1.weight]["gamma"] = gamma  # "filter": Γ is written by assignment
        gamma = torch.zeros_like(model.conv2.weight)
        gamma[2, 0, 0, 0] = -1e-3  # one entry makes the filter active: 1 of 6
        opt.state[model.conv2.weight]["gamma"] = gamma
        opt.gamma(model.hidden.weight)[0, :3] = 1.0  # "lasso": the live tensor; 3 of 42 elements
    assert filter_activity(model, opt) == pytest.approx({"conv1.weight": 3 / 8, "conv2.weight": 1 / 6, "hidden.weight": 3 / 42})
    assert torch.equal(opt.support(model.conv2.weight), torch.tensor([False, False, True, False, False, False]))


def test_filter_support_after_steps_is_where_the_scale_is_positive():
    """After a step a "filter" tensor's Γ is scale·V: its support (read from the scales) is
    where the computed Γ is non-zero, and filter_activity is its mean."""
    model, opt, *_ = run_both(ROUTES["fused"])
    for p in (model.conv1.weight, model.conv2.weight):
        gamma = opt.state[p]["gamma"]
        assert torch.equal(opt.support(p), gamma.flatten(1).ne(0).any(dim=1))
    activity = filter_activity(model, opt)
    assert activity["conv2.weight"] == opt.state[model.conv2.weight]["gamma"].flatten(1).ne(0).any(1).float().mean().item()
    assert 0 < activity["conv2.weight"] < 1


# -- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-1), r"Invalid lr: -1 \(must be > 0\)"),
        (dict(lr=0.0), r"Invalid lr: 0.0"),
        (dict(kappa=0), r"Invalid kappa: 0 \(must be > 0\)"),
        (dict(mu=-5.0), r"Invalid mu: -5.0"),
        (dict(lam=-0.1), r"Invalid lam: -0.1 \(must be >= 0\)"),
        (dict(momentum=1.0), r"Invalid momentum: 1.0 \(must be in \[0, 1\)\)"),
        (dict(momentum=-0.1), r"Invalid momentum: -0.1"),
        (dict(dampening=-0.5), r"Invalid dampening: -0.5"),
        (dict(weight_decay=-1e-4), r"Invalid weight_decay: -0.0001"),
        (dict(nesterov=True, momentum=0.0), r"Invalid nesterov: True \(requires momentum > 0"),
        (dict(nesterov=True, dampening=0.1), r"Invalid nesterov: True"),
        (dict(foreach="yes"), r"Invalid foreach: 'yes'"),
        (dict(fused="no"), r"Invalid fused: 'no'"),
        (dict(foreach=True, fused=True), r"Invalid foreach: True with fused=True"),
        (dict(compiled=None), r"Invalid compiled: None \(must be True or False\)"),
        (dict(lr=float("nan")), r"Invalid lr: nan"),
        (dict(lr="0.1"), r"Invalid lr: '0.1'"),
    ],
)
def test_invalid_hyperparameters_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DessiLBI(make_model().parameters(), **kwargs)


def test_invalid_group_values_name_the_argument():
    model = make_model()
    with pytest.raises(ValueError, match=r"Invalid structure: 'group' \(must be 'filter', 'lasso' or None\)"):
        DessiLBI([{"params": [model.conv1.weight], "structure": "group"}])
    with pytest.raises(ValueError, match=r"Invalid lr: -0.1"):
        DessiLBI([{"params": [model.conv1.weight], "lr": -0.1}])
    with pytest.raises(ValueError, match=r"Invalid structure: 'filter' for a parameter of shape \(8,\)"):
        DessiLBI([{"params": [model.conv1.bias], "structure": "filter"}])
    opt = DessiLBI([model.conv1.weight])
    with pytest.raises(ValueError, match="Invalid lam"):
        opt.add_param_group({"params": [model.conv2.weight], "structure": "filter", "lam": -1.0})
    assert len(opt.param_groups) == 1  # the rejected group was not added

"""The training loop (grownet.train): epoch statistics against direct computation, the
learning-rate hook, progress, non-finite losses, evaluation, device helpers and the
``run.compile`` / ``run.amp`` decisions."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grownet.arch import Architecture
from grownet.errors import ConfigError, UsageError
from grownet.models import build_model
from grownet.train import (
    COMPILE_MIN_STEPS,
    EpochStats,
    amp_dtype,
    compile_choice,
    compile_unsupported,
    evaluate,
    prepare_model,
    resolve_device,
    train_epoch,
    wants_channels_last,
)


def batches(n_batches: int = 4, bs: int = 8, *, seed: int = 0, nan_at: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_batches):
        x = torch.randn(bs, 3, 8, 8, generator=g)
        if i == nan_at:
            x[0, 0, 0, 0] = float("nan")
        out.append((x, torch.randint(0, 10, (bs,), generator=g)))
    return out


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


def test_with_zero_lr_the_epoch_loss_and_accuracy_are_those_of_the_fixed_model():
    model, data = linear_model(), batches()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    stats = train_epoch(model, data, opt, lr_at=lambda i: 0.0, label_smoothing=0.1)
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    with torch.no_grad():
        logits = model(x)
    assert isinstance(stats, EpochStats) and stats.finite
    assert stats.samples == 32
    assert stats.loss == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-6)
    assert stats.acc == (logits.argmax(1) == y).float().mean().item()
    ev = evaluate(model, data)
    assert (ev.samples, ev.acc) == (32, stats.acc)
    assert ev.loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_one_sgd_step_per_batch_matches_a_hand_written_loop():
    model, data = linear_model(), batches()
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    train_epoch(model, data, opt)
    for x, y in data:
        ref_opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        ref_opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_lr_at_sets_every_group_before_each_step_and_progress_reports_each_batch():
    model, data = linear_model(), batches(5)
    opt = torch.optim.SGD([{"params": [model[1].weight]}, {"params": [model[1].bias]}], lr=1.0)
    seen: list[tuple[int, int, list[float]]] = []
    train_epoch(model, data, opt, lr_at=lambda i: 0.01 * (i + 1),
                progress=lambda done, total: seen.append((done, total, [g["lr"] for g in opt.param_groups])))
    assert [(d, t) for d, t, _ in seen] == [(i, 5) for i in range(1, 6)]
    assert all(lrs == [pytest.approx(0.01 * d)] * 2 for d, _, lrs in seen)


def test_a_non_finite_loss_stops_the_epoch_before_its_step():
    model, data = linear_model(), batches(4, nan_at=2)
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = train_epoch(model, data, opt)
    assert not stats.finite and stats.samples == 16
    assert stats.loss != stats.loss  # nan
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for x, y in data[:2]:
        ref_opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        ref_opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_evaluate_restores_the_training_mode_and_uses_eval_batchnorm():
    arch = Architecture("vgg", ((4,), (4,)), input_size=8)
    torch.manual_seed(0)
    model = build_model(arch)
    data = batches(2)
    model.train()
    ev = evaluate(model, data)
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in data])
    y = torch.cat([b[1] for b in data])
    assert ev.loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def test_channels_last_model_trains_like_the_contiguous_one():
    arch = Architecture("vgg", ((4,), (8,)), input_size=8)
    torch.manual_seed(0)
    a = build_model(arch)
    b = prepare_model(copy.deepcopy(a), torch.device("cpu"), channels_last=True)
    assert b.stages[0][0].conv.weight.is_contiguous(memory_format=torch.channels_last)
    data = batches(3)
    sa = train_epoch(a, data, torch.optim.SGD(a.parameters(), lr=0.05))
    sb = train_epoch(b, data, torch.optim.SGD(b.parameters(), lr=0.05))
    assert sb.loss == pytest.approx(sa.loss, rel=1e-4)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_device_helpers():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match=r"--device: unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match=r"--device: cuda asked for but CUDA is not available"):
            resolve_device("cuda")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert wants_channels_last("auto", cpu) and not wants_channels_last("auto", cuda)
    assert wants_channels_last("on", cuda) and not wants_channels_last("off", cpu)
    assert amp_dtype("bf16", cpu) is None and amp_dtype("off", cuda) is None
    assert amp_dtype("bf16", cuda) == torch.bfloat16 and amp_dtype("fp16", cuda) == torch.float16


def test_amp_auto_is_bf16_on_cuda_and_off_on_the_cpu():
    assert amp_dtype("auto", torch.device("cpu")) is None
    cuda = torch.device("cuda")
    if not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False):
        assert amp_dtype("auto", cuda) == torch.bfloat16
    else:  # a GPU before Ampere: full precision
        assert amp_dtype("auto", cuda) is None


LONG = COMPILE_MIN_STEPS  # a phase long enough for auto


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_compile_off_never_compiles_and_auto_skips_short_phases(device):
    dev = torch.device(device)
    off = compile_choice("off", dev, steps=10**6)
    assert not off.on and str(off) == "not compiled (run.compile = off)"
    short = compile_choice("auto", dev, steps=LONG - 1)
    assert not short.on
    why = "not on cuda (compiled epochs measured slower on a GPU; run.compile = on forces it)" if device == "cuda" \
        else compile_unsupported(dev)
    assert str(short).endswith(f"{LONG - 1} steps, fewer than the {LONG} that pay for a compile)" if why is None else f"{why})")


def test_compile_auto_and_on_follow_what_this_machine_supports_on_the_cpu():
    cpu = torch.device("cpu")
    why = compile_unsupported(cpu)
    auto = compile_choice("auto", cpu, steps=LONG)
    assert auto.on == (why is None)
    if why is None:
        assert str(auto) == f"compiled (run.compile = auto: {LONG} steps, inductor on cpu)"
        assert compile_choice("on", cpu, steps=1).on
    else:
        assert str(auto) == f"not compiled (run.compile = auto: {why})"


def test_a_torch_without_module_compile_or_dynamo_support_is_named_not_raised(monkeypatch):
    """Older or stripped torch builds: the reason, not an exception (the function used to
    raise UnboundLocalError on the first: an import inside it made ``torch`` a local name)."""
    from torch import _dynamo

    cpu = torch.device("cpu")
    monkeypatch.setattr(_dynamo, "is_dynamo_supported", lambda: False)
    assert compile_unsupported(cpu) == f"torch {torch.__version__} cannot compile on Python {sys.version.split()[0]} here"
    monkeypatch.delattr(nn.Module, "compile")
    assert compile_unsupported(cpu) == f"torch {torch.__version__} has no nn.Module.compile (torch >= 2.2 has)"
    assert not compile_choice("auto", cpu, steps=10**6).on


def test_compile_without_a_cpp_compiler_is_off_under_auto_and_an_error_under_on():
    import torch._inductor.config as inductor

    cpu = torch.device("cpu")
    with inductor.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
        assert compile_unsupported(cpu) == "no C++ compiler for inductor on the PATH (looked for /nonexistent/g++)"
        assert not compile_choice("auto", cpu, steps=10**6).on
        with pytest.raises(ConfigError, match=r"^run\.compile: on, but torch\.compile cannot train here: no C\+\+ "
                                              r"compiler for inductor on the PATH \(looked for /nonexistent/g\+\+\); "
                                              r"set run\.compile = auto or off$"):
            compile_choice("on", cpu, steps=10**6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer where CUDA is missing")
def test_compile_on_cuda_is_off_under_auto_and_an_error_under_on_without_cuda():
    cuda = torch.device("cuda")
    assert compile_unsupported(cuda) == "CUDA is not available"
    assert str(compile_choice("auto", cuda, steps=10**6)) == (
        "not compiled (run.compile = auto: not on cuda (compiled epochs measured slower on a GPU; run.compile = on forces it))")
    with pytest.raises(ConfigError, match=r"^run\.compile: on, but torch\.compile cannot train here: CUDA is not available"):
        compile_choice("on", cuda, steps=1)

"""One epoch of training and one evaluation pass: the body of the one training loop,
:func:`grownet.loop.fit`, which every command goes through.

It knows nothing about growth, run folders or consoles: the caller sets the learning rate
through ``lr_at`` and shows progress through the ``progress`` callback. Loaders yield
``(images, labels)`` batches already on the model's device (grownet.data). Also here: the
device helpers and the cosine schedule.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, UsageError

__all__ = [
    "EpochStats",
    "EvalStats",
    "train_epoch",
    "evaluate",
    "resolve_device",
    "prepare_model",
    "wants_channels_last",
    "amp_dtype",
    "CompileChoice",
    "COMPILE_MIN_STEPS",
    "compile_choice",
    "compile_unsupported",
    "cosine_lr",
]

#: On CUDA, finiteness of the loss is read back every this many batches (a host sync).
_CUDA_CHECK_EVERY = 16


@dataclass(frozen=True)
class EpochStats:
    """One training epoch: mean loss and accuracy over the samples trained on (fraction in
    [0, 1]), seconds of wall time, and whether every loss was finite (when not, the epoch
    stopped at the first non-finite loss and ``loss`` is nan)."""

    loss: float
    acc: float
    samples: int
    seconds: float
    finite: bool


@dataclass(frozen=True)
class EvalStats:
    """One evaluation pass: mean loss and accuracy (fraction in [0, 1]) over ``samples``."""

    loss: float
    acc: float
    samples: int


def cosine_lr(step: int, total: int, *, lr: float, min_lr: float = 0.0, warmup: float = 0.0) -> float:
    """Learning rate at optimizer step ``step`` (from 0) of ``total``: cosine from ``lr`` to
    ``min_lr``, times a linear warm-up ``(step + 1) / warmup`` over the first ``warmup`` steps
    (the fine-tune schedule of searches, controls and tickets)."""
    value = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
    if warmup > 0 and step < warmup:
        value *= (step + 1) / warmup
    return value


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise validate the name.

    Raises:
        UsageError: for an unknown name, or CUDA asked for but unavailable.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device: unknown device {device!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device: {device} asked for but CUDA is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device: {device!r} is not supported; use auto, cpu or cuda")
    return dev


def wants_channels_last(setting: str, device: torch.device) -> bool:
    """Resolve the recipe's ``run.channels_last`` (auto: on for the CPU, where grownet's
    VGG convs measured 1.3-1.5x faster in channels-last; off on CUDA)."""
    if setting == "auto":
        return device.type == "cpu"
    return setting == "on"


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for the recipe's ``run.amp`` (None = full precision; always None on CPU).

    ``auto`` is bf16 on CUDA (no gradient scaler needed, the fp32 range kept), except on a
    GPU without native bf16 (before Ampere), where it is full precision."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "auto":
        native = not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else None
    return torch.bfloat16 if setting == "bf16" else torch.float16


#: ``run.compile = "auto"`` compiles a phase of at least this many optimizer steps. A compile
#: costs tens of seconds on a 2-core CPU (a one-off probe: 38 s for a fixed VGG that then
#: trained 1.26x faster), which a phase this long pays back; shorter phases (tests, smoke
#: runs) stay eager. ``benchmarks/finetune_compile.py`` measures the trade.
COMPILE_MIN_STEPS = 1000


@dataclass(frozen=True)
class CompileChoice:
    """Whether a fixed-architecture phase trains a compiled net, and why (the log's and the
    plan's words): see :func:`compile_choice`."""

    on: bool
    reason: str

    def apply(self, model: nn.Module) -> nn.Module:
        """``model``, compiled in place when :attr:`on` (:meth:`torch.nn.Module.compile`: its
        ``state_dict`` keys, hence checkpoints, kept best states and saved weights, stay those
        of the plain module). Never ``copy.deepcopy`` a compiled module: the copy would call
        the original's compiled forward."""
        if self.on:
            model.compile()
        return model

    def __str__(self) -> str:
        return f"{'compiled' if self.on else 'not compiled'} ({self.reason})"


def compile_unsupported(device: torch.device) -> str | None:
    """Why ``torch.compile`` (inductor) cannot train on ``device`` here, or None when it can.

    The rule, checked without compiling anything: torch has ``nn.Module.compile`` (2.2 and
    later) and dynamo supports this Python; on the CPU, a C++ compiler that inductor names
    (``torch._inductor.config.cpp.cxx``, ``g++`` by default) is on the PATH; on CUDA, a GPU
    is there and Triton supports it (compute capability 7.0 or more)."""
    if not hasattr(nn.Module, "compile"):
        return f"torch {torch.__version__} has no nn.Module.compile (torch >= 2.2 has)"
    try:  # (``import torch._dynamo`` here would make ``torch`` a local name of this function)
        from torch import _dynamo
        from torch._inductor import config as inductor
    except ImportError as exc:  # a stripped-down torch build
        return f"torch.compile is not importable ({exc})"
    if not _dynamo.is_dynamo_supported():
        return f"torch {torch.__version__} cannot compile on Python {sys.version.split()[0]} here"
    if device.type == "cpu":
        cxx = inductor.cpp.cxx
        names = [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c]  # None: a conda g++, not installed
        if not any(shutil.which(c) for c in names):
            return f"no C++ compiler for inductor on the PATH (looked for {', '.join(names) or 'none named'})"
        return None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton is missing or does not support this GPU (compute capability < 7.0)"
    return f"grownet does not compile on {device.type}"


def compile_choice(setting: str, device: torch.device, *, steps: int) -> CompileChoice:
    """Resolve the recipe's ``run.compile`` for a phase whose architecture no longer changes
    (a search's fine-tune, a control, a ticket's fine-tune and fresh control) of ``steps``
    optimizer steps on ``device``; a growing phase is never compiled (its net changes shape
    at every growth, and each shape would compile again).

    ``off``: never. ``on``: always. ``auto``: on the CPU, when :func:`compile_unsupported`
    finds nothing against it and the phase has at least :data:`COMPILE_MIN_STEPS` steps (on a
    GPU the compiled epochs measured slower: ``benchmarks/finetune_compile.py``).

    Raises:
        ConfigError: ``on`` where torch.compile cannot run (the message says why).
    """
    if setting == "off":
        return CompileChoice(False, "run.compile = off")
    why = compile_unsupported(device)
    if setting == "on":
        if why is not None:
            raise ConfigError(f"run.compile: on, but torch.compile cannot train here: {why}; "
                              "set run.compile = auto or off")
        return CompileChoice(True, f"run.compile = on, inductor on {device.type}")
    if device.type != "cpu":  # measured: on an H200 the compiled fine-tune epoch was slower (README, Benchmarks)
        return CompileChoice(False, f"run.compile = auto: not on {device.type} (compiled epochs measured slower on a GPU; "
                                    "run.compile = on forces it)")
    if why is not None:
        return CompileChoice(False, f"run.compile = auto: {why}")
    if steps < COMPILE_MIN_STEPS:
        return CompileChoice(False, f"run.compile = auto: {steps} steps, fewer than the {COMPILE_MIN_STEPS} "
                                    "that pay for a compile")
    return CompileChoice(True, f"run.compile = auto: {steps} steps, inductor on {device.type}")


def prepare_model(model: nn.Module, device: torch.device, *, channels_last: bool) -> nn.Module:
    """Move ``model`` to ``device`` in place, in channels-last format if asked; return it."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _is_channels_last(model: nn.Module) -> bool:
    for p in model.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _autocast(device: torch.device, amp: bool | torch.dtype | None):
    if not amp or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = amp if isinstance(amp, torch.dtype) else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return torch.autocast("cuda", dtype=dtype)


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    lr_at: Callable[[int], float] | None = None,
    amp: bool | torch.dtype | None = False,
    label_smoothing: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
    sync: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader`` with cross-entropy.

    Args:
        model: the net (its device and memory format are used for the inputs).
        loader: yields ``(images (N, C, H, W), labels (N,))`` on the model's device; ``len``
            gives the number of batches.
        optimizer: any torch optimizer (DessiLBI or SGD).
        lr_at: learning rate for batch index ``i`` of this epoch; set on every parameter
            group before the step. ``None`` keeps the groups' rates.
        amp: autocast on CUDA (True picks bf16 where supported, else fp16; or a dtype).
            fp16 uses a gradient scaler. Ignored on the CPU.
        label_smoothing: cross-entropy label smoothing.
        progress: called as ``progress(batches_done, batches_total)`` after every step.
        sync: data-parallel hook (:meth:`grownet.distributed.DistContext.sync`): sums a
            tensor over the ranks in place. With it, the non-finite check is taken jointly
            (every rank stops at the same batch) and the returned statistics cover every
            rank's samples.

    Returns:
        :class:`EpochStats`. A non-finite loss stops the epoch before its step
        (``finite=False``); on CUDA it is detected within 16 batches.
    """
    device = next(model.parameters()).device
    channels_last = _is_channels_last(model)
    ctx = _autocast(device, amp)
    fp16 = isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.float16
    scaler = torch.amp.GradScaler("cuda") if fp16 else None
    total = len(loader)  # type: ignore[arg-type]
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    bad = torch.zeros((), device=device, dtype=torch.bool)
    samples, finite = 0, True
    model.train()
    start = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if lr_at is not None:
            lr = float(lr_at(i))
            for group in optimizer.param_groups:
                group["lr"] = lr
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx:
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        if sync is not None:  # data-parallel: every rank takes the same decision (CPU: each batch)
            bad |= ~torch.isfinite(loss)
            if (device.type == "cpu" or (i + 1) % _CUDA_CHECK_EVERY == 0) and bool(sync(bad.to(torch.int32)) > 0):
                finite = False
                break
        elif device.type == "cpu":
            if not torch.isfinite(loss):
                finite = False
                break
        else:
            bad |= ~torch.isfinite(loss)
            if (i + 1) % _CUDA_CHECK_EVERY == 0 and bool(bad):
                finite = False
                break
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            loss_sum += loss.detach().double() * y.shape[0]
            correct += (logits.argmax(1) == y).sum()
        samples += int(y.shape[0])
        if progress is not None:
            progress(i + 1, total)
    if sync is not None:
        if finite and device.type != "cpu" and bool(sync(bad.to(torch.int32)) > 0):
            finite = False
        totals = sync(torch.stack([loss_sum, correct.double(), torch.tensor(float(samples), device=device, dtype=torch.float64)]))
        loss_sum, correct, samples = totals[0], totals[1].long(), int(totals[2])
    elif finite and device.type != "cpu" and bool(bad):
        finite = False
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    if not finite or samples == 0:
        return EpochStats(float("nan"), float(correct) / max(samples, 1), samples, seconds, finite)
    return EpochStats(float(loss_sum) / samples, float(correct) / samples, samples, seconds, True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, amp: bool | torch.dtype | None = False,
             sync: Callable[[torch.Tensor], torch.Tensor] | None = None) -> EvalStats:
    """Mean cross-entropy and accuracy of ``model`` (in eval mode) over ``loader``; with
    ``sync`` (data-parallel, see :func:`train_epoch`) over every rank's share of it."""
    device = next(model.parameters()).device
    channels_last = _is_channels_last(model)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    samples = 0
    with _autocast(device, amp):
        for x, y in loader:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            samples += int(y.shape[0])
    model.train(was_training)
    if sync is not None:
        totals = sync(torch.stack([loss_sum, correct.double(), torch.tensor(float(samples), device=device, dtype=torch.float64)]))
        loss_sum, correct, samples = totals[0], totals[1].long(), int(totals[2])
    if samples == 0:
        return EvalStats(float("nan"), float("nan"), 0)
    return EvalStats(float(loss_sum) / samples, float(correct) / samples, samples)

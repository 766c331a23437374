"""DessiLBI's step against torch.optim.SGD(momentum=0.9, foreach=True), measured in one process.

Evidence (the 2-core Xeon @ 2.50GHz, torch 2.13 CPU, 2 threads). Before Γ's per-filter
factors (stored Γ, commit d631e73), idle machine (load average 1.0-1.5), four runs on
2026-11-21: ``dessilbi/sgd: step`` 2.12x, 2.15x, 2.00x, 2.14x; ``train step`` 1.03x, 1.04x,
1.02x, 0.89x. With the factors and D written (15 passes, below), idle, 2026-11-26 (load
average 0.6, nothing else running): ``dessilbi/sgd: step 1.89x, train step 1.00x`` (2.42 ms
against SGD's 1.28 ms, of a 250 ms training step). With the coupling pass (13 passes), two
runs right after, idle (load average 0.9 and 0.7 at the start): ``dessilbi/sgd: step 1.74x,
train step 1.00x`` and ``step 1.72x, train step 1.00x``; ``dessilbi compiled/sgd: step
1.42x`` and ``1.40x``, train step 0.99-1.00x (compile 3 s, the inductor cache warm); in
one-thread CPU time 1.82x and 1.03x.

Why the eager step stays above the 1.6x of issue 17: SGD's foreach step passes over
weight-sized arrays 8 times (mul_, add_, add_). DessiLBI's eager step with weight decay makes
about 15: D = W − Γ from V and the per-filter factors (3), V += (α/μ)D (3), torch's fused
momentum-SGD step (5), W −= (κα/μ)D (3), ‖V_g‖ (1): W's and V's updates each need the other's
old value, and the momentum step's weight decay reads the old W. Without weight decay (the
growing phase of every bundled recipe, and this benchmark) the coupling goes first, W and V
both moved by one pass of torch's fused SGD kernel with Γ as its "gradient" (the only torch
kernel that writes two tensors; ``_fused_coupling_`` has the algebra), so the step makes 13:
Z = −(1 − a)Γ from V and the factors (2), the coupling pass (5), the momentum step (5), the
norms (1). Z's pass is what is left above the target: the factors differ per filter and no
eager kernel scales by them while it does something else. Also probed (conv tensors alone,
one interleaved script where the 15-pass step read 2.00x SGD): D in a preallocated buffer,
2.00x; both updates as per-filter ``baddbmm`` into a second V buffer, 2.53x; the coupling
pass, 1.99x against 2.33x in a second such script. ``compiled=True`` has torch.compile
generate one kernel per tensor that reads W, g, b, V and writes W, b, V (7 passes, the norm
fused in): the traffic floor, 1.03-1.07x SGD in CPU time. It is not the default: the step is
1% of a training step here (train step 1.00x either way), so its 3-30 s compile does not pay
back in a search.

Probed later the same day, in one process with the script's six optimizers interleaved (so
each step finds the others' data in cache, as here): Z written into a buffer kept between
steps instead of a new tensor, 1.78x against 1.69x: the kept buffer is cold, the allocator
hands back memory a step just freed; the four passes run tensor by tensor (cache reuse
within a tensor), 1.67x against 1.68x; Z and the norms left out altogether (wrong results,
to price them), 1.33x and 1.41x. With two or three optimizers instead of six every ratio
rises to about 1.85x (SGD gains more from a warm cache): the ratio depends on the cache
state the benchmark sets up, and the script's own runs of one build range 1.68-1.78x.

Probed in the seventh session (same machine, idle apart from the probe): the step's parts
timed one after another on the VGG's conv tensors, medians of 200: Z's multiply 0.26-0.36 ms,
the coupling pass 0.41 ms, the fused momentum step 0.35 ms, the norms 0.17 ms, the factors'
kernels 0.12 ms; a fill of the same tensors (one write, no read) 0.13 ms. Writes, not reads,
set the cost here (the tensors sit in the 480 MB L3): SGD's foreach step writes 3 weight-sized
arrays, this one 5 (Z, then W and V, then W and the buffer); 3 (W, V, the buffer) is the
floor, which only the generated kernel reaches (``compiled=True``). Running the four passes chunk by chunk so that each chunk stays in L2
(2 MB per core) made it slower, not faster (3.75x, 1.91x and 1.80x SGD's for chunks of 16k,
64k and 256k elements against 1.72x unchunked: per-call overhead outgrows the cache gain).
The script's own median the same day: ``dessilbi/sgd: step 1.74x, train step 1.01x``.

The second net, the one grownet grew in reports/cifar10-gpu/ (13 conv tensors of 16-24
filters, 27 BatchNorm and linear tensors, 48.7k parameters), is what searches actually step:
there the step is per-tensor Python and small kernels, not traffic. Same idle machine, same
day: ``grown net: dessilbi/sgd: step 3.00x`` with the previous release's optimizer, ``2.50x``
and ``2.52x`` after the step stopped searching the param groups for every tensor and made Γ's
factors and their write-back one kernel call each (train step 0.99-1.03x either way).

Ninth session, same machine, idle (nothing else running), 2026-11-26 20:10-20:45:
- The issue's direction taken one step further, probed and dropped: keep P = W + κV. The
  coupling cancels in P (κ·α/μ = a), so P takes torch's fused momentum step unchanged; with V
  stored divided by α/μ, V_t = (1 − a − (α/μ)·s)·V + (α/μ)·P is one ``addcmul``, and
  W = P − κV one ``add``: 12 passes and 4 writes against the coupling pass's 13 and 5. It
  measured slower: ``dessilbi/sgd: step 1.91x`` in this script (5 runs) against 1.70x, and
  1.87-1.90x against 1.67-1.76x for the step right after its own backward (three runs of a
  probe). It touches five weight-sized tensors (P, V, g, b, and W, whose write without a read
  still costs a read for ownership) where the coupling pass touches four (its Z stays in
  cache). Passes are not the cost model here; tensors touched are.
- The order of the step-alone timing: two identical default DessiLBI optimizers in one
  interleave measured 1.66-1.71x and 1.53-1.61x SGD's with the order alternating forward and
  reversed (a function follows the same neighbours each time, whose data the cache holds);
  with the order shuffled anew each repetition, 1.62-1.69x and 1.59-1.66x. The script
  shuffles now. Which optimizers share the interleave matters as much: adding two more moved
  the same code to 1.63-1.85x. No step-alone figure here is good to better than about 0.1.
- The step's Python work, trimmed (the layout check of a filter state once until an entry is
  assigned or the parameter changes layout, the fused-path check in fewer calls, every
  tensor's Γ factors in two kernels instead of one per tensor, one fused momentum call unless
  a buffer is new, the prox factor in four kernels instead of five): ``grown net:
  dessilbi/sgd: step`` 2.58x before, 2.13x and 2.11x after (two runs of the script); the
  VGG's ``dessilbi/sgd: step`` 1.70x before, 1.70x and 1.66x after; train step 1.00-1.01x.
- (c) above, new: the step right after its own backward, VGG 1.66x and 1.70x (compiled
  1.18x, 1.19x), grown net 1.68x and 1.65x (compiled 1.64x, 1.54x).

Models: a VGG-style CIFAR net built by grownet (4 stages of one 3x3 conv-BN-ReLU each, widths
64-128-256-512, 2x2 max-pool between stages, global average pool, linear; 1.55 M conv weights,
all carrying Γ under DessiLBI), the issue's target; then the grown net above (its
architecture.json); batch 128 of random 3x32x32 inputs, CPU.

Measured: (a) ``optimizer.step()`` alone, on fixed gradients; (b) one whole training step
(zero_grad, forward, cross-entropy, backward, step), (c) the step inside it, right after
its own backward (the cache state a training run gives the step), and, on the CPU, (d) the
default step's parts, in an interleave of their own (:func:`step_parts`). The methods run in a
shuffled order within every repetition (seeded, new each time) and medians of wall-clock time
are reported, because this machine is shared. DessiLBI runs with the reference hyperparameters (lr 0.05, kappa 1,
mu 100, lam 1, momentum 0.9); its cost does not depend on how many filters are in Γ's support
(no branch on the data). DessiLBI is measured twice: as built by default (on CPU the
``fused`` path) and with ``compiled=True`` (its compile time is printed; the kernel is made
once per process, before the timings). The script repeats the whole measurement ``--runs``
times (each run with fresh copies of the model and optimizers) and reports the medians of the
runs' ratios. Also printed, for context: torch's fused SGD and DessiLBI's ``foreach=True``
and per-tensor reference (``foreach=False``) paths, step alone; and the step-alone ratios in
CPU time of one thread, which other processes on the machine disturb far less than
wall-clock time with several threads (a busy core stalls every parallel region).

Tenth session, same machine, idle, 2026-11-26 21:10-21:45, probed and dropped:
- The four passes' Z chunk by chunk into one small buffer reused for every chunk (so that
  only the first chunk's Z is cold), each chunk's coupling pass right after its Z:
  ``dessilbi/sgd: step`` 1.97x, 1.86x and 1.83x for chunks of 128k, 384k and 1M elements,
  against 1.67x unchunked in the same script (3 runs each).
- For nets of small tensors, the per-filter kernels (Z, the norms) run once per row length
  over the rows of all tensors of that length concatenated, not once per tensor: the grown
  net's step 499 µs against 432 µs per tensor (fused path), 518 against 396 (foreach path):
  the copies and views cost more than the kernel calls saved.
- Leaner Python in ``DessiLBI.step`` (the write-back loop skipped when no buffer is new,
  ``_init_group`` inlined): the grown net's step 394 µs against 399 µs; ``_fusable`` comparing
  strides with ``map`` over C methods: 16.2 µs against 16.5 µs for the 13 conv tensors. Within
  noise, neither kept.
- Found: torch's fused SGD kernel splits every tensor across the intra-op threads, however
  small, so on a net of small tensors its fork and join cost more than the work: 27 tensors
  of 4096 elements take 85 µs with 2 threads and 24 µs with 1 (``torch._fused_sgd_``, the
  momentum step alone), and the grown net's whole step 430 µs (fused path) against 383 µs
  with the intra-op threads set to 1 around it and 410 µs on the foreach path. Changing
  torch's thread count inside ``step()`` is a side effect an optimizer must not have; the
  default stays the fused path (the VGG's step is 1.70x SGD's on it, 2.05x on the foreach
  path).

Eleventh session, same machine, idle, 2026-11-26 22:10-22:50: where the time above the
kernels goes. The step's kernels alone (the same torch calls in a plain function, no Python
around them) read 1.47x SGD's step in a seven-function interleave in which the step read
1.69x; the new context line (d) splits the step in its own interleave: ``step 1.65x,
functional 1.53x, fused path 1.48x`` for the VGG, ``1.91x, 1.53x, 1.25x`` for the grown net.
So the step's Python bookkeeping, not its kernels, is what stands between it and 1.6x. It
costs most run cold: right after other optimizers' steps (as here) the layout check
``_fusable`` took 91 µs for the VGG's two param groups against 28 µs when run back to back,
``DessiLBI._init_group`` 51 µs against 11 µs (SGD's own 23 µs). Priced in this script's
interleave (each figure the median of 5 runs, from two to four processes; unsafe shortcuts,
only to price them): the layout check made a no-op, VGG 1.63-1.68x against 1.68-1.73x, grown
net 1.92-1.99x against 2.19-2.26x; a cheaper check (every tensor contiguous, of one dtype and
device), VGG 1.66-1.67x, grown net 2.12-2.13x; the whole path choice and check skipped, VGG
1.56-1.62x; the param groups without structure on the foreach path instead of the fused
kernel, VGG 1.72-1.74x against 1.72x (no gain). Even with no layout check at all (torch's own
fused SGD has none; this one keeps a tensor of another layout from being read as raw memory
of the parameter's) the VGG's step would sit at the target only within this script's noise,
so the check stays.

Twelfth session, another machine: an AMD EPYC, 2 cores, 32 MiB L3, where the VGG's step no
longer sits in cache (W, g, b, V and Z are 6.2 MB each), torch 2.13 CPU, idle (load average
0.6), 2026-11-27 00:48: ``dessilbi/sgd: step 2.13x, train step 1.01x``, ``dessilbi
compiled/sgd: step 1.52x, train step 0.98x``; grown net 2.53x and 1.00x, compiled 1.72x and
1.02x; the parts, VGG ``step 2.10x, functional 1.81x, fused path 1.73x``, grown net ``1.59x,
1.33x, 1.02x``. Timed inside ``step()`` (medians of 100, shuffled with SGD's step): the
kernels 1.75-1.81 ms against SGD's whole step of 1.03-1.05 ms, the bookkeeping about 0.2 ms
(``_init_group`` 21 and 30 µs, ``_fusable`` 21 and 52 µs for the filter and the plain group,
the write-back 12 µs). Probed and dropped: the fused path's four passes run tensor by tensor,
so that one tensor's Z is alive at a time and its V stays in cache: VGG 1.49-1.53x against
1.53-1.62x (three processes), the VGG at twice the widths 1.75-1.76x against 1.79-1.87x, but
the grown net 1.61-1.64x against 1.28-1.34x (13 small tensors, four calls each); choosing
between the two by size would tune a second path to one cache. Here even the compiled kernel
reads 1.52x: no eager step reaches 1.6x on this machine.

Fifteenth session, the same EPYC, idle, 2026-11-27 08:00-08:55 (probes, not kept):
- The parts of the VGG's step, alone, medians of 200 (ms, warm / after a 64 MB flush): SGD's
  whole step 1.11 / 1.25, DessiLBI's 1.87 / 2.23; Z 0.28 / 0.40, the coupling pass 0.41 /
  0.51, the momentum pass 0.41 / 0.52, the norms 0.19 / 0.31. Back to back with every tensor
  warm, SGD's step read 0.37-0.56 ms, DessiLBI's 1.34-1.46 ms: SGD's three tensors (19 MB)
  stay in the L3, DessiLBI's five (31 MB) do not.
- The fused path block by block over filter rows (each block's Z, coupling, momentum and
  norms together, so that its tensors stay in cache; bit-equal to the default over 20 steps):
  2.29x, 2.04x and 2.01x SGD's step for blocks of 128k, 256k and 512k elements, against 2.10x
  for the default, in a step-alone interleave of seven optimizers (3 runs).
- Why no sequence of eager kernels gets under 13 passes: per filter the coupling maps (W, V)
  by M = [[1 - a, a*s], [c, 1 - c*s]] (s the filter's factor of Gamma). torch's fused SGD
  kernel, the only one that writes two tensors, maps its two by a matrix of scalars (its third
  input aliased to either, or any other tensor), and a per-filter rescaling of W or V before
  or after it leaves M11*M22 / (M12*M21) unchanged: one constant for the kernel, (1 - a)(1 -
  c*s) / (a*c*s) for the coupling, different for every filter. A per-filter ``lerp_`` (3 passes)
  changes it, but the second row then needs another: 10 passes for the coupling against 7. So
  it takes a third weight-sized tensor (Z) or a second two-output pass.
- Priced, computing a wrong step: a Z-free route touching 4 tensors in 12 passes
  (``W.addcmul_``, the fused momentum step, ``torch.addcmul(W, V, col, out=V)``, the norms)
  read 1.57x, 1.72x and 1.71x SGD's step where the default read 1.83x, 1.89x and 1.97x, in one
  interleave. Even that is above 1.6x on this machine.

On CUDA (``--device cuda``; a lent NVIDIA H200, torch 2.11.0+cu130, 2026-11-26, 5 runs):
``dessilbi/sgd: step 3.89x, train step 1.18x``, ``dessilbi compiled/sgd: step 3.24x, train
step 1.16x``; the step alone is 0.48 ms against SGD's 0.13 ms, kernel launches rather than
traffic at this size. Tenth session, two lent H200s (torch 2.11.0+cu130, 16 intra-op
threads, 2026-11-26 21:20-21:27, reports/gpu-checks/), after the ninth session's trims of
the step's Python work: ``dessilbi/sgd: step 3.19x, train step 1.14x`` (the default, the
foreach path on CUDA), ``dessilbi compiled/sgd: step 2.98x, train step 1.15x``; grown net
``step 3.71x, train step 1.17x``, compiled 3.04x and 1.16x; ``fused=True``, which runs on
CUDA since this session, 3.32x. In the run before, with the fused path as CUDA's default:
3.08x against ``foreach=True``'s 3.01x. A third run, again with the fused path as the
default, added the line ``step back to back`` (50 steps, then one synchronize: the host's
time to launch them, what a training run that does not wait for each step pays): VGG fused
438 µs against foreach 384 µs, SGD 103 µs (4.23x, 3.71x); grown net fused 1144 µs (4.59x).
An alternating A/B on one machine (reports/device-runs/fused_vs_foreach_cuda.py, 100 steps
back to back, medians of 10): grown net fused 1156 µs against foreach 971 µs (SGD 206),
VGG 634 against 625 µs (SGD 123); training steps back to back 1.28x and 1.23x SGD's (grown),
1.24x and 1.19x (VGG). The fused path is no faster there (the per-tensor kernels for Γ's
factors and norms are on both paths; a step of these sizes is the host launching kernels),
so CUDA's default stays foreach. The lent machines' hosts differ (SGD's grown-net step
back to back 206-269 µs): only ratios from one run compare. The final code, on a fourth
H200 (21:53): ``dessilbi/sgd: step 3.19x, train step 1.20x``, compiled 3.07x and 1.26x; grown
net 3.53x and 1.22x; back to back VGG 389 µs (4.03x SGD's), ``fused=True`` 401 µs (4.16x),
grown net 1265 µs (4.69x).

Run: ``python benchmarks/optimizer_step.py [--runs 5] [--step-reps 50] [--train-reps 10]
[--threads N] [--device cpu|cuda]``; the last four lines read ``dessilbi/sgd: step 1.66x, train step
1.00x (medians of 5 runs)``, the same for ``dessilbi compiled``, then both for the grown net
(``grown net: dessilbi/sgd: step 2.11x, ...``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from _machine import machine  # benchmarks/ is sys.path[0] when run as a script

from grownet import _dessilbi
from grownet.arch import Architecture
from grownet.models import build_model
from grownet.optim import DessiLBI, dessilbi_param_groups

BATCH = 128
WIDTHS = [[64], [128], [256], [512]]
#: The net grownet grew on all of CIFAR-10 (the GPU reference run): 13 conv layers of 16-24 filters.
GROWN = REPO / "reports" / "cifar10-gpu" / "architecture.json"

def interleaved(
    fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2, clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], object] | None = None, seed: int = 0,
) -> dict[str, float]:
    """Median seconds (of ``clock``) per call of each function; every repetition runs each
    once, in an order shuffled anew (seeded) each time, so that each function follows every
    other about equally often: the cache holds the last function's data, and with a fixed
    order (or one alternating with its reverse) a function always follows the same few.
    ``sync`` (on CUDA: wait for the queued work) runs inside every timed call."""
    names = list(fns)
    rng = random.Random(seed)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(reps):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            start = clock()
            fns[name]()
            if sync is not None:
                sync()
            times[name].append(clock() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}

def prepare(
    base: nn.Module, x: torch.Tensor, y: torch.Tensor, make_opt: Callable[[nn.Module], torch.optim.Optimizer]
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A copy of ``base`` and its optimizer after one step (the state exists: momentum
    buffers, V, Γ's factors); the gradients are kept for the step-alone timing."""
    model = copy.deepcopy(base)
    opt = make_opt(model)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return model, opt


def one_run(
    base: nn.Module, x: torch.Tensor, y: torch.Tensor, step_reps: int, train_reps: int, *,
    context: dict[str, Callable[[nn.Module], torch.optim.Optimizer]], sync: Callable[[], object] | None = None,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Median seconds of the step alone (every optimizer), of a whole training step and of
    the step inside it, right after its own backward (DessiLBI and SGD), each optimizer over
    its own copy of ``base``."""
    runs = {name: prepare(base, x, y, make) for name, make in {**MAKERS, **context}.items()}
    # (a) step alone, on the gradients left by setup().
    step = interleaved({name: runs[name][1].step for name in runs}, step_reps, sync=sync)

    # (b) whole training step, and the step's share of it.
    in_training: dict[str, list[float]] = {name: [] for name in MAKERS}

    def train_step(name: str, model: nn.Module, opt: torch.optim.Optimizer) -> Callable[[], None]:
        def run() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            if sync is not None:
                sync()
            start = time.perf_counter()
            opt.step()
            if sync is not None:
                sync()
            in_training[name].append(time.perf_counter() - start)

        return run

    warmup = 2
    train = interleaved({name: train_step(name, *runs[name]) for name in MAKERS}, train_reps, warmup=warmup, sync=sync)
    return step, train, {name: statistics.median(ts[warmup:]) for name, ts in in_training.items()}


HP = {"lr": 0.05, "kappa": 1.0, "mu": 100.0, "lam": 1.0, "momentum": 0.9}
MAKERS: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "dessilbi": lambda m: DessiLBI(dessilbi_param_groups(m), **HP),
    "dessilbi compiled": lambda m: DessiLBI(dessilbi_param_groups(m), compiled=True, **HP),
    "sgd": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, foreach=True),
}
CONTEXT: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "sgd fused": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, fused=True),
    "dessilbi foreach=True": lambda m: DessiLBI(dessilbi_param_groups(m), foreach=True, **HP),
    "dessilbi foreach=False": lambda m: DessiLBI(dessilbi_param_groups(m), foreach=False, **HP),
}
#: On CUDA, where DessiLBI's default is foreach and the per-tensor loop is not a GPU path.
CUDA_CONTEXT: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "sgd fused": CONTEXT["sgd fused"],
    "dessilbi fused=True": lambda m: DessiLBI(dessilbi_param_groups(m), fused=True, **HP),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="independent runs; the last line gives their medians")
    ap.add_argument("--step-reps", type=int, default=50, help="repetitions of the step-alone timing, per run")
    ap.add_argument("--train-reps", type=int, default=10, help="repetitions of the whole-train-step timing, per run")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (on CUDA every timed call ends with a synchronize)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    context, sync = CONTEXT, None
    if device.type == "cuda":
        context = CUDA_CONTEXT
        sync = functools.partial(torch.cuda.synchronize, device)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(machine())
    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    headline = measure("VGG", Architecture(family="vgg", stages=WIDTHS), x, y, args, context=context, sync=sync,
                       compile_note=True)
    grown = measure("grown net", Architecture.from_json(GROWN), x, y, args, context={}, sync=sync)
    for label, ratios in (("", headline), ("grown net: ", grown)):
        for name in ("dessilbi", "dessilbi compiled"):
            step_ratio = statistics.median(ratios[f"step {name}"])
            train_ratio = statistics.median(ratios[f"train step {name}"])
            where = "" if device.type == "cpu" else f", {device}"
            print(f"{label}{name}/sgd: step {step_ratio:.2f}x, train step {train_ratio:.2f}x "
                  f"(medians of {args.runs} runs{where})")
    return 0


def measure(
    label: str, arch: Architecture, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, *,
    context: dict[str, Callable[[nn.Module], torch.optim.Optimizer]], sync: Callable[[], object] | None,
    compile_note: bool = False,
) -> dict[str, list[float]]:
    """Every run's ratios to SGD ("step NAME", "train step NAME") for a net of ``arch``; prints
    each run and, on the CPU, the step alone in CPU time of one thread."""
    device = x.device
    torch.manual_seed(0)
    base = build_model(arch).to(device)
    n_struct = sum(p.numel() for g in dessilbi_param_groups(base) if g.get("structure") for p in g["params"])
    n_all = sum(p.numel() for p in base.parameters())
    n_conv = sum(1 for g in dessilbi_param_groups(base) if g.get("structure") for _ in g["params"])
    print(f"{label}: {arch.family} {arch.stages}, {n_all / 1e6:.3f} M parameters ({n_struct / 1e6:.3f} M in "
          f"{n_conv} tensors with Γ); batch {BATCH}x3x32x32")

    _, opt = prepare(base, x, y, MAKERS["dessilbi compiled"])
    start = time.perf_counter()
    opt.step()  # the first step with momentum buffers compiles
    if compile_note:
        print(f"compile: {time.perf_counter() - start:.1f} s, once per process (the kernel serves every run below)")

    ratios: dict[str, list[float]] = {}
    for r in range(args.runs):
        step, train, in_training = one_run(base, x, y, args.step_reps, args.train_reps, context=context, sync=sync)
        for name, sec in step.items():
            ratios.setdefault(f"step {name}", []).append(sec / step["sgd"])
        for name in ("dessilbi", "dessilbi compiled"):
            ratios.setdefault(f"train step {name}", []).append(train[name] / train["sgd"])
            ratios.setdefault(f"in training {name}", []).append(in_training[name] / in_training["sgd"])
        print(f"{label} run {r + 1}/{args.runs}: step (ms) " + ", ".join(f"{n} {step[n] * 1e3:.2f}" for n in MAKERS)
              + "; train step (ms) " + ", ".join(f"{n} {train[n] * 1e3:.1f}" for n in MAKERS)
              + "; its step (ms) " + ", ".join(f"{n} {in_training[n] * 1e3:.2f}" for n in MAKERS), flush=True)
    for name in context:
        print(f"context: step alone {name:24s} {statistics.median(ratios[f'step {name}']):.2f}x sgd's (median)")
    print(f"context: {label} step right after its own backward (in the training step): " + ", ".join(
        f"{n} {statistics.median(ratios[f'in training {n}']):.2f}x" for n in ("dessilbi", "dessilbi compiled"))
        + " sgd's (median)")
    if device.type == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        _, opts = zip(*(prepare(base, x, y, make) for make in MAKERS.values()))
        cpu = interleaved(dict(zip(MAKERS, (o.step for o in opts))), args.step_reps, clock=time.thread_time)
        torch.set_num_threads(threads)
        print(f"context: {label} step alone in CPU time of 1 thread: " + ", ".join(
            f"{n} {cpu[n] * 1e3:.2f} ms ({cpu[n] / cpu['sgd']:.2f}x)" for n in MAKERS))
        parts = [step_parts(base, x, y, args.step_reps, seed=r) for r in range(args.runs)]
        print(f"context: {label} the default step's parts (their own interleave, medians of {args.runs} runs): "
              + ", ".join(f"{n} {statistics.median(p[n] / p['sgd'] for p in parts):.2f}x" for n in PARTS) + " sgd's")
    else:  # a training run does not wait for each step: its cost is the host's time to launch it
        makers = {**MAKERS, **{k: v for k, v in context.items() if k.startswith("dessilbi")}}
        _, opts = zip(*(prepare(base, x, y, make) for make in makers.values()))
        per = back_to_back(dict(zip(makers, (o.step for o in opts))), args.step_reps, sync)
        print(f"context: {label} step back to back ({args.step_reps} steps, then one synchronize): " + ", ".join(
            f"{n} {per[n] * 1e6:.0f} us ({per[n] / per['sgd']:.2f}x)" for n in makers))
    return ratios


#: What :func:`step_parts` times besides SGD's step, outermost first.
PARTS = ("step", "functional", "fused path")


def step_parts(base: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int, seed: int = 0) -> dict[str, float]:
    """Median seconds of SGD's step and of DessiLBI's default CPU step (the fused path) at three
    depths, each over its own copy of ``base``, interleaved with each other only: "step",
    ``optimizer.step()``; "functional", ``grownet._dessilbi.dessilbi()`` on each param group's
    lists, built once (no walk of the groups and states); "fused path", the path it picks
    called directly (no path choice, no layout checks): the kernels and the Python around
    them. What the step's bookkeeping costs above its math."""
    _, sgd = prepare(base, x, y, MAKERS["sgd"])
    step, functional, direct = (prepare(base, x, y, MAKERS["dessilbi"])[1] for _ in range(3))

    def calls(opt: torch.optim.Optimizer, fn: Callable[..., None]) -> Callable[[], None]:
        groups = []
        for group in opt.param_groups:
            lists: tuple[list, ...] = ([], [], [], [], [], [])
            opt._init_group(group, *lists)  # the state exists (prepare() stepped once): nothing is created
            assert _dessilbi._fusable(*lists[:5], devices=("cpu",)), "the default CPU step is the fused path"
            groups.append((group, lists))

        def run() -> None:
            for group, lists in groups:
                fn(*lists, **{k: group[k] for k in _STEP_KEYS})

        return run

    def fused(*lists: list, **hp: object) -> None:
        _dessilbi._fused_dessilbi(*lists, _dessilbi._Step(**hp))  # type: ignore[arg-type]

    fns = {"sgd": sgd.step, "step": step.step, "functional": calls(functional, _dessilbi.dessilbi),
           "fused path": calls(direct, fused)}
    return interleaved(fns, reps, seed=seed)


#: A param group's entries that are the step's hyperparameters (the fields of grownet's _Step,
#: also arguments of grownet._dessilbi.dessilbi).
_STEP_KEYS = tuple(f.name for f in dataclasses.fields(_dessilbi._Step))


def back_to_back(fns: dict[str, Callable[[], object]], steps: int, sync: Callable[[], object] | None,
                 repeats: int = 5) -> dict[str, float]:
    """Median over ``repeats`` of the seconds per call of ``steps`` calls of each function in a
    row with one ``sync`` at the end (on CUDA: the throughput of steps that nobody waits for,
    bound by the host's time to launch them), the functions in turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if sync is not None:
                sync()
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            if sync is not None:
                sync()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(ts) for name, ts in times.items()}


if __name__ == "__main__":
    raise SystemExit(main())

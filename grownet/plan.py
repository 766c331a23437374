"""A search's plan before it trains: the machine, the data, the budget and an estimated wall
time from a short timed probe, plus the run's remaining time while it trains.

:func:`plan_run` answers for a search not yet started (it loads the data and builds the seed);
:func:`estimate_run` for a search that holds its data and net (``grownet search`` draws it
before the first epoch, through :meth:`grownet.progress.Reporter.plan`). Both return a
:class:`RunPlan` of plain fields; ``str(plan)`` is the text the command line shows.

The estimate (every assumption errs long):

- the probe times a few DessiLBI steps of a copy of the net on the real training loader
  (the first step, which warms up, is not counted) and one evaluation batch; the run's RNGs
  and loader positions are restored afterwards, so a run with a plan trains exactly as one
  without;
- an epoch at ``m`` MACs takes ``(steps x step seconds + validation images x seconds per
  evaluated image) x m / probe MACs``: throughput inversely proportional to MACs, which
  overestimates nets larger than the probed one (fixed per-step costs do not grow);
- every round widens every layer by ``grow.ratio`` (``grow.min_add``, ``grow.max_width``), as if
  every layer saturated, clipped to the MACs / params budget and to the most MACs whose round
  and fine-tune fit the time budget, as the search clips it (the round after a clipped growth
  is the last: nothing more fits), held at ``budget.max_rounds`` and by the time budget where
  nothing larger fits; deepening is not counted; then rounds of the same net up to
  ``budget.min_rounds``;
- the fine-tune trains ``finetune.epochs`` epochs of the last round's net, then validation and
  test are evaluated once.

:class:`Forecast` turns a plan into the remaining seconds at any step, corrected by the
ratio of the epochs' measured to estimated seconds so far.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from .arch import Architecture
from .cost import cost
from .files import stored_dir
from .job import make_data, make_dessilbi, rng_scope, seed_all, seed_arch
from .models import build_model
from .policy import widen_all
from .recipe import Recipe, resolve_recipe
from .train import amp_dtype, compile_choice, evaluate, prepare_model, resolve_device, train_epoch, wants_channels_last

__all__ = ["Forecast", "PhaseEstimate", "RunPlan", "duration", "estimate_run", "plan_run", "probe", "schedule",
           "step_time_ratio"]

#: Probe limits: timed steps at most (after the warm-up step), and seconds of training after
#: which it stops (once one step is timed): under ~5 s on a 2-core CPU, warm-up included.
PROBE_STEPS = 8
PROBE_SECONDS = 3.0
#: Rounds the estimate follows at most (a recipe without budgets widens for a long time).
_MAX_ROUNDS = 200


@dataclass(frozen=True)
class PhaseEstimate:
    """One stretch of the plan: a growing round or the fine-tune.

    Attributes:
        phase: ``"grow"`` or ``"finetune"``. round: the growing round (the fine-tune: the last).
        epochs: epochs left to train in it. macs: estimated MACs of the net it trains.
        seconds: its estimated wall time.
    """

    phase: str
    round: int
    epochs: int
    macs: int
    seconds: float


@dataclass(frozen=True)
class RunPlan:
    """What a search will do and how long it should take (see the module docstring).

    Attributes:
        device: where it trains (``"cpu"``, ``"cuda:0 (NAME)"``). threads: torch's CPU threads.
        recipe: the recipe's name or path as given (``""`` when unknown).
        dataset: the dataset's name. train_images, val_images, test_images: split sizes.
        batch_size, steps_per_epoch: the training loader's.
        max_macs, max_params, max_rounds, time_budget: the recipe's budget (0: none).
        macs, params: the probed net's (the seed; on resume the present net).
        step_seconds: measured seconds per training step. eval_image_seconds: measured
            seconds per evaluated image. probe_steps: steps timed. probe_seconds: the probe's
            wall time, warm-up included.
        elapsed: seconds the run had trained before (a resumed run; 0 for a new one).
        phases: the estimated rounds and fine-tune still to train, in order.
        final_eval_seconds: the estimated closing validation and test pass.
        compile: whether the fine-tune trains a compiled net, and why (``run.compile``; the
            estimate does not count the compile nor its speed-up).
    """

    device: str
    threads: int
    recipe: str
    dataset: str
    train_images: int
    val_images: int
    test_images: int
    batch_size: int
    steps_per_epoch: int
    max_macs: int
    max_params: int
    max_rounds: int
    time_budget: float
    macs: int
    params: int
    step_seconds: float
    eval_image_seconds: float
    probe_steps: int
    probe_seconds: float
    elapsed: float
    phases: tuple[PhaseEstimate, ...]
    final_eval_seconds: float
    compile: str = ""

    @property
    def rounds(self) -> int:
        """The last growing round the plan expects (``max_rounds`` when that is set and sooner)."""
        grow = [p.round for p in self.phases if p.phase == "grow"]
        return max(grow) if grow else max((p.round for p in self.phases), default=1)

    @property
    def estimated_seconds(self) -> float:
        """Estimated seconds from now to the end of the run."""
        return sum(p.seconds for p in self.phases) + self.final_eval_seconds

    def epoch_seconds(self, macs: int) -> float:
        """Estimated seconds of one epoch (training and validation) of a net of ``macs`` MACs."""
        one = self.steps_per_epoch * self.step_seconds + self.val_images * self.eval_image_seconds
        return one * macs / self.macs

    def eval_seconds(self, macs: int) -> float:
        """Estimated seconds of the closing validation and test pass at ``macs`` MACs."""
        return (self.val_images + self.test_images) * self.eval_image_seconds * macs / self.macs

    def lines(self) -> list[str]:
        """The plan as a few lines of text (what ``grownet search`` shows before training)."""
        m = 1e6
        budget = [f"max {self.max_macs / m:.1f}M MACs" if self.max_macs else "no MACs limit",
                  f"max {self.max_params / m:.2f}M params" if self.max_params else "no params limit",
                  f"at most {self.max_rounds} rounds" if self.max_rounds else "no round limit",
                  f"time budget {duration(self.time_budget)}" if self.time_budget else "no time budget"]
        grow = [p for p in self.phases if p.phase == "grow"]
        parts = []
        if grow:
            path = " -> ".join(f"{p.macs / m:.1f}M" for p in grow)
            parts.append(f"{len(grow)} round{'s' * (len(grow) != 1)} at {path} MACs "
                         f"{duration(sum(p.seconds for p in grow))}")
        parts += [f"fine-tune {p.epochs} epoch{'s' * (p.epochs != 1)} at {p.macs / m:.1f}M MACs {duration(p.seconds)}"
                  for p in self.phases if p.phase == "finetune"]
        return [
            f"device    {self.device}, {self.threads} CPU thread{'s' * (self.threads != 1)}",
            *([f"recipe    {self.recipe}"] if self.recipe else []),
            f"data      {self.dataset}: {self.train_images:,} train / {self.val_images:,} val / {self.test_images:,} "
            f"test images; batch {self.batch_size}, {self.steps_per_epoch} steps per epoch",
            f"budget    {', '.join(budget)}",
            f"estimate  about {duration(self.estimated_seconds)} to go"
            + (f" ({duration(self.elapsed)} so far)" if self.elapsed >= 1 else "") + ": "
            f"{'; '.join(parts) or 'the closing evaluation only'}",
            f"          (probe: {self.probe_steps} steps at {self.macs / m:.1f}M MACs, {self.step_seconds:.3g} s each; "
            "assumes every layer widens each round)",
            *([f"compile   fine-tune {self.compile}"] if self.compile else []),
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"2.3 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---- the probe ----------------------------------------------------------------------------------


class _Head:
    """The first batches of ``loader``: ``steps`` of them, fewer once ``deadline`` (a
    ``clock`` time) has passed with ``least`` batches handed out."""

    def __init__(self, loader: Any, steps: int, *, deadline: float = math.inf, least: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.loader, self.steps, self.deadline, self.least, self.clock = loader, steps, deadline, least, clock

    def __len__(self) -> int:
        return min(self.steps, len(self.loader))

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.loader):
            if i >= self.steps or (i >= self.least and self.clock() > self.deadline):
                return
            yield batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe(model: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer], data: Any, *,
          device: torch.device, amp: Any = None, steps: int = PROBE_STEPS,
          seconds: float = PROBE_SECONDS, clock: Callable[[], float] = time.perf_counter) -> tuple[float, float, int, float]:
    """Time training steps of a copy of ``model`` on ``data.train`` and one evaluation batch of
    ``data.val``, leaving ``model``, the global RNGs and the loaders' positions as they were.
    ``clock``: the timer, in seconds.

    Returns:
        ``(seconds per step, seconds per evaluated image, steps timed, probe seconds)``.
    """
    start = clock()
    net = copy.deepcopy(model)
    loaders = [data.train, data.val if len(data.val) else data.test]
    with _left_as_they_were(device, loaders):
        stamps: list[float] = []

        def stamp(done: int, total: int) -> None:
            _sync(device)
            stamps.append(clock())

        # the first step warms up (allocations, the epoch's first augmented chunk): not timed
        head = _Head(data.train, steps + 1, deadline=clock() + seconds, least=2, clock=clock)
        _sync(device)
        t0 = clock()
        train_epoch(net, head, make_optimizer(net), amp=amp, progress=stamp)
        times = [b - a for a, b in zip(stamps, stamps[1:])] or [stamps[0] - t0]
        batch = _Head(loaders[1], 1)
        _sync(device)
        t1 = clock()
        images = evaluate(net, batch, amp=amp).samples
        _sync(device)
        per_image = (clock() - t1) / max(1, images)
    return sum(times) / len(times), per_image, len(times), clock() - start


def step_time_ratio(new: nn.Module, present: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
                    data: Any, *, device: torch.device, amp: Any = None, steps: int = PROBE_STEPS,
                    seconds: float = 2 * PROBE_SECONDS, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per training step of ``new`` over ``present``, each trained as a copy with its
    own ``make_optimizer`` on the first ``steps + 1`` batches of ``data.train`` (fewer once
    ``seconds`` of ``clock`` have passed with two pairs timed), leaving both models, the global
    RNGs and the loader's position as they were.

    The batches are cut before the timing, so the ratio is of training steps alone; an epoch
    also cuts and augments its batches, the same work for both nets, so the epochs' ratio is a
    little closer to 1 (a growth is judged a little slower than it is). The copies take one
    step each in turn (the first pair warms up, untimed; the order flips every pair), and the
    result is the median over pairs of new's step over present's. A load
    burst on the machine slows the two steps of a pair alike, and the median leaves out a pair
    it hit unevenly; timing one net's steps after the other's (two :func:`probe` calls) reads
    a burst during either as a change in the ratio.
    """
    nets = [copy.deepcopy(new), copy.deepcopy(present)]
    with _left_as_they_were(device, [data.train]):
        batches = list(_Head(data.train, steps + 1))  # cut once: the two copies step on the same batches
        opts = [make_optimizer(net) for net in nets]
        ratios: list[float] = []
        deadline = clock() + seconds
        for i, batch in enumerate(batches):
            spent = [0.0, 0.0]
            for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                _sync(device)
                t0 = clock()
                train_epoch(nets[k], [batch], opts[k], amp=amp)
                _sync(device)
                spent[k] = clock() - t0
            if i > 0:
                ratios.append(spent[0] / spent[1])
                if len(ratios) >= 2 and clock() > deadline:
                    break
    return statistics.median(ratios)


@contextlib.contextmanager
def _left_as_they_were(device: torch.device, loaders: list[Any]) -> Iterator[None]:
    """Run with the global RNGs (:func:`grownet.job.rng_scope`) and each loader's epoch (its
    order and augmentation) restored afterwards: a probe trains copies and leaves the run as
    it was."""
    epochs = [loader.epoch for loader in loaders]
    try:
        with rng_scope(device):
            yield
    finally:
        for loader, epoch in zip(loaders, epochs):
            loader.set_epoch(epoch)


# ---- the estimate -------------------------------------------------------------------------------


def schedule(arch: Architecture, recipe: Recipe, epoch_seconds: Callable[[int], float], *, phase: str = "grow",
             round: int = 1, done: int = 0, elapsed: float = 0.0) -> list[PhaseEstimate]:
    """The rounds and fine-tune still to train from ``arch`` in ``phase`` (round ``round``,
    ``done`` epochs of the phase trained, ``elapsed`` seconds so far), as the module docstring
    assumes, with ``epoch_seconds(macs)`` the seconds of one epoch."""
    r, b = recipe, recipe.budget
    c = cost(arch)
    macs, params = c.macs, c.params
    out: list[PhaseEstimate] = []

    def train_round(epochs: int) -> None:  # round ``round`` of the net at ``macs``
        nonlocal elapsed
        out.append(PhaseEstimate("grow", round, epochs, macs, epochs * epoch_seconds(macs)))
        elapsed += out[-1].seconds

    def over_time(at_macs: int) -> bool:  # another round and the fine-tune at ``at_macs`` pass the time budget
        return bool(b.time_budget) and elapsed + epoch_seconds(at_macs) * (r.grow.local_epochs + r.finetune.epochs) > b.time_budget

    if phase == "grow":
        train_round(r.grow.local_epochs - done)
        while True:
            more = len(out) < _MAX_ROUNDS and not (b.max_rounds and round >= b.max_rounds)
            grown = widen_all(arch, ratio=r.grow.ratio, min_add=r.grow.min_add, max_width=r.grow.max_width,
                              multiple=r.grow.width_multiple) if more else None
            if grown is None:
                break
            g = cost(grown)
            fits = [1.0] + [(limit - now) / (full - now) for limit, now, full in
                            ((b.max_macs, macs, g.macs), (b.max_params, params, g.params)) if limit and full > limit]
            t = max(0.0, min(fits))
            new_macs = _rounded(macs + t * (g.macs - macs))
            if new_macs > macs and over_time(new_macs):  # cut to what fits the time budget, as the search does
                new_macs = _most_in_time(macs, new_macs, over_time)
                t = min(t, (new_macs - macs) / (g.macs - macs))
            if new_macs <= macs:
                break
            arch, macs, params, round = grown, new_macs, _rounded(params + t * (g.params - params)), round + 1
            train_round(r.grow.local_epochs)
            if t < 1.0:  # clipped to the budget: this round is the last, nothing more fits
                break
        while round < b.min_rounds and not over_time(macs):  # the net as it is trains on to budget.min_rounds
            round += 1
            train_round(r.grow.local_epochs)
        done = 0
    if phase in ("grow", "finetune"):
        epochs = r.finetune.epochs - done
        out.append(PhaseEstimate("finetune", round, epochs, macs, epochs * epoch_seconds(macs)))
    return out


def _most_in_time(low: int, high: int, over_time: Callable[[int], bool]) -> int:
    """The largest MACs in ``[low, high]`` that ``over_time`` lets fit, ``low`` when none does
    (``over_time`` grows with the MACs; bisection over whole MACs)."""
    if over_time(low + 1):
        return low
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if not over_time(mid) else (low, mid)
    return low


def _rounded(x: float) -> int:
    return int(round(x))


def estimate_run(model: nn.Module, arch: Architecture, data: Any, recipe: Recipe, *, device: torch.device,
                 dataset: str, recipe_name: str = "", amp: Any = None, phase: str = "grow", round: int = 1,
                 done: int = 0, elapsed: float = 0.0) -> RunPlan:
    """The plan of a search holding its ``data`` (a :class:`grownet.job.JobData`) and its net
    ``model`` of ``arch``, at ``phase`` / ``round`` with ``done`` epochs of the phase trained
    and ``elapsed`` seconds so far (a new run: the defaults). The probe trains a copy of
    ``model`` with a fresh DessiLBI (:func:`probe`); nothing of the run changes."""
    step, per_image, n, spent = probe(model, lambda m: make_dessilbi(m, recipe), data, device=device, amp=amp)
    c, b, train = cost(arch), recipe.budget, data.train
    name = str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})"
    base = RunPlan(
        device=name, threads=torch.get_num_threads(), recipe=recipe_name, dataset=dataset,
        train_images=_images(train), val_images=_images(data.val), test_images=_images(data.test),
        batch_size=int(getattr(train, "batch_size", 0)), steps_per_epoch=len(train), max_macs=b.max_macs,
        max_params=b.max_params, max_rounds=b.max_rounds, time_budget=b.time_budget, macs=c.macs, params=c.params,
        step_seconds=step, eval_image_seconds=per_image, probe_steps=n, probe_seconds=spent, elapsed=elapsed,
        phases=(), final_eval_seconds=0.0,
    )
    phases = schedule(arch, recipe, base.epoch_seconds, phase=phase, round=round, done=done, elapsed=elapsed)
    last = phases[-1].macs if phases else c.macs
    compiled = compile_choice(recipe.run.compile, device, steps=recipe.finetune.epochs * len(train))
    return replace(base, phases=tuple(phases), final_eval_seconds=base.eval_seconds(last) if phase != "done" else 0.0,
                   compile=str(compiled) if phase != "done" else "")


def _images(loader: Any) -> int:
    n = getattr(loader, "num_samples", None)
    return int(n) if isinstance(n, int) else len(loader) * int(getattr(loader, "batch_size", 1))


def plan_run(dataset: str | None = None, *, recipe: Recipe | str | os.PathLike | None = None,
             overrides: Mapping[str, Any] | None = None, data_dir: str | os.PathLike | None = None, seed: int = 0,
             device: str = "auto") -> RunPlan:
    """The plan of ``grownet.search.search`` with the same arguments, without running it: loads
    the data, builds the seed net and probes it (a few seconds; the caller's RNGs are left as
    they were).

    Args:
        dataset: a dataset name of grownet.data (default ``"cifar10"``).
        recipe: a Recipe, a bundled recipe's name or a TOML path (default: the defaults).
        overrides: ``{"grow.tau": 0.9, ...}`` applied on top of ``recipe``.
        data_dir: folder holding the dataset. seed: the run's seed. device: ``"auto"``, ``"cpu"``, ``"cuda[:N]"``.

    Raises:
        ConfigError, DataError, UsageError: as :func:`grownet.search.search` would.
    """
    r = resolve_recipe(recipe, overrides)
    dev = resolve_device(device)
    channels_last = wants_channels_last(r.run.channels_last, dev)
    config = {"dataset": dataset or "cifar10", "data_dir": stored_dir(data_dir), "seed": seed}
    with rng_scope(dev):
        seed_all(seed)
        data = make_data(config, r, dev, channels_last=channels_last)
        arch = seed_arch(r, data)
        model = prepare_model(build_model(arch), dev, channels_last=channels_last)
        name = "" if recipe is None else recipe if isinstance(recipe, str) else os.fspath(recipe) if isinstance(recipe, os.PathLike) else "(a Recipe)"
        return estimate_run(model, arch, data, r, device=dev, dataset=config["dataset"], recipe_name=name,
                            amp=amp_dtype(r.run.amp, dev))


class Forecast:
    """The run's remaining seconds while it trains: the plan's estimate for what is left,
    times the ratio of the measured to the estimated seconds of the epochs seen so far."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.measured = 0.0
        self.estimated = 0.0

    def epoch_done(self, seconds: float, macs: int) -> None:
        """An epoch of a net of ``macs`` MACs took ``seconds`` (training and validation)."""
        self.measured += seconds
        self.estimated += self.plan.epoch_seconds(macs)

    @property
    def speed(self) -> float:
        """Measured over estimated seconds so far (1 before the first epoch)."""
        return self.measured / self.estimated if self.estimated > 0 and self.measured > 0 else 1.0

    def remaining(self, *, phase: str, round: int, epochs_left: float, macs: int) -> float:
        """Seconds left when ``epochs_left`` epochs (fractions allowed) of a net of ``macs``
        MACs remain in the current ``phase`` (round ``round``): those, the planned later
        rounds and the fine-tune, and the closing evaluation."""
        p = self.plan
        now = epochs_left * p.epoch_seconds(macs)
        if phase == "grow":
            later = sum(e.seconds for e in p.phases if (e.phase == "grow" and e.round > round) or e.phase == "finetune")
            final = p.final_eval_seconds
        else:
            later, final = 0.0, p.eval_seconds(macs)
        return (now + later + final) * self.speed

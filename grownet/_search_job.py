"""The search's training: growing rounds and the fine-tune through the one loop
(:func:`grownet.loop.fit`), the growth check between rounds, checkpoints as the last good
state, and the final files. :mod:`grownet.search` opens the run folder and calls
:meth:`SearchJob.run`.

The pieces: :class:`SearchState` (plain counters, checkpointed), :func:`growth_check` (one
check: activity, plan, grow), :func:`time_hold` (the time budget), :class:`Checkpoints` (the
divergence policy's last good state on disk), and :class:`SearchJob`, which strings them
together and owns the net while the run lasts.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ._checkpoint import make_payload, read_payload
from ._version import __version__
from .arch import Architecture
from .cost import Cost, cost
from .distributed import LOCAL, DistContext
from .errors import ArchitectureError, ConfigError, RunError
from .grow import apply as grow_apply
from .job import (finetune_schedule, make_data, make_dessilbi, make_finetune_optimizer, rng_scope, rng_state, seed_all,
                  seed_arch, set_rng_state)
from .loop import Divergence, LoopState, Phase, Trainee, fit
from .models import build_model, check_memory
from .optim import filter_activity
from .plan import estimate_run, step_time_ratio
from .policy import GrowthPlan, layer_activity, macs_per_filter, plan_growth, stage_taus
from .progress import Reporter
from .recipe import Recipe
from .runfolder import JobFolder, RunFolder
from .signal import ImportanceMeter
from .train import CompileChoice, amp_dtype, compile_choice, evaluate, prepare_model, wants_channels_last
from .validate import check_bool, check_int, check_list, check_number, check_object, check_str, check_summary, cut, show
from .weights import save_model

__all__ = ["SearchJob", "SearchResult", "SearchState", "growth_check", "check_payload", "result_of", "stored_state", "time_hold"]

logger = logging.getLogger("grownet.search")


@dataclass(frozen=True)
class SearchResult:
    """What a search produced.

    Attributes:
        run_dir: the run folder.
        arch: the final architecture (meta holds macs, params, val_acc, test_acc, ...).
        val_acc, test_acc: accuracies (fractions) of the chosen weights.
        macs, params: inference MACs per image and parameters of the final net.
        train_flops: cumulative training FLOPs of the whole run.
        wall_time: seconds spent training and evaluating (summed over resumes).
        rounds: growth checks made; epochs: epochs trained.
        events: divergence retries and other incidents, as recorded in summary.json.
        paths: ``{"architecture", "weights", "history", "rounds", "summary", "config", "log"}``.
    """

    run_dir: Path
    arch: Architecture
    val_acc: float
    test_acc: float
    macs: int
    params: int
    train_flops: int
    wall_time: float
    rounds: int
    epochs: int
    events: tuple = ()
    paths: Mapping[str, Path] = field(default_factory=dict)


def result_of(run: RunFolder, summary: Mapping[str, Any]) -> SearchResult:
    """The :class:`SearchResult` of a run folder's summary.json contents."""
    return SearchResult(
        run_dir=run.path, arch=Architecture.from_dict(summary["final_arch"]), val_acc=summary["val_acc"],
        test_acc=summary["test_acc"], macs=summary["macs"], params=summary["params"],
        train_flops=summary["train_flops"], wall_time=summary["wall_time"], rounds=summary["rounds"],
        epochs=summary["epochs"], events=tuple(summary["events"]),
        paths={"architecture": run.architecture, "weights": run.weights, "history": run.history,
               "rounds": run.rounds, "summary": run.summary, "config": run.config, "log": run.log},
    )


@dataclass
class SearchState(LoopState):
    """The loop's counters plus the search's own (checkpointed as plain data)."""

    phase: str = "grow"  # "grow" | "finetune" | "done"
    round: int = 1  # current growing round (1-based)
    round_epoch: int = 0  # epochs finished in the current round
    ft_epoch: int = 0  # fine-tune epochs finished
    wall_time: float = 0.0  # seconds trained and evaluated, over resumes
    prev_activity: dict[str, float] | None = None
    signal: dict[str, Any] | None = None  # the importance meter's state within the current round
    rounds: list[dict[str, Any]] = field(default_factory=list)
    seed_arch: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None


def check_payload(payload: Any, where: Path) -> None:
    """Check a checkpoint payload as :meth:`SearchJob.restore` will read it (its format, its
    fields, its net, its state), so a resume can refuse it before it writes anything.

    Raises:
        RunError: naming the field (``checkpoint.state.epoch``, ...).
    """
    stored_state(read_payload(payload, where).state, where)


def stored_state(data: Mapping[str, Any], where: Path) -> SearchState:
    """A checkpoint's ``state`` as a :class:`SearchState`, each field of the type its default
    has (a field the checkpoint lacks takes its default: older checkpoints resume).

    Raises:
        RunError: an unknown field, or a field of another type, naming ``state.<field>``.
    """
    known = {f.name: f for f in fields(SearchState)}
    default = SearchState()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise RunError(f"{where}: checkpoint.state.{cut(key)}: unknown field; start again with --force")
        path = f"checkpoint.state.{key}"
        try:
            out[key] = _typed(value, getattr(default, key), path, optional=key in _OPTIONAL_STATE)
        except RunError as exc:
            raise RunError(f"{where}: {exc}; start again with --force") from None
    if out.get("phase", "grow") not in ("grow", "finetune", "done"):
        raise RunError(f"{where}: checkpoint.state.phase: must be grow, finetune or done, got {show(out['phase'])}")
    return SearchState(**out)


#: SearchState fields that may be None.
_OPTIONAL_STATE = ("prev_activity", "signal", "result")


def _typed(value: Any, like: Any, path: str, *, optional: bool) -> Any:
    """``value`` checked to be of the type of ``like`` (a SearchState default)."""
    if value is None and optional:
        return None
    if isinstance(like, bool):
        return check_bool(value, path, error=RunError)
    if isinstance(like, int):
        return check_int(value, path, error=RunError, low=-1)
    if isinstance(like, float):
        return check_number(value, path, error=RunError)
    if isinstance(like, str):
        return check_str(value, path, error=RunError, max_len=64)
    if isinstance(like, list):
        return [check_object(row, f"{path}[{i}]", error=RunError) for i, row in enumerate(check_list(value, path, error=RunError))]
    return check_object(value, path, error=RunError)


# ---- the growth check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GrowthCheck:
    """One growth check: its rounds.json ``record``, the ``activity`` it read, the ``plan``,
    why growth was held (``hold``, or None), and the grown net and architecture (None when
    nothing grew)."""

    record: dict[str, Any]
    activity: dict[str, float]
    plan: GrowthPlan
    hold: str | None
    model: nn.Module | None
    arch: Architecture | None

    @property
    def next_round(self) -> bool:
        """Whether the growth phase goes on to another round (it grew, or ``budget.min_rounds``
        is not reached yet); else the fine-tune follows."""
        return bool(self.record["next_round"])


def growth_rule(recipe: Recipe, *, importance: Mapping[str, float] | None,
                previous: Mapping[str, float] | None) -> dict[str, Any]:
    """The keyword arguments of :func:`grownet.policy.plan_growth` that a growth check takes
    from ``recipe`` (rule and budgets), the round's importance shares and the previous check's
    activity (``None`` at the first)."""
    r = recipe
    return dict(
        importance=importance, cost_exponent=r.grow.cost_exponent,
        tau=r.grow.tau, ratio=r.grow.ratio, min_add=r.grow.min_add, previous=previous,
        deepen=r.grow.deepen, max_layers_per_stage=r.grow.max_layers_per_stage, max_width=r.grow.max_width,
        width_multiple=r.grow.width_multiple, max_macs=r.budget.max_macs, max_params=r.budget.max_params,
        cost_fn=_macs_params,
    )


def growth_check(net: Trainee, arch: Architecture, state: SearchState, recipe: Recipe, *, meter: ImportanceMeter | None,
                 elapsed: Callable[[], float], share: Callable[[Callable[[], Any]], Any] = LOCAL.share,
                 step_ratio: Callable[[Architecture], float] | None = None) -> GrowthCheck:
    """The growth check at the end of round ``state.round``: read every layer's activity (with
    ``meter``: the share of its filters whose importance over the round is active,
    :mod:`grownet.signal`; without: the share in Γ's support,
    :func:`grownet.policy.layer_activity`; ``grow.signal = "uniform"``: 1 for every layer; ``"off"``: 0),
    plan the growth (:func:`grownet.policy.plan_growth` with the recipe's rule and budgets;
    held at ``budget.max_rounds``; when :func:`time_hold` says the time budget would be passed,
    cut to the most that fits (:func:`fit_in_time`), held when nothing does), and grow without
    changing the function (:func:`grownet.grow.apply`, optimizer state carried over). A check
    that grows nothing before round ``budget.min_rounds`` still leads to another round
    (``record["next_round"]``) unless the time budget forbids it.

    Args:
        net: the trained net and its optimizer (DessiLBI). arch: its architecture.
        state: the search's counters (round, previous activity, history). recipe: the run's.
        meter: the round's importance meter (``grow.signal = "importance"``), or None.
        elapsed: the run's seconds so far (read only under a time budget).
        share: data-parallel: rank 0 decides (the plan, and the time check with its probes) and
            every rank applies that decision.
        step_ratio: under a time budget, the planned net's seconds per training step over the
            present net's (measured: :meth:`SearchJob.step_ratio`); None: the MACs ratio.
    """
    r = recipe
    importance, signal = None, None
    if meter is not None:
        activity, importance, signal = meter.activity(), meter.importance_share(), meter.record()
    elif r.grow.signal == "uniform":  # no signal: every layer saturated, the same factor for all
        activity = {layer.name: 1.0 for layer in arch.layers}
    elif r.grow.signal == "off":  # no layer saturated: the architecture stays as it is
        activity = {layer.name: 0.0 for layer in arch.layers}
    else:
        activity = layer_activity(arch, filter_activity(net.model, net.optimizer))
    rule = growth_rule(r, importance=importance, previous=state.prev_activity)

    def decide() -> tuple[GrowthPlan, str | None, bool]:
        hold = None
        if r.budget.max_rounds and state.round >= r.budget.max_rounds:
            hold = f"budget.max_rounds {r.budget.max_rounds} reached"
        plan = plan_growth(arch, activity, hold=hold, **rule)
        if plan.grew and r.budget.time_budget > 0:  # the probes of step_ratio run on rank 0 only
            ratio = step_ratio(plan.arch) if step_ratio else None
            hold = time_hold(plan, state, r, net.cost, elapsed(), step_ratio=ratio)
            _log_time_check(state.round, plan, ratio, hold)
            if hold is not None:  # the most of the plan that fits the time left, else nothing
                fit = fit_in_time(plan, ratio, lambda cap: plan_growth(arch, activity, time_macs=cap, **rule),
                                  state, r, net.cost, elapsed, step_ratio=step_ratio)
                if fit is None:
                    plan = plan_growth(arch, activity, hold=hold, **rule)
                else:
                    logger.info("check %d: cut to %s MACs, the most that fit", state.round, f"{fit.macs:,}")
                    plan, hold = fit, None
        next_round = plan.grew
        if not plan.grew and state.round < r.budget.min_rounds:  # (max_rounds >= min_rounds: not held by it)
            timed = time_hold(plan, state, r, net.cost, elapsed(), step_ratio=1.0) if r.budget.time_budget > 0 else None
            hold, next_round = hold or timed, timed is None
        return plan, hold, next_round

    plan, hold, next_round = share(decide)  # every rank applies rank 0's decision
    record = {
        "round": state.round, "epoch": state.epoch, "macs": net.cost.macs, "params": net.cost.params,
        "val_acc": state.history[-1]["val_acc"] if state.history else None,
        "layers": [d.to_dict() for d in plan.decisions], "deepened": list(plan.deepen), "grew": plan.grew,
        "new_macs": plan.macs, "new_params": plan.params, "hold": hold,
        "new_arch": plan.arch.to_dict() if plan.grew else None, "next_round": next_round,
    }
    if signal is not None:
        record["signal"] = signal
    if not plan.grew:
        return GrowthCheck(record, activity, plan, hold, None, None)
    model, grown = grow_apply(net.model, arch, dict(plan.widen), plan.deepen, optimizer=net.optimizer)
    if grown != plan.arch:
        raise RuntimeError(f"bug: grow.apply built {grown.layer_widths()}, the plan was {plan.arch.layer_widths()}")
    return GrowthCheck(record, activity, plan, hold, model, grown)


def _round_and_finetune_seconds(state: SearchState, recipe: Recipe) -> float:
    """Seconds of ``local_epochs + finetune.epochs`` epochs of the present net, each this round's
    median epoch after its first (the first also carries the growth check before it, its
    probes and the growth, and the new net's warm-up: up to 25 s longer than the second in the
    CPU recipe's 2-epoch rounds on a 2-core CPU), or the round's only epoch."""
    s, r = state, recipe
    rows = [i for i, h in enumerate(s.history) if h["phase"] == "grow" and h["round"] == s.round]
    ends = [s.history[rows[0] - 1]["wall_time"] if rows[0] > 0 else 0.0] + [s.history[i]["wall_time"] for i in rows]
    epochs = [b - a for a, b in zip(ends, ends[1:])]
    return statistics.median(epochs[1:] or epochs) * (r.grow.local_epochs + r.finetune.epochs)


def _step_ratio(plan: GrowthPlan, now: Cost, step_ratio: float | None) -> float:
    """``step_ratio``, else the planned net's MACs over the present net's (``now``)."""
    return step_ratio if step_ratio is not None else (plan.macs or now.macs) / now.macs


def time_hold(plan: GrowthPlan, state: SearchState, recipe: Recipe, now: Cost, elapsed: float, *,
              step_ratio: float | None = None) -> str | None:
    """Why the time budget forbids another round (None when it fits): ``elapsed`` seconds plus
    ``local_epochs + finetune.epochs`` epochs of the grown net must fit in ``budget.time_budget``.
    An epoch of the grown net takes this round's median epoch after its first (seconds;
    :func:`_round_and_finetune_seconds`) times ``step_ratio``, the grown net's seconds per step over the
    present net's; without it, times the grown net's MACs over the present net's (``now``):
    right for a compute-bound CPU, about 2x long on a GPU, where small nets are launch-bound
    (README, On a GPU)."""
    r = recipe
    need = _round_and_finetune_seconds(state, r) * _step_ratio(plan, now, step_ratio)
    if elapsed + need <= r.budget.time_budget:
        return None
    return (f"budget.time_budget {r.budget.time_budget:g} s: {elapsed:.0f} s elapsed + about {need:.0f} s for "
            f"another round and the fine-tune would pass it")


def time_cap(plan: GrowthPlan, state: SearchState, recipe: Recipe, now: Cost, elapsed: float, *,
             step_ratio: float | None = None, headroom: float = 1.0) -> int:
    """MACs of the largest grown net whose round and fine-tune :func:`time_hold` would let
    fit, 0 when none larger than the present net (``now``) would: the epoch of a net between the
    present one (ratio 1) and ``plan`` (``step_ratio``, else its MACs ratio) is interpolated
    linearly in its MACs. ``headroom`` < 1 aims at that share of the time left beyond the
    present net's round and fine-tune."""
    fits = (recipe.budget.time_budget - elapsed) / _round_and_finetune_seconds(state, recipe)
    macs, ratio = plan.macs or now.macs, _step_ratio(plan, now, step_ratio)
    if fits <= 1 or ratio <= 1 or macs <= now.macs:
        return 0
    return int(now.macs + (macs - now.macs) * min(1.0, headroom * (fits - 1) / (ratio - 1)))


#: The share of the spare time a cut aims at (:func:`fit_in_time`): a probe of a few steps
#: reads the step-time ratio to about 10% (seen on the 2-core CPU), and the cut net is measured
#: again before it is kept, so aiming at all of it would be refused as often as not.
_TIME_HEADROOM = 0.9


def fit_in_time(plan: GrowthPlan, ratio: float | None, replan: Callable[[int], GrowthPlan], state: SearchState,
                recipe: Recipe, now: Cost, elapsed: Callable[[], float], *,
                step_ratio: Callable[[Architecture], float] | None = None, tries: int = 4) -> GrowthPlan | None:
    """The plan made under the MACs cap of :func:`time_cap` (``replan(cap)``, aiming at
    :data:`_TIME_HEADROOM` of the spare time) when :func:`time_hold` lets it fit, else None.
    ``plan``, whose round and fine-tune would pass the time budget, has seconds-per-step ratio
    ``ratio`` (None: its MACs ratio); each try measures the capped plan (``step_ratio``) and
    caps again from it, at most ``tries``; each is logged, and so is why no cut is tried."""
    for k in range(tries):
        cap = time_cap(plan, state, recipe, now, elapsed(), step_ratio=ratio, headroom=_TIME_HEADROOM)
        if cap <= now.macs:
            logger.info("check %d: time budget: %s: %s", state.round, "no further cut" if k else "no cut tried",
                        _no_cut(state, recipe, elapsed()))
            return None
        plan = replan(cap)
        if not plan.grew:
            return None
        ratio = step_ratio(plan.arch) if step_ratio else None
        hold = time_hold(plan, state, recipe, now, elapsed(), step_ratio=ratio)
        _log_time_check(state.round, plan, ratio, hold, cap=cap)
        if hold is None:
            return plan
    return None


def _log_time_check(round_: int, plan: GrowthPlan, ratio: float | None, hold: str | None, *, cap: int = 0) -> None:
    """Log one plan's time check: the MACs cap it was made under (a cut), its MACs, its
    step-time ratio (None: its MACs ratio stood in) and why it does not fit, or that it does."""
    logger.info("check %d: time budget: %splanned %s MACs, step-time ratio %s: %s", round_,
                f"cap {cap:,} MACs, " if cap else "", f"{plan.macs:,}", "MACs" if ratio is None else f"{ratio:.3f}",
                hold or "fits")


def _no_cut(state: SearchState, recipe: Recipe, elapsed: float) -> str:
    """Why :func:`time_cap` leaves no MACs to grow by, in words with its seconds."""
    left, present = recipe.budget.time_budget - elapsed, _round_and_finetune_seconds(state, recipe)
    if present >= left:
        return (f"another round of the present net and the fine-tune (about {present:.0f} s) would pass the "
                f"{left:.0f} s left, whatever grows")
    return f"the {left - present:.0f} s left beyond the present net's round and fine-tune buy no filter"


def _macs_params(arch: Architecture) -> tuple[int, int]:
    c = cost(arch)
    return c.macs, c.params


def check_budget(arch: Architecture, recipe: Recipe) -> None:
    """Refuse a seed that already exceeds ``budget.max_macs`` or ``budget.max_params``."""
    b, c = recipe.budget, cost(arch)
    for key, limit, value, unit in (("max_macs", b.max_macs, c.macs, "MACs"), ("max_params", b.max_params, c.params, "params")):
        if limit and value > limit:
            raise ConfigError(f"budget.{key}: {limit:,} is smaller than the seed net's {value:,} {unit}; "
                              f"raise budget.{key} or start from a smaller seed (model.seed_width)")


# ---- the last good state: checkpoints -----------------------------------------------------------


class Checkpoints:
    """The divergence policy's last good state (:class:`grownet.loop.LastGood`) of a search:
    its latest checkpoint, written after every epoch. A restore keeps the wall time, the
    events and the retry count (the loop sets the last two)."""

    def __init__(self, job: "SearchJob") -> None:
        self.job = job

    def commit(self) -> None:
        self.job.checkpoint()

    def restore(self) -> None:
        job = self.job
        wall = job.elapsed()
        job.restore(job.dist.share(job.run_folder.load_checkpoint))
        job.state.wall_time = wall

    def where(self) -> str:
        return f"the last good state (epoch {self.job.state.epoch}) is in {self.job.run_folder.checkpoints}"


# ---- the job ------------------------------------------------------------------------------------


class SearchJob:
    """One search run: the net (a :class:`~grownet.loop.Trainee`), its architecture, the data
    and the counters while the run lasts.

    ``on_step``, None by default, is handed to :func:`grownet.loop.fit` for every epoch, grow
    and fine-tune: ``on_step(step_in_epoch, global_step)`` after each optimizer step (read
    ``self.net``, ``self.arch`` and ``self.state`` from it; keep it cheap).
    """

    def __init__(self, run: RunFolder, config: Mapping[str, Any], device: torch.device, reporter: Reporter,
                 dist: DistContext = LOCAL) -> None:
        self.dist = dist  # data-parallel hooks (no-ops for one process); see grownet.distributed
        self.run_folder = run
        self.config = config
        self.recipe = Recipe.from_dict(config["recipe"])
        self.device = device
        self.reporter = reporter
        self.channels_last = wants_channels_last(self.recipe.run.channels_last, device)
        self.amp = amp_dtype(self.recipe.run.amp, device)
        self.compile = CompileChoice(False, "not decided")  # the fine-tune's (run.compile), set in run()
        self.fixed = False  # the fine-tune has started: every net set from now on is compiled as chosen
        self.state = SearchState()
        self.net: Trainee | None = None
        self.arch: Architecture | None = None
        self.meter: ImportanceMeter | None = None  # the growth signal of the round (grow.signal = "importance")
        self.on_step: Callable[[int, int], None] | None = None
        self._mark = time.perf_counter()

    def run(self, *, resume: bool, checkpoint: Mapping[str, Any] | None = None) -> SearchResult:
        """Train from the seed (or resume from the last checkpoint) to the end; write the
        final files and return the result. ``checkpoint``: the payload to resume from when the
        caller has loaded and checked it (:func:`check_payload`); else it is loaded here."""
        r = self.recipe
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_all(int(self.config["seed"]))
        self.data = self.dist.shard_data(make_data(self.config, r, self.device, channels_last=self.channels_last))
        self.compile = compile_choice(r.run.compile, self.device, steps=r.finetune.epochs * len(self.data.train))
        if resume:
            self.restore(self.dist.share(self.run_folder.load_checkpoint if checkpoint is None else lambda: checkpoint))
            s = self.state
            logger.info("resumed %s at epoch %d (%s phase, round %d)", self.run_folder.path, s.epoch, s.phase, s.round)
            if isinstance(self.run_folder, JobFolder):  # rank 0's folder: every check passed, the resume starts
                self.run_folder.start()  # (a failure before this point left the folder as it was)
            if s.phase == "done" and s.result is not None:
                return self._complete(s.result)
        else:
            self._seed()
        if getattr(self.reporter, "wants_plan", False):  # a short timed probe on a copy: the run is unchanged
            s = self.state
            self.reporter.plan(estimate_run(
                self.net.model, self.arch, self.data, r, device=self.device, dataset=self.config["dataset"],  # type: ignore[union-attr]
                amp=self.amp, phase=s.phase, round=s.round, done=s.round_epoch if s.phase == "grow" else s.ft_epoch,
                elapsed=s.wall_time))
        self.reporter.start(run_dir=self.run_folder.path, arch=self.arch, recipe=r, resumed=resume)
        self._mark = time.perf_counter()
        while self.state.phase == "grow":
            self._fit(Phase("grow", r.grow.local_epochs, lambda e, i: r.optim.lr, label_smoothing=r.optim.label_smoothing,
                            round=self.state.round, label=f"round {self.state.round}"), start=self.state.round_epoch)
        steps = len(self.data.train)
        self.fixed = True  # after the plan's probe, which deep-copies the net (a compiled one must not be copied)
        logger.info("fine-tune: %s", self.compile)
        self.compile.apply(self.net.model)  # type: ignore[union-attr]
        self._fit(Phase("finetune", r.finetune.epochs, finetune_schedule(r, epochs=r.finetune.epochs, steps=steps),
                        label_smoothing=r.finetune.label_smoothing, keep_best=True, round=self.state.round,
                        label=f"round {self.state.round}"), start=self.state.ft_epoch)
        return self._finish()

    def _seed(self) -> None:
        """A new run: the seed net, its DessiLBI optimizer, config.json and the first checkpoint."""
        r = self.recipe
        arch = seed_arch(r, self.data)
        check_memory(arch, batch_size=r.data.batch_size, device=self.device)  # at the dataset's own shape
        stage_taus(r.grow.tau, arch.num_stages)  # a per-stage tau must match the seed
        check_budget(arch, r)
        self.run_folder.write_json(self.run_folder.config, self.config)
        self.state.seed_arch = arch.to_dict()
        self._set_model(build_model(arch), arch, lambda m: make_dessilbi(m, r))
        logger.info("seed %s: %s (%.2fM MACs)", r.model.seed_arch, arch.layer_widths(), cost(arch).macs / 1e6)
        self.checkpoint()  # the first "last good state"
        if isinstance(self.run_folder, JobFolder):  # rank 0's folder (other ranks write none)
            self.run_folder.start()  # the run has started: a failure keeps it, --force's old run goes

    def _set_model(self, model: nn.Module, arch: Architecture,
                   make_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None = None) -> None:
        """Make ``model`` (of ``arch``) the net: on the device, wrapped for data parallelism,
        with a new optimizer from ``make_optimizer`` or the present one (growth carried it),
        and while growing a new importance meter (resumed from ``state.signal``)."""
        model = prepare_model(model, self.device, channels_last=self.channels_last)
        if self.fixed:  # a fine-tune's divergence restore: the checkpoint's net trains as the one before
            self.compile.apply(model)
        optimizer = make_optimizer(model) if make_optimizer is not None else self.net.optimizer  # type: ignore[union-attr]
        if self.net is None:
            self.net = Trainee(model, optimizer, cost(arch))
        self.net.model, self.net.optimizer, self.net.cost = model, optimizer, cost(arch)
        self.net.wrapped = self.dist.wrap(model)  # DistributedDataParallel on several ranks
        self.arch = arch
        self._new_meter()

    def _new_meter(self) -> None:
        """While growing with ``grow.signal = "importance"``: the round's importance meter of the
        present net (resumed from ``state.signal``); else none."""
        self.meter = None
        g, arch = self.recipe.grow, self.arch
        if g.signal == "importance" and self.state.phase == "grow":  # a new meter for every round
            every = max(1, g.local_epochs * len(self.data.train) // 10)
            weights = None
            if g.activity_cost_exponent > 0:  # importance per MAC^e: a filter that costs more must matter more
                weights = {l: m ** -g.activity_cost_exponent for l, m in macs_per_filter(arch, _macs_params).items()}
            self.meter = ImportanceMeter(self.net.model, arch, rho=g.rho, trace_every=every, weights=weights)  # type: ignore[union-attr,arg-type]
            if self.state.signal is not None:
                self.meter.load_state_dict(self.state.signal)

    # -- training -------------------------------------------------------------------------------
    def _fit(self, phase: Phase, *, start: int) -> None:
        """Train ``phase`` from its epoch ``start``; after each epoch: count it, write the
        history, report it, and at the end of a round check growth (then the loop checkpoints)."""
        r, s = self.recipe, self.state

        def epoch_end(row: Mapping[str, Any]) -> None:
            if phase.name == "grow":
                s.round_epoch += 1
            else:
                s.ft_epoch += 1
            self.run_folder.write_history(s.history)
            self.reporter.epoch_end(row)
            if phase.name == "grow" and s.round_epoch >= r.grow.local_epochs:
                self._check()

        fit(self.net, self.data, s, phase, start=start, last_good=Checkpoints(self),  # type: ignore[arg-type]
            divergence=Divergence.from_recipe(r, lower="optim.lr (or finetune.lr)"), clock=self.elapsed,
            reporter=self.reporter, on_epoch_end=epoch_end, on_step=self._step_hook(phase.name), amp=self.amp,
            dist=self.dist)

    def _step_hook(self, phase: str) -> Callable[[int, int], None] | None:
        """After every optimizer step: the importance meter reads the step's gradients (while
        growing), then ``self.on_step``; None when neither is there."""
        if (phase != "grow" or self.meter is None) and self.on_step is None:
            return None

        def step(step_in_epoch: int, global_step: int) -> None:
            if phase == "grow" and self.meter is not None:  # the meter of this round (a restore makes a new one)
                self.meter.observe()  # the step's gradients are still on the parameters
            if self.on_step is not None:
                self.on_step(step_in_epoch, global_step)

        return step

    def step_ratio(self, grown: Architecture) -> float:
        """Seconds per DessiLBI training step of a net of ``grown`` over the present net's:
        :func:`grownet.plan.step_time_ratio` on copies, the two nets stepping in turn (a few
        steps; the run's RNGs and loader positions are left as they were, so the run trains as
        it would without)."""
        with rng_scope(self.device):  # building the net draws its init from the global RNG
            new = prepare_model(build_model(grown), self.device, channels_last=self.channels_last)
        return step_time_ratio(new, self.net.model, lambda m: make_dessilbi(m, self.recipe), self.data,  # type: ignore[union-attr]
                               device=self.device, amp=self.amp)

    def _check(self) -> None:
        """Run :func:`growth_check`, record it, and go on growing (next round) or fine-tune."""
        r, s = self.recipe, self.state
        check = growth_check(self.net, self.arch, s, r, meter=self.meter, elapsed=self.elapsed,  # type: ignore[arg-type]
                             share=self.dist.share, step_ratio=self.step_ratio)
        s.rounds.append(check.record)
        s.prev_activity = check.activity
        s.signal = None  # the next round measures afresh
        for d in check.plan.decisions:
            if d.decision != "keep":
                logger.info("check %d: %s %s (%s)", s.round, d.layer, d.decision, d.reason)
        if check.next_round:
            if check.model is not None and check.arch is not None:
                self._set_model(check.model, check.arch)  # with the new round's meter
                c = self.net.cost  # type: ignore[union-attr]
                logger.info("check %d: grew to %s (%.2fM MACs, %d params)", s.round, check.arch.layer_widths(), c.macs / 1e6, c.params)
            else:  # budget.min_rounds: the same net trains another round
                logger.info("check %d: nothing grew; round %d follows (budget.min_rounds %d)", s.round, s.round + 1,
                            r.budget.min_rounds)
                self._new_meter()
            s.round += 1
            s.round_epoch = 0
        else:
            why = check.hold or ("nothing saturates" if not check.plan.saturated else "no growth fits the budget")
            logger.info("check %d: stop growing (%s); fine-tuning %d epochs", s.round, why, r.finetune.epochs)
            s.phase = "finetune"
            self.meter = None
            self.net.optimizer = make_finetune_optimizer(self.net.model, r, dessilbi=self.net.optimizer)  # type: ignore[union-attr]
        self.run_folder.write_json(self.run_folder.rounds, s.rounds)
        self.reporter.round_end(check.record)

    def elapsed(self) -> float:
        """The run's seconds so far (adds the time since the last call to ``state.wall_time``)."""
        now = time.perf_counter()
        self.state.wall_time += now - self._mark
        self._mark = now
        return self.state.wall_time

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Write the present state as the latest checkpoint (rank 0; the others get it through
        ``dist.share`` when they restore)."""
        self.elapsed()
        if not self.dist.is_main:
            return
        self.state.signal = self.meter.state_dict() if self.meter is not None else None
        net = self.net
        self.run_folder.save_checkpoint(make_payload(
            arch=self.arch, model=net.model, optimizer=net.optimizer, best_model=net.best,  # type: ignore[union-attr,arg-type]
            state=self.state, rng=rng_state(self.device), loader_epoch=self.data.train.epoch))

    def restore(self, payload: Mapping[str, Any]) -> None:
        """Take the net, optimizer, counters, RNGs and loader position of a checkpoint."""
        r = self.recipe
        where = self.run_folder.checkpoints
        ck = read_payload(payload, where)
        loaded = stored_state(ck.state, where)
        for f in fields(loaded):  # in place: the loop holds this object; before the model: the meter reads it
            setattr(self.state, f.name, getattr(loaded, f.name))
        kind = ck.optimizer_kind
        try:
            self._set_model(ck.model, ck.arch, lambda m: make_dessilbi(m, r) if kind == "dessilbi" else make_finetune_optimizer(m, r))
            self.net.optimizer.load_state_dict(ck.optimizer)  # type: ignore[union-attr]
            set_rng_state(ck.rng, self.device)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, TypeError, ValueError, KeyError, IndexError) as exc:  # a payload edited and re-hashed
            raise RunError(f"{where}: the checkpoint's optimizer, signal or RNG state cannot be restored "
                           f"({type(exc).__name__}); start again with --force") from None
        self.net.best = ck.best_model  # type: ignore[union-attr]
        self.data.train.set_epoch(ck.loader_epoch)

    # -- the end --------------------------------------------------------------------------------
    def _complete(self, summary: Mapping[str, Any]) -> SearchResult:
        """A finished run resumed: write the final files that a kill between the last
        checkpoint and the report left missing, as :meth:`_finish` wrote them (from the
        checkpoint: the kept weights, the summary and the rounds; nothing is trained or
        evaluated again)."""
        run, s = self.run_folder, self.state
        where = f"{run.checkpoints}: checkpoint.state.result"
        try:
            summary = check_summary(summary, where)
            result = result_of(run, summary)
        except (KeyError, TypeError, ArchitectureError) as exc:
            raise RunError(f"{where}: incomplete or invalid ({cut(str(exc))}); start again with --force") from None
        if not self.dist.is_main:
            return result
        missing = [p for p in (run.architecture, run.weights, run.history, run.summary, run.rounds, run.report) if not p.exists()]
        if run.architecture in missing:
            result.arch.save(run.architecture)
        if run.weights in missing:
            save_model(self.net.model, run.weights)  # type: ignore[union-attr]
        if run.history in missing:
            run.write_history(s.history)
        if run.summary in missing:
            run.write_json(run.summary, summary)
        if run.rounds in missing:
            run.write_json(run.rounds, s.rounds)
        if missing:
            logger.info("the run was complete; wrote the missing %s", ", ".join(p.name for p in missing))
            from .report import write_report

            write_report(run.path)
        return result

    def _finish(self) -> SearchResult:
        """Evaluate the kept weights on validation and test, write the final files and report."""
        s, run, net = self.state, self.run_folder, self.net
        assert net is not None and self.arch is not None
        if net.best is not None:
            net.model.load_state_dict(net.best)
        val = evaluate(net.model, self.data.val, amp=self.amp, sync=self.dist.sync_fn)
        test = evaluate(net.model, self.data.test, amp=self.amp, sync=self.dist.sync_fn)
        self.elapsed()
        c = net.cost
        final = self.arch.with_meta(
            macs=c.macs, params=c.params, val_acc=val.acc, test_acc=test.acc, dataset=self.config["dataset"],
            grownet_version=__version__, train_flops=s.train_flops, seed=self.config["seed"],
        )
        if self.dist.is_main:
            final.save(run.architecture)
            save_model(net.model, run.weights)
        summary = {
            "dataset": self.config["dataset"], "classes": list(getattr(self.data, "classes", []) or []),
            "seed": self.config["seed"], "val_acc": val.acc, "test_acc": test.acc, "val_loss": val.loss,
            "test_loss": test.loss, "macs": c.macs, "params": c.params, "train_flops": s.train_flops,
            "wall_time": round(s.wall_time, 3), "rounds": len(s.rounds), "epochs": s.epoch,
            "best_epoch": s.best_epoch or s.epoch, "seed_arch": s.seed_arch, "final_arch": final.to_dict(),
            "events": s.events,
        }
        run.write_json(run.summary, summary)
        run.write_json(run.rounds, s.rounds)
        s.phase = "done"
        s.result = summary
        self.checkpoint()
        logger.info("done: val acc %.4f, test acc %.4f, %.2fM MACs, %d params, %.0f s -> %s",
                    val.acc, test.acc, c.macs / 1e6, c.params, s.wall_time, run.path)
        if self.dist.is_main:
            from .report import write_report  # the report reads the folder just written

            write_report(run.path)
        result = result_of(run, summary)
        self.reporter.finish(result)
        return result

"""Controls for a grown net (METHOD.md §4): what the same budget buys without growing.

Five controls, each written to ``RUN_DIR/controls/<name>/``; the first four are trained from a
fresh initialisation with the fine-tune's schedule (below), the fifth with the run's own:

- ``scratch``: the final architecture of the run, trained from scratch;
- ``uniform``: the seed's layout with every width scaled by one multiplier, found by
  bisection so that its inference MACs match the final net's (within a few percent: widths
  are whole filters);
- ``random``: a random allocation at the final net's MACs: every layer of the seed gets a
  growth factor drawn log-uniformly from [1/2, 2] (a new draw per run seed), then all are
  multiplied by the one factor that matches the MACs (bisection, as for ``uniform``);
- ``seed``: the seed architecture alone;
- ``fixed_uniform``: the ``uniform`` widths trained with the run's own schedule instead (a
  search of its own: the run's recipe, seed and data from those widths, nothing grows
  (``grow.signal = "off"``), the run's rounds, then its fine-tune; :func:`fixed_width_recipe`).
  It differs from the grown net only in growing and from ``uniform`` only in the schedule.

Another kind is the user's own: ``run_control(run_dir, NAME, arch=A)`` (``grownet baseline
RUN_DIR --control NAME --arch A.json``) trains architecture ``A`` exactly as the controls above
are trained, into ``controls/NAME/``: a hand-picked allocation measured against the grown net
under the same data, epochs and schedule. Reports list such controls after the built-in ones.

Training choice (documented here because reviewers ask): every control but ``fixed_uniform``
gets the same number of epochs as the whole search (growth rounds plus fine-tune, ``summary.json`` ``epochs``),
the search's fine-tune optimizer (``finetune.optimizer``: a *fresh* DessiLBI with the
``optim.*`` settings, or momentum SGD with the ``finetune.*`` settings) and the fine-tune's
cosine learning-rate schedule (``finetune.lr`` down to ``finetune.min_lr``, with its warm-up
and label smoothing) stretched over all those epochs; the constant-rate growth phase has no
counterpart since nothing grows. Data, validation split, batch size, augmentation, seed and
device options come from the run's config.json, and the epochs run through the one training
loop (:func:`grownet.loop.fit`, with its divergence policy). As in the search, the epoch with the best validation accuracy
is kept and the test set is evaluated once, on it.

Each control folder holds ``summary.json`` (``control``, ``val_acc``, ``test_acc``, ``macs``,
``params``, ``train_flops``, ``wall_time``, ``epochs``, ``best_epoch``, ``events``, ...),
``history.csv`` (the run's columns; ``round`` 0, ``phase`` ``"control"``), ``architecture.json``,
``weights.pt`` and ``grownet.log``; ``fixed_uniform``'s is a run folder, as a search writes it.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .arch import Architecture, ResStage
from .cost import cost
from .errors import ArchitectureError, RunError, UsageError
from .files import atomic_write_text, stored_dir
from .job import finetune_schedule, make_data, make_finetune_optimizer, seed_all
from .loop import Clock, Divergence, InMemory, LoopState, Phase, Trainee, fit
from .models import build_model, check_memory
from .progress import Reporter
from .recipe import Recipe
from .runfolder import CONTROL_NAMES, JobFolder, RunRecord, check_control_name, job_folder, load_run, read_json
from .search import search_or_resume
from .train import amp_dtype, compile_choice, evaluate, prepare_model, resolve_device, wants_channels_last
from .validate import check_int, check_text
from .weights import save_model

__all__ = ["CONTROLS", "ControlResult", "allocated_architecture", "FixedResult", "control_architecture", "fixed_width_recipe",
           "same_rounds", "train_fixed", "random_architecture", "scale_widths", "uniform_architecture", "run_control"]

logger = logging.getLogger(__name__)

#: The control names, in the order reports show them.
CONTROLS = CONTROL_NAMES
#: Bisection steps for the uniform multiplier (2^-40 of the bracket: far below one filter).
_BISECT_STEPS = 40


@dataclass(frozen=True)
class ControlResult:
    """A finished control: its folder, architecture and metrics (accuracies as fractions;
    ``train_flops`` summed over the epochs trained; ``wall_time`` in seconds; ``events``:
    divergence retries, as in summary.json)."""

    name: str
    path: Path
    arch: Architecture
    val_acc: float
    test_acc: float
    macs: int
    params: int
    train_flops: int
    wall_time: float
    epochs: int
    best_epoch: int
    events: tuple = ()


# ---- architectures --------------------------------------------------------------------------------


def scale_widths(arch: Architecture, multiplier: float) -> Architecture:
    """``arch`` with every width multiplied by ``multiplier`` and rounded (at least 1);
    depth, family and input/output shapes unchanged, meta dropped.

    Raises:
        UsageError: for a multiplier that is not a positive finite number.
    """
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not math.isfinite(multiplier) or multiplier <= 0:
        raise UsageError(f"multiplier: must be a positive number, got {multiplier!r}")

    def w(width: int) -> int:
        return max(1, round(width * multiplier))

    if arch.family == "vgg":
        stages: tuple = tuple(tuple(w(x) for x in stage) for stage in arch.stages)
        return replace(arch, stages=stages, meta={})
    stages = tuple(ResStage(w(s.width), tuple(w(b) for b in s.blocks)) for s in arch.stages)
    return replace(arch, stages=stages, stem=w(int(arch.stem)), meta={})  # type: ignore[arg-type]


def uniform_architecture(seed: Architecture, target_macs: int) -> Architecture:
    """The seed's layout scaled by the one width multiplier whose inference MACs come closest
    to ``target_macs`` (bisection: MACs never decrease as the multiplier grows).

    Raises:
        UsageError: for a non-positive target.
    """
    if isinstance(target_macs, bool) or not isinstance(target_macs, (int, float)) or target_macs <= 0:
        raise UsageError(f"target_macs: must be a positive number, got {target_macs!r}")

    def macs(m: float) -> int:
        return cost(scale_widths(seed, m)).macs

    lo, hi = 1.0, 1.0
    while macs(lo) > target_macs and max(seed.layer_widths().values()) * lo > 1:
        lo /= 2
    while macs(hi) < target_macs and min(seed.layer_widths().values()) * hi < 65536 / 2:
        hi *= 2
    for _ in range(_BISECT_STEPS):  # invariant: macs(lo) <= target <= macs(hi), where reachable
        mid = (lo + hi) / 2
        if macs(mid) < target_macs:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda m: abs(macs(m) - target_macs))
    return scale_widths(seed, best)


def random_architecture(seed: Architecture, target_macs: int, *, rng_seed: int) -> Architecture:
    """The seed with every layer's width multiplied by its own factor, drawn log-uniformly
    from [1/2, 2] with ``torch.Generator().manual_seed(rng_seed)``, then by the one common
    multiplier whose MACs come closest to ``target_macs``."""
    gen = torch.Generator().manual_seed(int(rng_seed))
    layers = list(seed.layer_widths())
    factors = torch.exp((torch.rand(len(layers), generator=gen, dtype=torch.float64) * 2 - 1) * math.log(2)).tolist()
    return allocated_architecture(seed, dict(zip(layers, factors)), target_macs)


def allocated_architecture(seed: Architecture, factors: Mapping[str, float], target_macs: int) -> Architecture:
    """The seed with every layer's width multiplied by ``factors[layer]``, then all by the one
    common multiplier whose MACs come closest to ``target_macs`` (an allocation at given MACs:
    the random control's, or one of the user's)."""
    # x8: fine rounding of the scaled widths before the common multiplier scales them back
    drawn = seed.with_widths({layer: max(1, round(seed.width(layer) * f * 8)) for layer, f in factors.items()})
    return uniform_architecture(drawn, target_macs)


def _check_builtin(control: str) -> None:
    if control not in CONTROLS:
        raise UsageError(f"--control: must be one of {', '.join(CONTROLS)}, got {str(control)[:80]!r} (a control of your "
                         "own architecture also needs --arch)")


def control_architecture(run: RunRecord | str | os.PathLike, control: str) -> Architecture:
    """The architecture a control trains: the run's final net (``scratch``), its seed
    (``seed``), the seed scaled to the final net's MACs (``uniform``, and ``fixed_uniform``
    with the run's schedule), or a random allocation at those MACs (``random``, drawn with
    the run's seed).

    Raises:
        UsageError: for an unknown control name.
        RunError: when the run lacks the architecture the control needs.
    """
    _check_builtin(control)
    if not isinstance(run, RunRecord):
        run = load_run(run)
    final = run.arch
    if final is None:
        raise RunError(f"{run.path}: architecture.json is missing; controls need a finished run")
    final = replace(final, meta={})
    if control == "scratch":
        return final
    seed_dict = run.summary.get("seed_arch")
    try:
        seed = Architecture.from_dict(seed_dict)  # type: ignore[arg-type]
    except ArchitectureError as exc:
        raise RunError(f"{run.path / 'summary.json'}: seed_arch is not a valid architecture ({exc})") from None
    if control == "seed":
        return seed
    if control == "random":
        return random_architecture(seed, cost(final).macs, rng_seed=int(run.config.get("seed", 0)))
    return uniform_architecture(seed, cost(final).macs)


# ---- training -------------------------------------------------------------------------------------------


def run_control(
    run_dir: str | os.PathLike,
    control: str,
    *,
    arch: Architecture | str | os.PathLike | None = None,
    epochs: int | None = None,
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    force: bool = False,
    progress: Callable[[Mapping[str, Any]], None] | None = None,
) -> ControlResult:
    """Train control ``control`` of the run in ``run_dir`` and write
    ``run_dir/controls/<control>/`` (see the module docstring for the training choice).

    Args:
        run_dir: a finished search's run folder.
        control: ``"scratch"``, ``"uniform"``, ``"random"``, ``"seed"`` or ``"fixed_uniform"`` (a
            search: an unfinished one resumes from its checkpoint); with ``arch``, the
            name of the user's control (letters, digits, ``_ . -``, at most 64 characters, not
            a built-in control's name nor ``grown``, ``grown_uniform``, ``fixed_uniform`` or ``fresh``).
        arch: the architecture to train (an :class:`~grownet.arch.Architecture` or the path of
            an architecture JSON); it must fit the run's dataset (input channels and size,
            classes). Default: the one ``control`` names.
        epochs: epochs to train (default: the search's total epochs, summary.json ``epochs``;
            ``fixed_uniform`` takes none: it trains the run's rounds and fine-tune).
        data_dir: folder holding the dataset (default: the run's config.json ``data_dir``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        force: replace an existing result of this control.
        progress: called with each epoch's history row.

    Returns:
        :class:`ControlResult`.

    Raises:
        UsageError: unknown control, a bad name for the user's control, bad epochs or device.
        ArchitectureError: ``arch`` is a path to a missing or malformed architecture JSON.
        RunError: the run is not finished, or the control exists without ``force``, or
            another process is writing it.
        DivergenceError: the loss stayed non-finite past ``run.max_retries`` retries.
    """
    check_int(epochs, "--epochs", error=UsageError, low=1, optional=True)
    check_text(os.fspath(run_dir), "RUN_DIR")
    if arch is not None:
        check_control_name(control, field="--control")
        if not isinstance(arch, Architecture):
            check_text(os.fspath(arch), "--arch")
            arch = Architecture.from_json(arch)
        arch = replace(arch, meta={})
    else:
        _check_builtin(control)
        if control == SCHEDULE_CONTROL and epochs is not None:
            raise UsageError(f"--epochs: the {SCHEDULE_CONTROL} control trains the run's own rounds and fine-tune; "
                             "leave --epochs out")
    run = load_run(run_dir)
    if control == SCHEDULE_CONTROL and arch is None:
        return _train_on_schedule(run, data_dir=data_dir, device=device, force=force, progress=progress)
    if arch is None:
        arch = control_architecture(run, control)
    if control != "scratch" and run.arch is not None and arch == run.arch:
        logger.warning("control %s: its architecture is the grown net's own%s; it trains the same net as the scratch "
                       "control", control, "" if control not in CONTROLS else " (growth scaled every layer by one factor)")
    total = epochs if epochs is not None else run.summary.get("epochs")
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise RunError(f"{run.path / 'summary.json'}: epochs is {total!r}, not a positive integer; pass --epochs")
    config = dict(run.config)
    if data_dir is not None:
        config["data_dir"] = stored_dir(data_dir)
    dev = resolve_device(device)
    recipe = Recipe.from_dict(config["recipe"])
    check_memory(arch, batch_size=recipe.data.batch_size, device=dev)  # before the control's folder is made

    def refuse(out: JobFolder) -> None:
        if out.summary.exists() and not force:
            raise RunError(f"{out.path} already holds a finished control; pass --force to train it again")

    with job_folder(run.path / "controls" / control, device=dev, check=refuse, flag="RUN_DIR") as out:
        seed_all(int(config["seed"]))
        result = _train(out, control, arch, recipe, config, dev, total, progress)
        _log_result(result)
    return result


def _log_result(result: ControlResult) -> None:
    logger.info("control %s: val acc %.4f, test acc %.4f, %.2fM MACs, %.0f s -> %s",
                result.name, result.val_acc, result.test_acc, result.macs / 1e6, result.wall_time, result.path)


def fixed_width_recipe(recipe: Recipe, arch_file: Path, grown: RunRecord) -> Recipe:
    """The ``fixed_uniform`` control's recipe: ``recipe`` started from the architecture in
    ``arch_file`` (``model.seed_arch``; the ``uniform`` control's widths) with
    ``grow.signal = "off"`` (nothing grows; no MACs or params budget to check it against) and
    the ``grown`` run's rounds (:func:`same_rounds`): the final widths from the first step,
    trained exactly as the grower (DessiLBI rounds, then the fine-tune, the same epochs)."""
    return recipe.with_overrides({"model.seed_arch": str(arch_file), "model.seed_width": 0, "model.seed_depths": 0,
                                  "grow.signal": "off", "grow.deepen": False, "budget.max_macs": 0, "budget.max_params": 0,
                                  **same_rounds(grown)})


def same_rounds(grown: RunRecord) -> dict[str, int | float]:
    """Recipe overrides for a search that trains the ``grown`` run's rounds, no more and no
    fewer whatever it grows: its round count as ``budget.max_rounds`` and ``budget.min_rounds``,
    and no ``budget.time_budget`` (the grower's rounds are the schedule, not this run's clock)."""
    rounds = int(grown.summary["rounds"])
    return {"budget.max_rounds": rounds, "budget.min_rounds": rounds, "budget.time_budget": 0.0}


#: The control that is a search of its own (:func:`fixed_width_recipe`).
SCHEDULE_CONTROL = "fixed_uniform"


def _train_on_schedule(run: RunRecord, *, data_dir: str | os.PathLike | None, device: str, force: bool,
                       progress: Callable[[Mapping[str, Any]], None] | None) -> ControlResult:
    """The ``fixed_uniform`` control: a search into ``controls/fixed_uniform/`` from the
    uniform widths (written to ``controls/fixed_uniform.arch.json``, which its config names),
    with the run's recipe, seed and dataset; a finished one is replaced only with ``force``,
    an interrupted one resumes."""
    folder = run.path / "controls" / SCHEDULE_CONTROL
    finished = (folder / "summary.json").is_file()
    if finished and not force:
        raise RunError(f"{folder} already holds a finished control; pass --force to train it again")
    arch_file = run.path / "controls" / f"{SCHEDULE_CONTROL}.arch.json"
    arch_file.parent.mkdir(exist_ok=True)
    atomic_write_text(arch_file, control_architecture(run, "uniform").to_json())
    recipe = fixed_width_recipe(Recipe.from_dict(run.config["recipe"]), arch_file, run)
    reporter = None if progress is None else _EpochReporter(progress)
    result = search_or_resume(folder, dataset=run.config["dataset"], recipe=recipe, seed=int(run.config["seed"]),
                              data_dir=data_dir if data_dir is not None else run.config.get("data_dir"), device=device,
                              restart=finished, reporter=reporter, command=f"grownet baseline --control {SCHEDULE_CONTROL}")
    best = read_json(result.paths["summary"]).get("best_epoch")  # the one figure SearchResult does not carry
    control = ControlResult(SCHEDULE_CONTROL, folder, result.arch, result.val_acc, result.test_acc, result.macs,
                            result.params, result.train_flops, result.wall_time, result.epochs, int(best or 0),
                            tuple(result.events))
    _log_result(control)
    return control


class _EpochReporter(Reporter):
    """A search's progress hooks that pass each epoch's history row to ``progress``."""

    def __init__(self, progress: Callable[[Mapping[str, Any]], None]) -> None:
        self._progress = progress

    def epoch_end(self, row: Mapping[str, Any]) -> None:
        self._progress(row)


def _train(out: JobFolder, control: str, arch: Architecture, recipe: Recipe, config: Mapping[str, Any],
           device: torch.device, epochs: int, progress: Callable[[Mapping[str, Any]], None] | None) -> ControlResult:
    """Train the control through the one loop and write its folder."""
    channels_last = wants_channels_last(recipe.run.channels_last, device)
    amp = amp_dtype(recipe.run.amp, device)
    data = make_data(config, recipe, device, channels_last=channels_last)
    dims = {"num_classes": data.num_classes, "in_channels": data.in_channels, "input_size": data.input_size}
    for key, value in dims.items():
        if getattr(arch, key) != value:
            raise RunError(f"{control}: the architecture has {key} {getattr(arch, key)} but the dataset gives {value}; "
                           "is config.json's dataset the one the run was trained on?")
    compile_choice(recipe.run.compile, device, steps=0)  # run.compile = on where it cannot run: refused before out.start()
    out.start()
    model = prepare_model(build_model(arch), device, channels_last=channels_last)
    f = recipe.finetune
    phase = Phase("control", epochs, finetune_schedule(recipe, epochs=epochs, steps=len(data.train)),
                  label_smoothing=f.label_smoothing, keep_best=True, label=f"control {control}")

    def epoch_end(row: Mapping[str, Any], state: LoopState) -> None:
        out.write_history(state.history)
        if progress is not None:
            progress(row)

    c = cost(arch)
    fixed = train_fixed(Trainee(model, make_finetune_optimizer(model, recipe), c), data, phase, recipe=recipe,
                        device=device, amp=amp, on_epoch_end=epoch_end)
    state, val, test, wall = fixed.state, fixed.val, fixed.test, fixed.wall_time
    final = arch.with_meta(control=control, macs=c.macs, params=c.params, val_acc=val.acc, test_acc=test.acc,
                           dataset=config["dataset"], train_flops=state.train_flops)
    final.save(out.architecture)
    save_model(model, out.weights)
    summary = {
        "control": control, "dataset": config["dataset"], "seed": config["seed"], "val_acc": val.acc,
        "test_acc": test.acc, "val_loss": val.loss, "test_loss": test.loss, "macs": c.macs, "params": c.params,
        "train_flops": state.train_flops, "wall_time": wall, "epochs": epochs, "best_epoch": state.best_epoch,
        "optimizer": f.optimizer, "schedule": f"cosine {f.lr:g} -> {f.min_lr:g} over {epochs} epochs"
                                              + (f", warm-up {f.warmup_epochs:g} epochs" if f.warmup_epochs else ""),
        "events": state.events,
    }
    out.write_json(out.summary, summary)
    return ControlResult(control, out.path, final, val.acc, test.acc, c.macs, c.params, state.train_flops, wall, epochs,
                         state.best_epoch, tuple(state.events))


@dataclass(frozen=True)
class FixedResult:
    """What :func:`train_fixed` returns: the loop's counters, the best-validation weights' val
    and test statistics (:class:`grownet.train.EvalStats`), and the wall time in seconds."""

    state: LoopState
    val: Any
    test: Any
    wall_time: float


def train_fixed(
    net: Trainee,
    data: Any,
    phase: Phase,
    *,
    recipe: Recipe,
    device: torch.device,
    amp: torch.dtype | None,
    lower: str = "finetune.lr",
    on_epoch_end: Callable[[Mapping[str, Any], LoopState], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    state: LoopState | None = None,
    clock: Callable[[], float] | None = None,
    reporter: Reporter | None = None,
    compile: bool = True,
) -> FixedResult:
    """Train a net whose architecture does not change for ``phase`` through the one loop
    (:func:`grownet.loop.fit`, divergence policy of ``recipe`` naming ``lower``), load the
    epoch with the best validation accuracy, and evaluate it once on validation and test.
    With ``compile``, the net is compiled in place first when ``run.compile`` says so
    (:func:`grownet.train.compile_choice`; logged), so it must not be deep-copied afterwards.

    ``on_epoch_end(row, state)`` runs after each epoch's row is recorded; ``on_step`` and
    ``reporter`` are :func:`~grownet.loop.fit`'s. ``state`` (default: fresh counters) and
    ``clock`` (default: started now) let a job carry its counters and wall time across phases."""
    state = LoopState() if state is None else state
    clock = Clock() if clock is None else clock
    if compile:
        compiled = compile_choice(recipe.run.compile, device, steps=phase.epochs * len(data.train))
        logger.info("%s: %s", phase.label or phase.name, compiled)
        compiled.apply(net.model)  # in place: the caller's model (and net.best) keep the plain module's keys
    hook = None if on_epoch_end is None else (lambda row: on_epoch_end(row, state))
    fit(net, data, state, phase, last_good=InMemory(net, state, data.train, device),
        divergence=Divergence.from_recipe(recipe, lower=lower), clock=clock, reporter=reporter, on_epoch_end=hook,
        on_step=on_step, amp=amp)
    if net.best is not None:
        net.model.load_state_dict(net.best)
    val = evaluate(net.model, data.val, amp=amp)
    test = evaluate(net.model, data.test, amp=amp)
    return FixedResult(state, val, test, round(clock(), 3))


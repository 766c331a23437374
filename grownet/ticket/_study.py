"""The ticket study: does DessiLBI train as well as SGD, and is its early ticket a winning one?

For every seed ``k`` in ``range(seeds)`` one dense net (the recipe's ``[model]``, one
initialisation ``seed-k/init.pt`` shared by the arms that start from it) and one data split
(``data.*`` with seed ``k``) give seven arms, each in ``OUT/seed-k/<arm>/``:

========== ============================================================== ========================
arm        net and start                                                  training
========== ============================================================== ========================
sgd        dense, the shared init                                         SGD, E epochs (claim 1)
lbi        dense, the shared init                                         DessiLBI, E epochs
rewound    ticket: lbi's filters kept at the ticket epoch, rewound to the SGD, E epochs (claim 2)
           shared init
finetuned  ticket: the same filters cut from lbi's trained weights        SGD, F epochs at lr x
                                                                          ``finetune_lr_scale``
scratch    (c) the ticket's widths, a fresh init                          SGD, E epochs
random     (d) random filters with the ticket's per-layer counts, rewound SGD, E epochs
           to the shared init
uniform    (e) the dense net's widths x one factor, at the ticket's MACs, SGD, E epochs
           a fresh init
========== ============================================================== ========================

*SGD* is the recipe's ``[finetune]`` optimizer (momentum SGD) with its cosine schedule
(``finetune.lr`` to ``finetune.min_lr`` after its warm-up) over the arm's epochs; *DessiLBI*
is the ``[optim]`` optimizer (κ, ν, λ, momentum, weight decay) on the same schedule, so the
two dense arms differ in the optimizer alone. Every arm sees the same batches in the same
order, uses ``finetune.label_smoothing``, keeps the epoch with the best validation accuracy
and is tested once on it.

**The ticket** is taken from the lbi arm at epoch ``T = max(1, round(ticket_at x E))`` (a
stated rule, 15% of E by default): each filter's importance accumulated over those T epochs
(:mod:`grownet.signal`, scale-free), each over its layer's mean (``relative_to="layer"``), and
one global threshold solved so that the ticket keeps ``target`` of the dense MACs
(:func:`grownet.ticket.solve_keep`). ``ticket.json`` also keeps
what Γ's support held at T, for comparison. The rewound and random arms slice the shared
init without folding anything; the fine-tuned arm folds the removed channels' constants
(:func:`grownet.ticket.prune_model`, ``fold="mean"``).

The folder gets ``runs.csv`` (one row per arm and seed), ``summary.json`` (per arm: mean and
sample standard deviation of every metric; the ticket's MACs fraction, threshold and per-layer
kept fractions; the paired test-accuracy differences of :data:`DIFFERENCES`) and
``study.html``. Rerunning the same call continues: finished arms are read back, an arm
interrupted mid-way is trained again from its start. Several processes may run the same call
on one folder at once (on one GPU, say): each seed is trained by the first process that locks
it (``seed-k/.lock``), the others go on to the next seed, and every process writes the summary
of the seeds finished when it ends (the last to end, of all of them).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..arch import Architecture
from ..baseline import train_fixed, uniform_architecture
from ..cost import cost
from ..data import derive_seed
from ..errors import RunError, UsageError
from ..files import stored_dir
from ..job import finetune_schedule, make_data, make_dessilbi, make_finetune_optimizer, seed_all, seed_arch
from ..loop import Phase, Trainee
from ..models import build_model, check_memory
from ..recipe import Recipe, resolve_recipe
from ..runfolder import JobFolder, RunLock, job_folder
from ..signal import ImportanceMeter
from ..study import METRICS, StudyResult, check_study_config, mean_std, read_summary, write_study_files
from ..train import amp_dtype, prepare_model, resolve_device, wants_channels_last
from ..validate import check_int, check_text, read_json
from ..weights import save_model
from ._prune import filter_support, layer_supports, prune_model
from ._threshold import RELATIVE_TO, random_keep, solve_keep

__all__ = ["TICKET_ARMS", "ARM_LABELS", "DIFFERENCES", "run_ticket_study", "summarize_ticket_study"]

logger = logging.getLogger(__name__)

#: arm -> label, in table order.
ARM_LABELS = {
    "sgd": "dense, SGD",
    "lbi": "dense, DessiLBI",
    "rewound": "ticket, rewound to init and retrained",
    "finetuned": "ticket, fine-tuned from the trained weights",
    "scratch": "ticket widths, random init (c)",
    "random": "random filters at the ticket's counts, rewound (d)",
    "uniform": "uniform width at the ticket's MACs (e)",
}
TICKET_ARMS = tuple(ARM_LABELS)
#: Paired test-accuracy differences the summary reports (first arm minus second, per seed).
DIFFERENCES = (("lbi", "sgd"), ("rewound", "sgd"), ("finetuned", "sgd"), ("rewound", "scratch"), ("rewound", "random"),
               ("rewound", "uniform"), ("finetuned", "scratch"), ("finetuned", "random"), ("finetuned", "uniform"))


def run_ticket_study(
    dataset: str,
    *,
    out: str | os.PathLike,
    recipe: Any = None,
    seeds: int = 3,
    epochs: int | None = None,
    ticket_at: float = 0.15,
    target: float = 0.5,
    finetune_epochs: int | None = None,
    finetune_lr_scale: float = 0.1,
    relative_to: str = "layer",
    data_dir: str | os.PathLike | None = None,
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
) -> StudyResult:
    """Run (or continue) the ticket study in ``out`` and write its CSV, summary and page.

    Args:
        dataset: a grownet dataset name (``"cifar10"``, ``"npz:PATH"``, ...).
        out: the study folder (created; a rerun continues it).
        recipe: a Recipe, a TOML path or a bundled name (default ``"ticket-study-cpu"``):
            ``[model]`` is the dense net, ``[data]`` the split, ``[finetune]`` SGD and the
            schedule, ``[optim]`` DessiLBI.
        seeds: number of seeds (0 .. seeds-1).
        epochs: E, the epochs of every full-length arm (default ``finetune.epochs``).
        ticket_at: the ticket epoch as a fraction of E (T = max(1, round(ticket_at x E))).
        target: the ticket's MACs as a fraction of the dense net's, in (0, 1].
        finetune_epochs: F, the fine-tuned arm's epochs (default max(1, round(E / 4))).
        finetune_lr_scale: the fine-tuned arm's schedule is the SGD schedule times this.
        relative_to: the ticket threshold's reference, ``"layer"`` (default: each filter's
            importance over its layer's mean) or ``"net"`` (:func:`grownet.ticket.solve_keep`;
            README "Winning tickets" for the measured difference).
        data_dir: folder holding the dataset.
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        overrides: ``{"finetune.lr": 0.05, ...}`` applied on top of ``recipe``.

    Raises:
        UsageError: a bad argument. RunError: ``out`` holds a study of another configuration.
    """
    check_int(seeds, "--seeds", error=UsageError, low=1, high=100)
    r = resolve_recipe("ticket-study-cpu" if recipe is None else recipe, overrides)
    e = r.finetune.epochs if epochs is None else epochs
    check_int(e, "--epochs", error=UsageError, low=1, high=10_000)
    for name, value, low, high in (("--ticket-at", ticket_at, 0.0, 1.0), ("--target", target, 0.0, 1.0),
                                   ("--finetune-lr-scale", finetune_lr_scale, 0.0, 10.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
            raise UsageError(f"{name}: must be a number in ({low:g}, {high:g}], got {value!r}")
    if relative_to not in RELATIVE_TO:
        raise UsageError(f"--relative-to: must be one of {', '.join(RELATIVE_TO)}, got {relative_to!r}")
    f = max(1, round(e / 4)) if finetune_epochs is None else finetune_epochs
    check_int(f, "--finetune-epochs", error=UsageError, low=1, high=10_000)
    path = Path(check_text(os.fspath(out), "--out"))
    settings = {"epochs": e, "ticket_epoch": max(1, math.floor(ticket_at * e + 0.5)), "target": float(target),
                "finetune_epochs": f, "finetune_lr_scale": float(finetune_lr_scale)}
    if relative_to != "net":  # a study folder written before the option existed stays valid
        settings["relative_to"] = relative_to
    config = {"kind": "ticket", "dataset": dataset, "recipe": r.to_dict(), "settings": settings,
              "data_dir": stored_dir(data_dir)}
    check_study_config(path, config)
    dev = resolve_device(device)
    seeds_ = [_Seed(path / f"seed-{seed}", seed, dataset, data_dir, r, settings, dev) for seed in range(seeds)]
    for one in seeds_:
        if one.read() is not None:
            continue  # finished: nothing to train (and nothing written)
        with _seed_lock(one.root) as mine:
            if not mine:
                logger.info("ticket study: seed %d is being trained by another process; going on", one.seed)
                continue
            one.run()
        _write(path, _finished(seeds_), settings)  # partial results are readable while the study runs
    rows = _finished(seeds_)
    return StudyResult(path, rows, _write(path, rows, settings))


@contextlib.contextmanager
def _seed_lock(root: Path) -> Iterator[bool]:
    """Hold ``root``'s lock for the body (True), or yield False when another process holds it:
    several workers may run one study, each seed trained by one of them."""
    root.mkdir(parents=True, exist_ok=True)
    lock = RunLock(root)
    try:
        lock.__enter__()
    except RunError:
        yield False
        return
    try:
        yield True
    finally:
        lock.__exit__(None, None, None)


def _finished(seeds: Sequence["_Seed"]) -> list[dict[str, Any]]:
    """The rows of every seed whose seven arms are finished, in seed order."""
    return [row for one in seeds if (rows := one.read()) is not None for row in rows]


class _Seed:
    """One seed's seven arms (see the module docstring); each arm is read back when finished."""

    def __init__(self, root: Path, seed: int, dataset: str, data_dir: Any, recipe: Recipe, settings: Mapping[str, Any],
                 device: torch.device) -> None:
        self.root, self.seed, self.recipe, self.s, self.device = root, seed, recipe, settings, device
        self.config = {"dataset": dataset, "data_dir": stored_dir(data_dir), "seed": seed}
        self.channels_last = wants_channels_last(recipe.run.channels_last, device)
        self.amp = amp_dtype(recipe.run.amp, device)
        self._data: Any = None

    @property
    def data(self) -> Any:
        if self._data is None:  # loaded only when an arm trains
            self._data = make_data(self.config, self.recipe, self.device, channels_last=self.channels_last)
        return self._data

    def run(self) -> None:
        """Train the arms not finished yet (the caller holds the seed's lock)."""
        self.init = self._init_state()
        self._arms(train=True)

    def read(self) -> list[dict[str, Any]] | None:
        """The seven arms' rows, or None while one is not finished."""
        return self._arms(train=False) if (self.root / "architecture.json").exists() else None

    def _arms(self, *, train: bool) -> list[dict[str, Any]] | None:
        dense_arms = [self._arm(arm, self.dense, self._from_init, sgd=arm == "sgd", train=train) for arm in ("sgd", "lbi")]
        if None in dense_arms:
            return None
        ticket = read_json(self.root / "lbi" / "ticket.json", error=RunError,
                           missing=f"missing; delete {self.root / 'lbi'} to train the lbi arm again")
        keep = {k: list(v) for k, v in ticket["keep"].items()}
        counts = {layer: len(idx) for layer, idx in keep.items()}
        small = self.dense.with_widths(counts)
        drawn = random_keep(self.dense, counts, seed=derive_seed("ticket-study.random", self.seed))
        uniform = uniform_architecture(self.dense, cost(small).macs)
        rows = dense_arms + [
            self._arm("rewound", small, lambda: self._sliced(self.init, keep, fold="none"), sgd=True, train=train),
            self._arm("finetuned", small, lambda: self._sliced(self._lbi_weights(), keep, fold="mean"), sgd=True,
                      train=train, epochs=self.s["finetune_epochs"], lr_scale=self.s["finetune_lr_scale"]),
            self._arm("scratch", small, lambda: build_model(small), sgd=True, train=train),
            self._arm("random", small, lambda: self._sliced(self.init, drawn, fold="none"), sgd=True, train=train),
            self._arm("uniform", uniform, lambda: build_model(uniform), sgd=True, train=train),
        ]
        if None in rows:
            return None
        for row in rows:
            row["kept_fraction"] = {layer: round(w / self.dense.width(layer), 6) for layer, w in row["widths"].items()}
            row["ticket_macs_fraction"] = ticket["macs_fraction"]
        return rows

    # -- the shared start ---------------------------------------------------------------------------
    @functools.cached_property
    def dense(self) -> Architecture:
        """The dense net (``architecture.json``; written from the recipe on the first call)."""
        file = self.root / "architecture.json"
        if file.exists():
            return Architecture.from_json(file)
        arch = seed_arch(self.recipe, self.data)
        check_memory(arch, batch_size=self.recipe.data.batch_size, device=self.device)
        arch.save(file)
        return arch

    def _init_state(self) -> dict[str, torch.Tensor]:
        file = self.root / "init.pt"
        if not file.exists():
            seed_all(derive_seed("ticket-study.init", self.seed))
            save_model(build_model(self.dense), file)
        return torch.load(file, map_location="cpu", weights_only=True)

    def _from_init(self) -> nn.Module:
        model = build_model(self.dense)
        model.load_state_dict(self.init)
        return model

    def _lbi_weights(self) -> dict[str, torch.Tensor]:
        return torch.load(self.root / "lbi" / "weights.pt", map_location="cpu", weights_only=True)

    def _sliced(self, state: Mapping[str, torch.Tensor], keep: Mapping[str, Sequence[int]], *, fold: str) -> nn.Module:
        model = build_model(self.dense)
        model.load_state_dict(state)
        pruned = prune_model(model, keep, fold=fold).model
        pruned.train()
        return pruned

    # -- one arm ------------------------------------------------------------------------------------
    def _arm(self, arm: str, arch: Architecture, make: Callable[[], nn.Module], *, sgd: bool, train: bool,
             epochs: int | None = None, lr_scale: float = 1.0) -> dict[str, Any] | None:
        """The arm's row: read back when finished, else trained (``train``) or None."""
        folder = self.root / arm
        if not (folder / "summary.json").exists():
            if not train:
                return None
            if folder.exists():
                shutil.rmtree(folder)  # an arm interrupted mid-way starts again
            logger.info("ticket study: seed %d, arm %s", self.seed, arm)
            with job_folder(folder, device=self.device) as out:
                out.start()
                seed_all(derive_seed("ticket-study.arm", self.seed, arm))  # fresh inits, per arm
                self._train(out, arm, arch, make(), sgd=sgd, epochs=epochs or self.s["epochs"], lr_scale=lr_scale)
        return _read_row(folder / "summary.json", arm, self.seed)

    def _train(self, out: JobFolder, arm: str, arch: Architecture, model: nn.Module, *, sgd: bool, epochs: int,
               lr_scale: float) -> None:
        r, data = self.recipe, self.data
        model = prepare_model(model, self.device, channels_last=self.channels_last)
        opt = make_finetune_optimizer(model, r) if sgd else make_dessilbi(model, r)
        base = finetune_schedule(r, epochs=epochs, steps=len(data.train))
        phase = Phase(arm, epochs, lambda e, i: lr_scale * base(e, i), label_smoothing=r.finetune.label_smoothing,
                      keep_best=True, round=1, label=f"seed {self.seed} {arm}")
        data.train.set_epoch(0)  # every arm sees the same batches
        hooks = _TicketHooks(self, model, opt, out) if arm == "lbi" else None

        def epoch_end(row: Mapping[str, Any], state: Any) -> None:
            if hooks is not None:
                hooks.epoch_end(state.epoch)
            out.write_history(state.history)

        c, f = cost(arch), r.finetune
        fixed = train_fixed(Trainee(model, opt, c), data, phase, recipe=r, device=self.device, amp=self.amp,
                            lower="finetune.lr" if sgd else "optim.lr", on_epoch_end=epoch_end,
                            on_step=hooks.step if hooks else None)
        arch.save(out.architecture)
        if arm == "lbi":
            save_model(model, out.weights)  # the best-validation weights the fine-tuned arm starts from
        out.write_json(out.summary, {
            "arm": arm, "label": ARM_LABELS[arm], "seed": self.seed, "val_acc": fixed.val.acc, "test_acc": fixed.test.acc,
            "val_loss": fixed.val.loss, "test_loss": fixed.test.loss, "macs": c.macs, "params": c.params,
            "train_flops": fixed.state.train_flops, "wall_time": fixed.wall_time, "epochs": epochs,
            "best_epoch": fixed.state.best_epoch, "optimizer": "sgd" if sgd else "dessilbi",
            "schedule": f"cosine {lr_scale * f.lr:g} -> {lr_scale * f.min_lr:g} over {epochs} epochs"
                        + (f", warm-up {f.warmup_epochs:g} epochs" if f.warmup_epochs else ""),
            "widths": arch.layer_widths(), "events": fixed.state.events,
        })
        logger.info("ticket study: seed %d %s: val %.4f test %.4f, %.2fM MACs, %.0f s", self.seed, arm, fixed.val.acc,
                    fixed.test.acc, c.macs / 1e6, fixed.wall_time)


class _TicketHooks:
    """The lbi arm's hooks: importance over the first T epochs, then the ticket (``ticket.json``)."""

    def __init__(self, seed: _Seed, model: nn.Module, opt: torch.optim.Optimizer, out: JobFolder) -> None:
        self.seed, self.model, self.opt, self.out = seed, model, opt, out
        self.meter: ImportanceMeter | None = ImportanceMeter(model, seed.dense, rho=seed.recipe.grow.rho)

    def step(self, step_in_epoch: int, global_step: int) -> None:
        if self.meter is not None:
            self.meter.observe()

    def epoch_end(self, epoch: int) -> None:
        if self.meter is None or epoch != self.seed.s["ticket_epoch"]:
            return
        dense, target, relative_to = self.seed.dense, self.seed.s["target"], self.seed.s.get("relative_to", "net")
        solution = solve_keep(dense, self.meter.importance, target, relative_to=relative_to)
        support = layer_supports(dense, filter_support(self.model, self.opt))
        self.out.write_json(self.out.path / "ticket.json", {
            "epoch": epoch, "steps": self.meter.steps, "target": target, "relative_to": relative_to,
            "threshold": solution.threshold,
            "macs_fraction": solution.macs_fraction, "kept_fraction": solution.kept_fraction, "keep": solution.keep,
            "gamma_support_fraction": {k: round(float(v.float().mean()), 6) for k, v in support.items()},
            "importance": {k: [float(f"{x:.6g}") for x in v.tolist()] for k, v in self.meter.importance.items()},
        })
        logger.info("ticket at epoch %d: keeps %.1f%% of the MACs (target %.0f%%), widths %s", epoch,
                    100 * solution.macs_fraction, 100 * target, {k: len(v) for k, v in solution.keep.items()})
        self.meter = None


def _read_row(path: Path, arm: str, seed: int) -> dict[str, Any]:
    """An arm's summary.json as a row, checked (:func:`grownet.study.read_summary`, then the
    arm's own fields; RunError naming file and field)."""
    s = read_summary(path, "widths")
    widths = s["widths"]
    if not isinstance(widths, dict) or not all(isinstance(w, int) and w > 0 for w in widths.values()):
        raise RunError(f"{path}: widths: not an object of positive layer widths; the file was changed or damaged "
                       f"(delete {path.parent} to train that arm again)")
    for key, value in (("arm", arm), ("seed", seed)):
        if s.get(key) != value:
            raise RunError(f"{path}: {key}: {s.get(key)!r}, expected {value!r}; the file was changed or damaged "
                           f"(delete {path.parent} to train that arm again)")
    return {"arm": arm, "seed": seed, **{k: s[k] for k in METRICS}, "epochs": s.get("epochs"), "widths": dict(widths)}


# ---- summary and files ----------------------------------------------------------------------------------


def summarize_ticket_study(rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Per arm: ``n``, its label and ``{"mean", "std"}`` of every metric (sample standard
    deviation, 0 for one run); the ticket's MACs fraction and per-layer kept fraction over
    seeds; and per pair of :data:`DIFFERENCES` the paired test-accuracy difference
    (``{"mean", "std", "n"}``, fractions)."""
    arms: dict[str, Any] = {}
    for arm in TICKET_ARMS:
        runs = [r for r in rows if r["arm"] == arm]
        if runs:
            arms[arm] = {"n": len(runs), "label": ARM_LABELS[arm], **{k: mean_std([float(r[k]) for r in runs]) for k in METRICS}}
    tickets = [r for r in rows if r["arm"] == "rewound"]
    ticket: dict[str, Any] = dict(settings)
    if tickets:
        ticket["macs_fraction"] = mean_std([float(r["ticket_macs_fraction"]) for r in tickets])
        ticket["kept_fraction"] = {layer: mean_std([r["kept_fraction"][layer] for r in tickets]) for layer in tickets[0]["kept_fraction"]}
    by = {(r["arm"], r["seed"]): r for r in rows}
    diffs = {}
    for a, b in DIFFERENCES:
        d = [by[(a, s)]["test_acc"] - by[(b, s)]["test_acc"] for (arm, s) in by if arm == a and (b, s) in by]
        if d:
            diffs[f"{a}-{b}"] = {**mean_std(d), "n": len(d)}
    return {"arms": arms, "ticket": ticket, "differences": diffs}


def _write(path: Path, rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict[str, Any]:
    from ._study_page import write_ticket_study_page

    summary = summarize_ticket_study(rows, settings)
    write_study_files(path, ["arm", "seed", *METRICS, "epochs", "widths"],
                      [[r["arm"], r["seed"], *(r[k] for k in METRICS), r["epochs"],
                        " ".join(str(w) for w in r["widths"].values())] for r in rows],
                      summary, lambda page: write_ticket_study_page(page, rows, summary))
    return summary

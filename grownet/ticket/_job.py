"""The ticket job: DessiLBI training with per-epoch supports, pruning, fine-tune and fresh control."""

from __future__ import annotations

import copy
import io
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from .._version import __version__
from ..arch import Architecture
from ..baseline import train_fixed
from ..cost import cost
from ..errors import UsageError
from ..files import atomic_write_bytes, stored_dir
from ..job import (finetune_schedule, make_data, make_dessilbi, make_finetune_optimizer, provenance, rng_scope, seed_all,
                   seed_arch)
from ..loop import Clock, LoopState, Phase, Trainee, cpu_state
from ..models import as_architecture, build_model, check_memory
from ..progress import Reporter
from ..recipe import resolve_recipe
from ..runfolder import JobFolder, RunFolder, job_folder
from ..train import amp_dtype, compile_choice, evaluate, prepare_model, resolve_device, wants_channels_last
from ..validate import check_int, check_text
from ..weights import save_model
from ._prune import (FOLD_MODES, FoldRecord, filter_scores, filter_support, keep_sets, layer_supports, mask_model,
                     prune_model)
from ._report import write_ticket_report

log = logging.getLogger("grownet.ticket")


# ---- the ticket job ---------------------------------------------------------------------------------

#: Rows of the comparison table: name -> label, in table order.
SCORE_LABELS = {
    "dense": "dense net (DessiLBI)",
    "masked": "masked dense net (removed filters zeroed)",
    "ticket": "ticket, pruned (no fine-tune)",
    "finetuned": "ticket, fine-tuned",
    "fresh": "ticket widths, fresh init (control)",
}
SUPPORTS_FORMAT = "grownet.supports"


@dataclass(frozen=True)
class Score:
    """One net of the comparison table.

    Attributes:
        name: a key of :data:`SCORE_LABELS`.
        macs, params: inference MACs per image and parameters (:func:`grownet.cost.cost`); the
            masked net is the dense net physically, so it carries the dense cost.
        val_acc, test_acc: accuracies (fractions) of the selected weights.
        epoch: the epoch whose weights are scored (best validation accuracy for trained rows;
            the ticket epoch for the masked and pruned nets); ``None`` when not trained.
        epochs: epochs this net was trained in its phase (0 for masked/pruned).
        train_flops: training FLOPs of its phase.
    """

    name: str
    macs: int
    params: int
    val_acc: float | None
    test_acc: float | None
    epoch: int | None = None
    epochs: int = 0
    train_flops: int = 0

    @property
    def label(self) -> str:
        return SCORE_LABELS[self.name]

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "macs": self.macs, "params": self.params, "val_acc": self.val_acc,
                "test_acc": self.test_acc, "epoch": self.epoch, "epochs": self.epochs, "train_flops": self.train_flops}


@dataclass(frozen=True)
class TicketResult:
    """What :func:`ticket` produced.

    Attributes:
        out: the output folder (``None`` when nothing was written).
        dense_arch, arch: the trained architecture and the ticket's (reduced) one.
        epochs, at_epoch, finetune_epochs: dense epochs, the epoch the ticket was taken at,
            fine-tune (and control) epochs.
        keep: layer -> dense filter indices the ticket keeps.
        support_sizes: epoch -> layer -> filters in Γ's support (layer union, before the
            at-least-one rule).
        scores: name -> :class:`Score` (keys of :data:`SCORE_LABELS`; ``finetuned`` and
            ``fresh`` absent when ``finetune_epochs`` is 0).
        fold: the fold mode used for the ticket; folds: what was folded.
        fold_check: fold mode -> ``{"val_acc", "test_acc"}`` of the pruned net built with that
            mode (all of :data:`FOLD_MODES`), to compare with the masked net.
        max_logit_diff: largest |masked - pruned| logit on the first test batch (eval mode).
        wall_time: seconds for the whole job.
        events: divergence retries of every phase (:mod:`grownet.loop`), as in summary.json.
    """

    out: Path | None
    dense_arch: Architecture
    arch: Architecture
    epochs: int
    at_epoch: int
    finetune_epochs: int
    keep: dict[str, list[int]]
    support_sizes: dict[int, dict[str, int]]
    scores: dict[str, Score]
    fold: str
    folds: tuple[FoldRecord, ...]
    fold_check: dict[str, dict[str, float]]
    max_logit_diff: float
    wall_time: float
    events: tuple = ()

    def table(self) -> list[Score]:
        """The comparison rows in :data:`SCORE_LABELS` order."""
        return [self.scores[n] for n in SCORE_LABELS if n in self.scores]


def resolve_arch(arch: Architecture | Mapping[str, Any] | str | os.PathLike, *, num_classes: int, in_channels: int,
                 input_size: int) -> Architecture:
    """The architecture to train: an Architecture, its dict, a preset name of
    :mod:`grownet.seeds` (built for the dataset's shape) or an architecture JSON path.

    Raises:
        UsageError: an unknown preset, or an architecture whose classes, channels or input size
            do not match the dataset. ArchitectureError: an invalid JSON file.
    """
    from ..seeds import PRESETS, preset

    dims = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
    if isinstance(arch, str) and arch in PRESETS:
        return preset(arch, **dims)
    if isinstance(arch, (str, os.PathLike)):
        if not Path(arch).exists() and not str(arch).endswith(".json"):
            raise UsageError(f"--arch: {str(arch)!r} is neither a preset ({', '.join(PRESETS)}) nor an architecture JSON file")
        arch = Architecture.from_json(arch)
    arch = as_architecture(arch)
    for key, value in dims.items():
        if getattr(arch, key) != value:
            raise UsageError(f"--arch: the architecture has {key} {getattr(arch, key)}, the dataset needs {value}")
    return arch


def ticket(
    arch: Architecture | Mapping[str, Any] | str | os.PathLike | None = None,
    *,
    epochs: int,
    dataset: str = "cifar10",
    recipe: Any = None,
    overrides: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    at_epoch: int | None = None,
    finetune_epochs: int | None = None,
    fold: str = "mean",
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    device: str = "auto",
    force: bool = False,
    reporter: Any = None,
    command: str | None = None,
) -> TicketResult:
    """Find a winning ticket: train ``arch`` with DessiLBI, prune it to Γ's support at
    ``at_epoch``, fine-tune it, and train the same widths from scratch as a control.

    Steps: (1) train ``epochs`` epochs with DessiLBI at the constant rate ``optim.lr``,
    recording every layer's support after each epoch (``supports.json``) and keeping the
    model at ``at_epoch`` (``checkpoints/epoch-K.pt``); (2) build the keep sets
    (:func:`keep_sets`), the masked net and the pruned net (:func:`prune_model`); (3)
    fine-tune the pruned net ``finetune_epochs`` epochs with the ``[finetune]`` recipe
    (optimizer, cosine-decayed lr, fresh optimizer state), and train the same reduced
    architecture from a fresh initialisation with the same schedule. Trained nets keep the
    epoch with the best validation accuracy; the test set is evaluated once per net.

    Args:
        arch: the net to train (see :func:`resolve_arch`); ``None``: the recipe's ``[model]``
            net (``seed_arch``, ``seed_width``, ``seed_depths``, as a search builds its seed).
        epochs: DessiLBI epochs of the dense net (>= 1).
        dataset, data_dir: the dataset (grownet.data names).
        recipe: a Recipe or a TOML path (default: the reference recipe); ``overrides``
            dotted keys on top.
        out: output folder; ``None`` writes nothing.
        at_epoch: the epoch whose support and weights make the ticket (default ``epochs``).
        finetune_epochs: fine-tune and control epochs (default ``finetune.epochs``).
        fold: fold mode of :func:`prune_model`.
        seed: random seed (data split, order, augmentation, initialisations).
        device: ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``.
        force: overwrite an existing output folder of a grownet run.
        reporter: progress hooks (:class:`grownet.progress.Reporter`; ``finish`` receives the
            TicketResult).
        command: the command line recorded in config.json.

    Returns:
        :class:`TicketResult`.

    Raises:
        UsageError: bad arguments. ConfigError, DataError, ArchitectureError: invalid inputs.
        RunError: the output folder exists (without ``force``) or is locked.
        DivergenceError: a training loss that stayed non-finite past ``run.max_retries``
            retries (:mod:`grownet.loop`'s divergence policy).
    """
    check_int(epochs, "--epochs", error=UsageError, low=1)
    if at_epoch is not None:
        check_int(at_epoch, "--at-epoch", error=UsageError, low=1)
        if at_epoch > epochs:
            raise UsageError(f"--at-epoch: must be at most --epochs ({epochs}), got {at_epoch}")
    if finetune_epochs is not None:
        check_int(finetune_epochs, "--finetune-epochs", error=UsageError)
    check_int(seed, "--seed", error=UsageError)
    if out is not None:
        check_text(os.fspath(out), "--out")
    if fold not in FOLD_MODES:
        raise UsageError(f"--fold: must be one of {', '.join(FOLD_MODES)}, got {fold!r}")
    r = resolve_recipe(recipe, overrides)
    if isinstance(arch, (str, os.PathLike)) and str(arch).endswith(".json"):
        arch = Architecture.from_json(arch)  # a bad file is refused before anything is written
    dev = resolve_device(device)
    if isinstance(arch, (Architecture, Mapping)):  # known before the data: refused before any folder is made
        check_memory(as_architecture(arch), batch_size=r.data.batch_size, device=dev)
    job = _TicketJob(
        recipe=r, arch=arch, epochs=epochs, dataset=dataset,
        at_epoch=at_epoch or epochs, finetune_epochs=r.finetune.epochs if finetune_epochs is None else finetune_epochs,
        fold=fold, data_dir=data_dir, seed=seed, device=dev, reporter=reporter or Reporter(),
        command=command,
    )
    try:
        if out is None:
            with rng_scope(job.device):
                return job.run(None)
        with job_folder(out, device=job.device, check=lambda f: f.prepare(resume=False, force=force)) as folder:
            return job.run(folder)
    finally:
        job.reporter.close()


class _TicketJob:
    """One ticket run: holds the data, the models and the rows while it lasts."""

    def __init__(self, *, recipe: Any, arch: Any, epochs: int, dataset: str, at_epoch: int, finetune_epochs: int,
                 fold: str, data_dir: Any, seed: int, device: torch.device, reporter: Any, command: str | None) -> None:
        self.recipe, self.arch_spec, self.epochs, self.dataset = recipe, arch, epochs, dataset
        self.at_epoch, self.finetune_epochs, self.fold = at_epoch, finetune_epochs, fold
        self.data_dir, self.seed, self.device, self.reporter, self.command = data_dir, seed, device, reporter, command
        self.channels_last = wants_channels_last(recipe.run.channels_last, device)
        self.amp = amp_dtype(recipe.run.amp, device)
        self.clock = Clock()
        self.folder: JobFolder | None = None
        self.history: list[dict[str, Any]] = []  # the dense net's rows, then the fine-tune's
        self.supports: dict[int, dict[str, torch.Tensor]] = {}
        self.state = LoopState(history=self.history)  # the last phase's counters (retries and events carry on)

    # -- the steps --------------------------------------------------------------------------------
    def run(self, folder: JobFolder | None) -> TicketResult:
        self.folder = folder
        seed_all(self.seed)
        arch = self._start()
        dense, snapshot = self._train_dense(arch)
        scores = {"dense": dense}
        pruned, fold_check, diff = self._prune(arch, snapshot, scores)
        small, final_model = pruned.arch, pruned.model
        if self.finetune_epochs > 0:
            final_model = self._finetune(pruned.model, small, scores, flops0=dense.train_flops)
        result = TicketResult(
            out=folder.path if folder else None, dense_arch=arch, arch=small, epochs=self.epochs, at_epoch=self.at_epoch,
            finetune_epochs=self.finetune_epochs, keep=snapshot["keep"],
            support_sizes={e: {k: int(v.sum()) for k, v in s.items()} for e, s in self.supports.items()},
            scores=scores, fold=self.fold, folds=tuple(pruned.folds), fold_check=fold_check, max_logit_diff=diff,
            wall_time=round(self.clock(), 3), events=tuple(self.state.events),
        )
        if folder is not None:
            self._write_final(folder, result, final_model)
        self.reporter.finish(result)
        return result

    def _start(self) -> Architecture:
        """Load the data, build the architecture for it, write config.json; the inputs are
        good from here on (a failure no longer restores the folder)."""
        r, folder = self.recipe, self.folder
        config = self._config()
        self.data = make_data(config, r, self.device, channels_last=self.channels_last)
        self.compile = compile_choice(r.run.compile, self.device, steps=self.finetune_epochs * len(self.data.train))
        if self.arch_spec is None:
            arch = seed_arch(r, self.data)
        else:
            arch = resolve_arch(self.arch_spec, num_classes=self.data.num_classes, in_channels=self.data.in_channels,
                                input_size=self.data.input_size)
        arch = Architecture.from_dict({**arch.to_dict(), "meta": {}})
        check_memory(arch, batch_size=r.data.batch_size, device=self.device)  # a preset, at the dataset's shape
        if folder is not None:
            folder.write_json(folder.config, config)
            folder.start()  # the run --force replaces goes
        self.dense_arch = arch
        log.info("ticket: training %s (%s) for %d DessiLBI epochs; ticket at epoch %d", arch.family, arch.layer_widths(),
                 self.epochs, self.at_epoch)
        self.reporter.start(run_dir=folder.path if folder else None, arch=arch, recipe=r, resumed=False)
        return arch

    def _train_dense(self, arch: Architecture) -> tuple[Score, dict[str, Any]]:
        """(1) The dense net with DessiLBI at ``optim.lr``, Γ's supports after every epoch, the
        model and keep sets at the ticket epoch. Returns the dense score and that snapshot."""
        r, folder = self.recipe, self.folder
        dense = self._prepare(build_model(arch))
        opt = make_dessilbi(dense, r)
        snapshot: dict[str, Any] = {}

        def supports(epoch: int) -> None:
            sup = layer_supports(arch, filter_support(dense, opt))
            self.supports[epoch] = sup
            log.info("epoch %d support sizes: %s", epoch, {k: int(v.sum()) for k, v in sup.items()})
            if epoch == self.at_epoch:
                snapshot["state"] = cpu_state(dense)
                snapshot["keep"] = keep_sets(arch, sup, scores=filter_scores(arch, dense, opt))
                snapshot["support"] = sup
                if folder is not None:
                    self._save_checkpoint(folder, epoch, snapshot)
            if folder is not None:
                self._write_supports(folder, arch, snapshot.get("keep"))

        lr = r.optim.lr
        phase = Phase("dense", self.epochs, lambda e, i: lr, label_smoothing=r.optim.label_smoothing, keep_best=True,
                      round=1, label="ticket")
        return self._phase(phase, Trainee(dense, opt, cost(arch)), after_epoch=supports), snapshot

    def _prune(self, arch: Architecture, snapshot: Mapping[str, Any],
               scores: dict[str, Score]) -> tuple[Any, dict[str, dict[str, float]], float]:
        """(2) The masked and pruned nets of the ticket epoch, scored; the pruned net built with
        every fold mode, scored too. Returns the chosen fold's pruned net, the fold check and
        the largest masked-vs-pruned logit difference."""
        keep = snapshot["keep"]
        at = build_model(arch).to(self.device)
        at.load_state_dict(snapshot["state"])
        at.eval()
        masked = self._prepare(mask_model(at, keep))
        c_dense = cost(arch)
        m_val, m_test = self._evaluate(masked)
        scores["masked"] = Score("masked", c_dense.macs, c_dense.params, m_val, m_test, epoch=self.at_epoch)
        fold_check: dict[str, dict[str, float]] = {}
        built = {mode: prune_model(at, keep, fold=mode) for mode in FOLD_MODES}
        for mode, res in built.items():
            v, t = self._evaluate(self._prepare(res.model))
            fold_check[mode] = {"val_acc": v, "test_acc": t}
        pruned = built[self.fold]
        small = pruned.arch
        c_small = cost(small)
        scores["ticket"] = Score("ticket", c_small.macs, c_small.params, fold_check[self.fold]["val_acc"],
                                 fold_check[self.fold]["test_acc"], epoch=self.at_epoch)
        diff = self._logit_diff(masked, pruned.model)
        log.info("ticket: %s -> %s; masked test acc %.4f, pruned (%s fold) %.4f, max logit diff %.3g",
                 arch.layer_widths(), small.layer_widths(), m_test or 0.0, self.fold, scores["ticket"].test_acc or 0.0, diff)
        if self.folder is not None:
            (self.folder.path / "ticket").mkdir(exist_ok=True)
            small.with_meta(**self._meta(scores["ticket"], c_small)).save(self.folder.path / "ticket" / "architecture.json")
            save_model(pruned.model, self.folder.path / "ticket" / "weights.pt")
        return pruned, fold_check, diff

    def _finetune(self, pruned: nn.Module, small: Architecture, scores: dict[str, Score], *, flops0: int) -> nn.Module:
        """(3) Fine-tune the ticket (history rows after the dense ones) and train the same
        widths from a fresh initialisation (its own rows), both with the ``[finetune]``
        optimizer, fresh, and schedule; both see the same batches. Returns the fine-tuned net."""
        r = self.recipe
        schedule = finetune_schedule(r, epochs=self.finetune_epochs, steps=len(self.data.train))
        log.info("ticket: fine-tune and fresh control %s", self.compile)
        ft_model = self.compile.apply(self._prepare(copy.deepcopy(pruned)))
        ft = Phase("finetune", self.finetune_epochs, schedule, label_smoothing=r.finetune.label_smoothing,
                   keep_best=True, round=1, label="ticket")
        scores["finetuned"] = self._phase(ft, Trainee(ft_model, make_finetune_optimizer(ft_model, r), cost(small)),
                                          epoch=self.epochs, flops0=flops0, history=self.history)
        fresh = self.compile.apply(self._prepare(build_model(small)))
        rows: list[dict[str, Any]] = []
        scores["fresh"] = self._phase(replace(ft, name="fresh"), Trainee(fresh, make_finetune_optimizer(fresh, r), cost(small)),
                                      loader_epoch=self.epochs, history=rows)
        if self.folder is not None:
            self._write_fresh(self.folder, small, scores["fresh"], rows)
        return ft_model

    # -- helpers ----------------------------------------------------------------------------------
    def _phase(self, phase: Phase, net: Trainee, *, epoch: int = 0, flops0: int = 0, loader_epoch: int | None = None,
               history: list[dict[str, Any]] | None = None, after_epoch: Callable[[int], None] | None = None) -> Score:
        """Train ``phase`` through the one loop (history rows numbered from ``epoch + 1`` into
        ``history``, their cumulative training FLOPs from ``flops0``; the training loader from
        its epoch ``loader_epoch``, default ``epoch``), then load the phase's best-validation
        weights into the net and score them."""
        self.data.train.set_epoch(epoch if loader_epoch is None else loader_epoch)
        state = LoopState(epoch=epoch, train_flops=flops0, retries=self.state.retries, events=list(self.state.events),
                          history=self.history if history is None else history)
        self.state = state
        write = self.folder is not None and phase.name != "fresh"

        def epoch_end(row: Mapping[str, Any]) -> None:
            if after_epoch is not None:
                after_epoch(state.epoch)
            if write:
                self.folder.write_history(self.history)  # type: ignore[union-attr]
            self.reporter.epoch_end(row)

        # compile=False: the fine-tune's and the fresh control's nets come compiled as self.compile
        # chose; the dense net is deep-copied (the rewind snapshot) while it trains
        fixed = train_fixed(net, self.data, phase, recipe=self.recipe, device=self.device, amp=self.amp,
                            lower="optim.lr" if phase.name == "dense" else "finetune.lr",
                            on_epoch_end=lambda row, _: epoch_end(row), state=state, clock=self.clock,
                            reporter=self.reporter, compile=False)
        c = net.cost
        return Score(phase.name if phase.name != "finetune" else "finetuned", c.macs, c.params, fixed.val.acc,
                     fixed.test.acc, epoch=state.best_epoch, epochs=phase.epochs, train_flops=state.train_flops - flops0)

    def _config(self) -> dict[str, Any]:
        spec = self.arch_spec
        return {
            "recipe": self.recipe.to_dict(), "seed": self.seed, "dataset": self.dataset,
            "data_dir": stored_dir(self.data_dir), "device": str(self.device),
            **provenance(self.command or "grownet.ticket.ticket(...)"),
            "ticket": {"arch": spec.to_dict() if isinstance(spec, Architecture) else (
                           dict(spec) if isinstance(spec, Mapping) else (None if spec is None else str(spec))),
                       "epochs": self.epochs, "at_epoch": self.at_epoch, "finetune_epochs": self.finetune_epochs,
                       "fold": self.fold},
        }

    def _prepare(self, model: nn.Module) -> nn.Module:
        return prepare_model(model, self.device, channels_last=self.channels_last)

    def _evaluate(self, model: nn.Module) -> tuple[float, float]:
        return evaluate(model, self.data.val, amp=self.amp).acc, evaluate(model, self.data.test, amp=self.amp).acc

    def _logit_diff(self, a: nn.Module, b: nn.Module) -> float:
        x, _ = next(iter(self.data.test))
        a.eval(), b.eval()
        with torch.no_grad():
            return float((a(x).float() - b(x.to(next(b.parameters()).device)).float()).abs().max())

    def _meta(self, score: Score, c: Any) -> dict[str, Any]:
        return {"macs": c.macs, "params": c.params, "val_acc": score.val_acc, "test_acc": score.test_acc,
                "dataset": self.dataset, "grownet_version": __version__, "ticket_epoch": self.at_epoch,
                "dense_widths": self.dense_arch.layer_widths()}

    # -- files ------------------------------------------------------------------------------------
    def _save_checkpoint(self, folder: RunFolder, epoch: int, snapshot: Mapping[str, Any]) -> None:
        folder.checkpoints.mkdir(exist_ok=True)
        payload = {"format": "grownet.ticket-checkpoint", "version": 1, "epoch": epoch, "arch": self.dense_arch.to_dict(),
                   "model": snapshot["state"], "keep": snapshot["keep"],
                   "support": {k: v.clone() for k, v in snapshot["support"].items()}}
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(folder.checkpoints / f"epoch-{epoch}.pt", buf.getvalue())

    def _write_supports(self, folder: RunFolder, arch: Architecture, keep: Mapping[str, list[int]] | None) -> None:
        payload = {
            "format": SUPPORTS_FORMAT, "version": 1, "widths": arch.layer_widths(), "at_epoch": self.at_epoch,
            "sizes": {str(e): {k: int(v.sum()) for k, v in s.items()} for e, s in self.supports.items()},
            "supports": {str(e): {k: "".join("1" if b else "0" for b in v.tolist()) for k, v in s.items()}
                         for e, s in self.supports.items()},
            "keep": keep,
        }
        folder.write_json(folder.path / "supports.json", payload)

    def _write_fresh(self, folder: RunFolder, arch: Architecture, score: Score, rows: list[dict[str, Any]]) -> None:
        sub = RunFolder(folder.path / "controls" / "fresh")
        sub.path.mkdir(parents=True, exist_ok=True)
        sub.write_history(rows)
        arch.with_meta(**self._meta(score, cost(arch))).save(sub.architecture)
        sub.write_json(sub.summary, {"dataset": self.dataset, "seed": self.seed, **score.to_dict(),
                                     "wall_time": rows[-1]["wall_time"] if rows else None})

    def _write_final(self, folder: RunFolder, result: TicketResult, model: nn.Module) -> None:
        final = result.scores.get("finetuned", result.scores["ticket"])
        result.arch.with_meta(**self._meta(final, cost(result.arch))).save(folder.architecture)
        save_model(model, folder.weights)
        folder.write_history(self.history)
        folder.write_json(folder.summary, summary_dict(result, dataset=self.dataset, seed=self.seed,
                                                       classes=list(getattr(self.data, "classes", []) or [])))
        write_ticket_report(folder.path)


def summary_dict(result: TicketResult, *, dataset: str, seed: int, classes: Sequence[str] = ()) -> dict[str, Any]:
    """summary.json of a ticket folder (plain JSON types)."""
    final = result.scores.get("finetuned", result.scores["ticket"])
    return {
        "kind": "ticket", "dataset": dataset, "classes": list(classes), "seed": seed,
        "val_acc": final.val_acc, "test_acc": final.test_acc, "macs": final.macs, "params": final.params,
        "epochs": result.epochs, "at_epoch": result.at_epoch, "finetune_epochs": result.finetune_epochs,
        "wall_time": result.wall_time, "dense_arch": result.dense_arch.to_dict(), "final_arch": result.arch.to_dict(),
        "keep": result.keep, "scores": [s.to_dict() for s in result.table()], "fold": result.fold,
        "fold_check": result.fold_check, "max_logit_diff": result.max_logit_diff,
        "folds": [dict(vars(f)) for f in result.folds], "exact": all(f.exact for f in result.folds),
        "events": list(result.events),
    }

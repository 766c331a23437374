"""The ticket job: DessiLBI training with per-epoch supports, pruning, fine-tune and fresh control."""

from __future__ import annotations

import copy
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..arch import Architecture
from ..cost import cost
from ..errors import DivergenceError, GrownetError, UsageError
from ..files import atomic_write_bytes
from ..job import FILE_ONLY, log_to_file, make_data, make_dessilbi, provenance, rng_scope, seed_all, seed_arch
from ..recipe import resolve_recipe
from ..models import as_architecture, build_model
from ..runfolder import RunFolder, make_folder, remove_created
from ..train import amp_dtype, cosine_lr, evaluate, prepare_model, resolve_device, train_epoch, wants_channels_last
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


class _Clock:
    """Cumulative wall time of a job."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


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
        reporter: progress hooks with the :class:`grownet.search.Reporter` methods
            (``finish`` receives the TicketResult).
        command: the command line recorded in config.json.

    Returns:
        :class:`TicketResult`.

    Raises:
        UsageError: bad arguments. ConfigError, DataError, ArchitectureError: invalid inputs.
        RunError: the output folder exists (without ``force``) or is locked.
        DivergenceError: a non-finite training loss.
    """
    from ..search import Reporter

    _check_int("--epochs", epochs, low=1)
    if at_epoch is not None:
        _check_int("--at-epoch", at_epoch, low=1)
        if at_epoch > epochs:
            raise UsageError(f"--at-epoch: must be at most --epochs ({epochs}), got {at_epoch}")
    if finetune_epochs is not None:
        _check_int("--finetune-epochs", finetune_epochs, low=0)
    _check_int("--seed", seed, low=0)
    if fold not in FOLD_MODES:
        raise UsageError(f"--fold: must be one of {', '.join(FOLD_MODES)}, got {fold!r}")
    r = resolve_recipe(recipe, overrides)
    if isinstance(arch, (str, os.PathLike)) and str(arch).endswith(".json"):
        arch = Architecture.from_json(arch)  # a bad file is refused before anything is written
    job = _TicketJob(
        recipe=r, arch=arch, epochs=epochs, dataset=dataset,
        at_epoch=at_epoch or epochs, finetune_epochs=r.finetune.epochs if finetune_epochs is None else finetune_epochs,
        fold=fold, data_dir=data_dir, seed=seed, device=resolve_device(device), reporter=reporter or Reporter(),
        command=command,
    )
    try:
        if out is None:
            with rng_scope(job.device):
                return job.run(None)
        folder = RunFolder(out)
        created = make_folder(folder.path)
        try:
            with folder.lock():
                folder.prepare(resume=False, force=force)
                try:
                    with log_to_file(folder.log), rng_scope(job.device):
                        try:
                            return job.run(folder)
                        except GrownetError as exc:
                            log.error("%s", exc, extra=FILE_ONLY)
                            raise
                except BaseException:
                    if not job.started:  # refused before training: leave the folder as it was
                        for path in (folder.config, folder.log):
                            path.unlink(missing_ok=True)
                        folder.restore_replaced()
                    raise
        except BaseException:
            remove_created(created)  # only folders still empty
            raise
    finally:
        job.reporter.close()


def _check_int(flag: str, value: Any, *, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UsageError(f"{flag}: must be an integer >= {low}, got {value!r}")


class _TicketJob:
    """One ticket run: holds the data, the models and the rows while it lasts."""

    def __init__(self, *, recipe: Any, arch: Any, epochs: int, dataset: str, at_epoch: int, finetune_epochs: int,
                 fold: str, data_dir: Any, seed: int, device: torch.device, reporter: Any, command: str | None) -> None:
        self.recipe, self.arch_spec, self.epochs, self.dataset = recipe, arch, epochs, dataset
        self.at_epoch, self.finetune_epochs, self.fold = at_epoch, finetune_epochs, fold
        self.data_dir, self.seed, self.device, self.reporter, self.command = data_dir, seed, device, reporter, command
        self.channels_last = wants_channels_last(recipe.run.channels_last, device)
        self.amp = amp_dtype(recipe.run.amp, device)
        self.clock = _Clock()
        self.folder: RunFolder | None = None
        self.started = False  # True once the inputs are checked and training begins

    # -- the steps --------------------------------------------------------------------------------
    def run(self, folder: RunFolder | None) -> TicketResult:
        self.folder = folder
        r = self.recipe
        seed_all(self.seed)
        config = self._config()
        self.data = make_data(config, r, self.device, channels_last=self.channels_last)
        if self.arch_spec is None:
            arch = seed_arch(r, self.data)
        else:
            arch = resolve_arch(self.arch_spec, num_classes=self.data.num_classes, in_channels=self.data.in_channels,
                                input_size=self.data.input_size)
        arch = Architecture.from_dict({**arch.to_dict(), "meta": {}})
        if folder is not None:
            folder.drop_replaced()  # the inputs are good: the run --force replaces goes
            folder.write_json(folder.config, config)
        self.started = True
        self.dense_arch = arch
        log.info("ticket: training %s (%s) for %d DessiLBI epochs; ticket at epoch %d", arch.family, arch.layer_widths(),
                 self.epochs, self.at_epoch)
        self.reporter.start(run_dir=folder.path if folder else None, arch=arch, recipe=r, resumed=False)

        # (1) dense net with DessiLBI, supports after every epoch, snapshot at the ticket epoch
        dense = self._prepare(build_model(arch))
        opt = make_dessilbi(dense, r)
        self.history: list[dict[str, Any]] = []
        self.supports: dict[int, dict[str, torch.Tensor]] = {}
        snapshot: dict[str, Any] = {}

        def after_epoch(epoch: int) -> None:
            sup = layer_supports(arch, filter_support(dense, opt))
            self.supports[epoch] = sup
            log.info("epoch %d support sizes: %s", epoch, {k: int(v.sum()) for k, v in sup.items()})
            if epoch == self.at_epoch:
                snapshot["state"] = _cpu_state(dense)
                snapshot["keep"] = keep_sets(arch, sup, scores=filter_scores(arch, dense, opt))
                snapshot["support"] = sup
                if folder is not None:
                    self._save_checkpoint(folder, epoch, snapshot)
            if folder is not None:
                self._write_supports(folder, arch, snapshot.get("keep"))

        lr = r.optim.lr
        dense_phase = self._phase("dense", dense, opt, arch, epochs=self.epochs, lr_at=lambda e, i: lr,
                                  smoothing=r.optim.label_smoothing, after_epoch=after_epoch)
        dense_score = self._score("dense", dense, dense_phase, arch)

        # (2) masked and pruned nets from the ticket epoch
        keep = snapshot["keep"]
        at = build_model(arch).to(self.device)
        at.load_state_dict(snapshot["state"])
        at.eval()
        masked = self._prepare(mask_model(at, keep))
        c_dense = cost(arch)
        m_val, m_test = self._evaluate(masked)
        scores = {"dense": dense_score,
                  "masked": Score("masked", c_dense.macs, c_dense.params, m_val, m_test, epoch=self.at_epoch)}
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
        if folder is not None:
            (folder.path / "ticket").mkdir(exist_ok=True)
            small.with_meta(**self._meta(scores["ticket"], c_small)).save(folder.path / "ticket" / "architecture.json")
            save_model(pruned.model, folder.path / "ticket" / "weights.pt")
        del masked, at

        # (3) fine-tune the ticket; train the same widths from a fresh initialisation
        final_model = pruned.model
        if self.finetune_epochs > 0:
            ft_model = self._prepare(copy.deepcopy(pruned.model))
            ft = self._phase("finetune", ft_model, self._finetune_optimizer(ft_model), small,
                             epochs=self.finetune_epochs, lr_at=self._cosine(), smoothing=r.finetune.label_smoothing,
                             offset=self.epochs, flops0=dense_phase["train_flops"])
            scores["finetuned"] = self._score("finetuned", ft_model, ft, small)
            final_model = ft_model
            dense_rows = self.history
            self.history = []
            fresh = self._prepare(build_model(small))
            fr = self._phase("fresh", fresh, self._finetune_optimizer(fresh), small, epochs=self.finetune_epochs,
                             lr_at=self._cosine(), smoothing=r.finetune.label_smoothing)
            scores["fresh"] = self._score("fresh", fresh, fr, small)
            fresh_rows, self.history = self.history, dense_rows
            if folder is not None:
                self._write_fresh(folder, small, scores["fresh"], fresh_rows)

        result = TicketResult(
            out=folder.path if folder else None, dense_arch=arch, arch=small, epochs=self.epochs, at_epoch=self.at_epoch,
            finetune_epochs=self.finetune_epochs, keep=keep,
            support_sizes={e: {k: int(v.sum()) for k, v in s.items()} for e, s in self.supports.items()},
            scores=scores, fold=self.fold, folds=tuple(pruned.folds), fold_check=fold_check, max_logit_diff=diff,
            wall_time=round(self.clock(), 3),
        )
        if folder is not None:
            self._write_final(folder, result, final_model)
        self.reporter.finish(result)
        return result

    # -- helpers ----------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        spec = self.arch_spec
        return {
            "recipe": self.recipe.to_dict(), "seed": self.seed, "dataset": self.dataset,
            "data_dir": None if self.data_dir is None else str(self.data_dir), "device": str(self.device),
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

    def _finetune_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        f = self.recipe.finetune
        if f.optimizer == "dessilbi":
            return make_dessilbi(model, self.recipe)  # fresh state: the control gets the same
        return torch.optim.SGD(model.parameters(), lr=f.lr, momentum=f.momentum, nesterov=f.nesterov and f.momentum > 0,
                               weight_decay=f.weight_decay)

    def _cosine(self) -> Callable[[int, int], float]:
        """lr at (epoch index from 0, batch index): cosine from finetune.lr to min_lr over the
        phase, after a linear warm-up of finetune.warmup_epochs."""
        f = self.recipe.finetune
        steps = len(self.data.train)
        total = max(1, self.finetune_epochs * steps)
        warm = f.warmup_epochs * steps

        def lr_at(epoch: int, i: int) -> float:
            return cosine_lr(epoch * steps + i, total, lr=f.lr, min_lr=f.min_lr, warmup=warm)

        return lr_at

    def _phase(self, phase: str, model: nn.Module, opt: torch.optim.Optimizer, arch: Architecture, *, epochs: int,
               lr_at: Callable[[int, int], float], smoothing: float, offset: int = 0, flops0: int = 0,
               after_epoch: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Train ``epochs`` epochs (history rows numbered from ``offset + 1``, their cumulative
        training FLOPs from ``flops0``); return the best-validation state, its epoch and the
        phase's own training FLOPs."""
        c = cost(arch)
        best: dict[str, Any] = {"val": -1.0, "epoch": 0, "state": None, "train_flops": 0}
        flops = 0
        for e in range(epochs):
            # the fine-tune and the fresh control see the same batches (order and augmentation)
            self.data.train.set_epoch(offset + e if phase != "fresh" else self.epochs + e)
            self.reporter.epoch_start(phase=phase, round=1, epoch=e + 1, index=e + 1, total=epochs, batches=len(self.data.train))
            stats = train_epoch(model, self.data.train, opt, lr_at=lambda i, e=e: lr_at(e, i), amp=self.amp,
                                label_smoothing=smoothing, progress=self.reporter.batch)
            if not stats.finite:
                raise DivergenceError(
                    f"{phase} epoch {e + 1}: the training loss became non-finite after {stats.samples} samples; "
                    f"lower {'optim.lr' if phase == 'dense' else 'finetune.lr'} and start again"
                )
            val = evaluate(model, self.data.val, amp=self.amp)
            flops += c.train_flops_per_sample * stats.samples
            row = {"round": 1, "epoch": offset + e + 1, "phase": phase, "lr": lr_at(e, len(self.data.train) - 1),
                   "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val.loss, "val_acc": val.acc,
                   "macs": c.macs, "params": c.params, "train_flops": flops0 + flops, "wall_time": round(self.clock(), 3)}
            self.history.append(row)
            if val.acc > best["val"]:
                best.update(val=val.acc, epoch=offset + e + 1, state=_cpu_state(model))
            log.info("%s epoch %d/%d: lr %.4g loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s", phase, e + 1, epochs,
                     row["lr"], stats.loss, stats.acc, val.loss, val.acc, stats.seconds)
            if after_epoch is not None:
                after_epoch(e + 1)
            if self.folder is not None and phase != "fresh":
                self.folder.write_history(self.history)
            self.reporter.epoch_end(row)
        best["train_flops"] = flops
        return best

    def _score(self, name: str, model: nn.Module, phase: Mapping[str, Any], arch: Architecture) -> Score:
        """Load the phase's best-validation weights into ``model`` and score them."""
        if phase["state"] is not None:
            model.load_state_dict(phase["state"])
        val, test = self._evaluate(model)
        c = cost(arch)
        trained = self.epochs if name == "dense" else self.finetune_epochs
        return Score(name, c.macs, c.params, val, test, epoch=phase["epoch"], epochs=trained, train_flops=phase["train_flops"])

    def _meta(self, score: Score, c: Any) -> dict[str, Any]:
        from .. import __version__

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
    }


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

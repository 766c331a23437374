"""Writing a run folder: its files, its checkpoints, and the lock that keeps one writer.

Every file is written atomically (:mod:`grownet.files`). A checkpoint is a ``torch.save``
payload ``checkpoints/ckpt-NNNNNN.pt`` plus a manifest ``checkpoints/latest.json`` holding its
name and SHA-256; the manifest is replaced only after the checkpoint file is complete, and
older checkpoint files are deleted only after that, so a kill at any moment leaves a valid
(manifest, file) pair. Checkpoints hold only tensors and plain Python types, so they load
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ..errors import RunError
from ..files import atomic_write_bytes, atomic_write_text
from ..validate import check_manifest, read_run_file

__all__ = ["HISTORY_COLUMNS", "RunFolder", "RunLock", "make_folder", "remove_created", "to_jsonable"]

#: Columns of history.csv, in order.
HISTORY_COLUMNS = (
    "round", "epoch", "phase", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
    "macs", "params", "train_flops", "wall_time",
)
_MANIFEST = "latest.json"
_KEEP_CHECKPOINTS = 2
_CHECKPOINT = re.compile(r"ckpt-(\d{6,})\.pt")
#: A temporary file of :mod:`grownet.files`' atomic writers: ``.<name>.<8 random characters>.tmp``.
_TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
#: Files a search writes; their presence marks a folder as a grownet run (safe to --force).
_RUN_MARKERS = ("config.json", "checkpoints", "grownet.log", "summary.json")


def make_folder(path: str | os.PathLike, *, flag: str = "--out") -> list[Path]:
    """Create the output folder ``path`` and its missing parents, and check it is writable.

    Returns:
        The folders this call created, deepest first (for :func:`remove_created`).

    Raises:
        RunError: the folder cannot be created or written (permissions, a file in the way),
            naming ``flag`` as the fix; nothing is left behind.
    """
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".grownet-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        remove_created(missing)
        raise RunError(f"{path}: cannot write there ({exc.strerror or type(exc).__name__}); pass a writable {flag}") from None
    return missing


def remove_created(folders: Iterable[Path]) -> None:
    """Remove folders made by :func:`make_folder` for a job that never started, each one
    only if it is empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


class RunLock:
    """An exclusive ``fcntl.flock`` on ``run_dir/.lock``, held while a process writes the run;
    the file exists only while it is held (the holder deletes it before unlocking, and a
    process that locked a file deleted meanwhile gives up, as if it were busy).

    Raises:
        RunError: on ``__enter__`` when another process holds the lock.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fh: Any = None

    def __enter__(self) -> "RunLock":
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fh.fileno()).st_ino != os.stat(self.path).st_ino:
                raise FileNotFoundError(self.path)  # its holder finished and deleted it just now
        except OSError:
            fh.seek(0)
            pid = fh.read().strip() or "unknown"
            fh.close()
            raise RunError(
                f"{self.path.parent} is in use by another grownet process (pid {pid}); wait for it to finish or pass another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class RunFolder:
    """Paths and writers of one run folder (no I/O at construction)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # ---- paths --------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def architecture(self) -> Path:
        return self.path / "architecture.json"

    @property
    def weights(self) -> Path:
        return self.path / "weights.pt"

    @property
    def history(self) -> Path:
        return self.path / "history.csv"

    @property
    def rounds(self) -> Path:
        return self.path / "rounds.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def log(self) -> Path:
        return self.path / "grownet.log"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def lock(self) -> RunLock:
        """The writer lock (create the folder first)."""
        return RunLock(self.path)

    # ---- lifecycle ----------------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether the folder holds output of a grownet run."""
        return any((self.path / name).exists() for name in _RUN_MARKERS)

    def has_checkpoint(self) -> bool:
        return (self.checkpoints / _MANIFEST).is_file()

    @property
    def replaced(self) -> Path:
        """Where ``prepare(force=True)`` keeps the run it replaces until the new one starts."""
        return self.path / ".replaced"

    def prepare(self, *, resume: bool, force: bool) -> None:
        """Check the folder may be used (call while holding the lock) and clear it for
        ``force``: the old run moves to :attr:`replaced`, deleted by :meth:`drop_replaced`
        once the new run has started or put back by :meth:`restore_replaced` if it fails
        to start.

        Raises:
            RunError: resume without a checkpoint; an existing folder without resume or
                force; force on a non-empty folder that is not a grownet run.
        """
        hidden = (".lock", self.replaced.name)
        entries = [p for p in self.path.iterdir() if p.name not in hidden] if self.path.is_dir() else []
        if resume:
            if not self.has_checkpoint():
                raise RunError(f"{self.path}: nothing to resume (no checkpoints/{_MANIFEST}); run without --resume to start it")
            return
        if not entries and not self.replaced.exists():
            return
        if not force:
            raise RunError(f"{self.path} already exists; pass --resume to continue that run or --force to overwrite it")
        if not self.is_run() and not self.replaced.exists():
            raise RunError(f"{self.path} is not empty and is not a grownet run folder; refusing to delete it: pass another --out")
        if self.replaced.exists():  # a replacing run died before it started: the first run is kept there
            _delete(entries)
            return
        self.replaced.mkdir()
        for entry in entries:
            entry.rename(self.replaced / entry.name)

    def drop_replaced(self) -> None:
        """Delete the run that ``prepare(force=True)`` replaced (the new one has started)."""
        if self.replaced.exists():
            shutil.rmtree(self.replaced)

    def restore_replaced(self) -> None:
        """Put back the run that ``prepare(force=True)`` replaced, over what the failed start
        wrote."""
        if not self.replaced.is_dir():
            return
        _delete([p for p in self.path.iterdir() if p.name not in (".lock", self.replaced.name)])
        for entry in self.replaced.iterdir():
            entry.rename(self.path / entry.name)
        self.replaced.rmdir()

    def remove_stale(self) -> list[Path]:
        """Delete what writes killed mid-way left behind (call holding the lock): the atomic
        writers' temporary files in the folder and in ``checkpoints/``, and the checkpoint
        files an uninterrupted run would not hold (one written but never named by the
        manifest; more than the newest two). Other jobs' folders (``controls/<name>/``) are
        theirs to clean.

        Returns:
            The files removed.
        """
        removed = [p for folder in (self.path, self.checkpoints) if folder.is_dir()
                   for p in sorted(folder.iterdir()) if _TEMP.fullmatch(p.name) and p.is_file()]
        manifest = self._manifest()
        if manifest is not None:
            files = {int(m.group(1)): p for p in self.checkpoints.iterdir() if (m := _CHECKPOINT.fullmatch(p.name))}
            kept = sorted(seq for seq in files if seq <= manifest["seq"])[-_KEEP_CHECKPOINTS:]
            removed += [files[seq] for seq in sorted(files) if seq not in kept]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    # ---- outputs ------------------------------------------------------------------------
    def write_json(self, path: Path, obj: Any) -> None:
        """Write ``obj`` as indented JSON (non-finite floats as null), atomically."""
        atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")

    def write_history(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Write history.csv (header + one row per epoch), atomically."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in HISTORY_COLUMNS})
        atomic_write_text(self.history, buf.getvalue())

    # ---- checkpoints --------------------------------------------------------------------
    def save_checkpoint(self, payload: Mapping[str, Any]) -> Path:
        """Write a checkpoint and point the manifest at it; keep the newest two files."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        manifest = self._manifest()
        seq = int(manifest["seq"]) + 1 if manifest else 1
        buf = io.BytesIO()
        torch.save(dict(payload), buf)
        data = buf.getvalue()
        path = self.checkpoints / f"ckpt-{seq:06d}.pt"
        atomic_write_bytes(path, data)
        atomic_write_text(
            self.checkpoints / _MANIFEST,
            json.dumps({"seq": seq, "file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, indent=2) + "\n",
        )
        for old in sorted(self.checkpoints.glob("ckpt-*.pt"))[:-_KEEP_CHECKPOINTS]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self) -> dict[str, Any]:
        """Load the latest checkpoint after verifying its SHA-256.

        Raises:
            RunError: no manifest, a missing file, a checksum mismatch (corrupt file), or an
                unreadable payload.
        """
        path, data = self.check_checkpoint()
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise RunError(f"{path}: checkpoint cannot be read ({type(exc).__name__}); start again with --force") from None

    def check_checkpoint(self) -> tuple[Path, bytes]:
        """The latest checkpoint's path and bytes, its SHA-256 verified against the manifest.

        Raises:
            RunError: no manifest, a missing file, or a checksum mismatch (corrupt file).
        """
        manifest = self._manifest()
        if manifest is None:
            raise RunError(f"{self.path}: no checkpoint to resume from (checkpoints/{_MANIFEST} is missing)")
        path = self.checkpoints / str(manifest["file"])
        try:
            data = path.read_bytes()
        except OSError:
            raise RunError(f"{path}: checkpoint file is missing; the run cannot be resumed (start again with --force)") from None
        if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            raise RunError(f"{path}: checkpoint is corrupt (SHA-256 mismatch); the run cannot be resumed (start again with --force)")
        return path, data

    def _manifest(self) -> dict[str, Any] | None:
        """The manifest, checked (:func:`grownet.validate.check_manifest`), or None when absent."""
        path = self.checkpoints / _MANIFEST
        if not path.is_file():
            return None
        try:
            return read_run_file(path, check_manifest, missing="missing")
        except RunError as exc:
            raise RunError(f"checkpoint manifest {exc}; the run cannot be resumed (start again with --force)") from None


def _delete(entries: Iterable[Path]) -> None:
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: tuples as lists, non-finite floats as None,
    tensors/numpy scalars as numbers, paths as strings."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    return str(value)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    return value

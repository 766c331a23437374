"""Reading a run folder (README "The run folder") into plain records.

The report, the controls and ``compare`` read runs only through :func:`load_run`, so a report
can be regenerated from the folder at any time.
"""

from __future__ import annotations

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..arch import Architecture
from ..errors import ArchitectureError, RunError, UsageError
from ..recipe import upgrade_stored
from ..validate import check_config, check_rounds, check_summary
from ..validate import read_json as _read_checked
from ._folder import HISTORY_COLUMNS, RunFolder

__all__ = ["CONTROL_NAMES", "RESERVED_CONTROL_NAMES", "ControlRecord", "check_control_name", "RunRecord", "load_control", "load_run", "read_config", "read_history", "read_json"]

#: The controls of METHOD.md §4 and ``fixed_uniform`` (the uniform widths on the run's own
#: schedule, a search of its own: grownet.baseline), in the order reports show them.
CONTROL_NAMES = ("scratch", "uniform", "random", "seed", "fixed_uniform")
#: Names a control of the user's own architecture cannot take: the built-in controls, the
#: report's name for the grown net, and the folders other jobs keep under ``controls/`` (the
#: growth study's ``grown_uniform`` search, the ticket job's ``fresh`` retraining).
RESERVED_CONTROL_NAMES = (*CONTROL_NAMES, "grown", "grown_uniform", "fresh")
_CONTROL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_control_name(name: Any, *, field: str) -> str:
    """``name`` if it can name a control of the user's own architecture (``controls/NAME/``):
    letters, digits, ``_``, ``.`` and ``-``, starting with a letter or digit, at most 64
    characters, not one of :data:`RESERVED_CONTROL_NAMES`.

    Raises:
        UsageError: naming ``field``.
    """
    if not isinstance(name, str) or not _CONTROL_NAME.fullmatch(name):
        raise UsageError(f"{field}: {str(name)[:80]!r} is not a control name; use letters, digits, '_', '.' and '-' "
                         "(at most 64, starting with a letter or digit)")
    if name in RESERVED_CONTROL_NAMES:
        raise UsageError(f"{field}: {name!r} is taken ({', '.join(RESERVED_CONTROL_NAMES)} are); choose another name "
                         "for a control of your own architecture")
    return name
_INT_COLUMNS = {"round", "epoch", "macs", "params"}


@dataclass(frozen=True)
class ControlRecord:
    """One finished control run (``RUN_DIR/controls/<name>/``)."""

    name: str
    path: Path
    summary: Mapping[str, Any]
    history: list[dict[str, Any]]
    arch: Architecture | None


@dataclass(frozen=True)
class RunRecord:
    """Everything a report needs from one run folder.

    ``history`` rows have the columns of :data:`grownet.runfolder.HISTORY_COLUMNS` (numbers
    parsed; missing or non-finite values as ``None``). ``arch`` is the final architecture
    (``None`` when ``architecture.json`` is absent, e.g. a run stopped early).
    """

    path: Path
    config: Mapping[str, Any]
    summary: Mapping[str, Any]
    history: list[dict[str, Any]]
    rounds: list[dict[str, Any]]
    arch: Architecture | None
    controls: dict[str, ControlRecord] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.path.name


def read_json(path: Path, *, required: bool = True, default: Any = None) -> Any:
    """Parse a JSON file of a run folder through :func:`grownet.validate.read_json` (size,
    nesting, digits and Unicode limits).

    Raises:
        RunError: when the file is missing (and ``required``), unreadable, not JSON, or past
            a limit.
    """
    if not required and not path.exists():
        return default
    return _read_checked(path, error=RunError, missing=_missing(path))


def read_config(path: Path, *, missing: str = "") -> dict[str, Any]:
    """A run's config.json: read (:func:`read_json`), its stored recipe upgraded
    (:func:`grownet.recipe.upgrade_stored`: the meaning it had when written) and checked
    (:func:`grownet.validate.check_config`).

    Raises:
        RunError: naming the file and the first bad field; ``missing`` replaces the message
            for a missing file.
    """
    config = _read_checked(path, error=RunError, missing=missing or _missing(path))
    if isinstance(config, Mapping) and isinstance(config.get("recipe"), Mapping):
        config = {**config, "recipe": upgrade_stored(config["recipe"])}
    return check_config(config, path)


def _missing(path: Path) -> str:
    return f"missing; is {path.parent} a finished grownet run folder?"


def read_history(path: Path) -> list[dict[str, Any]]:
    """Rows of a history.csv with numbers parsed (int for round/epoch/macs/params, float
    otherwise, ``phase`` as text; empty or non-finite cells as ``None``).

    Raises:
        RunError: when the file is missing, or its header lacks a column.
    """
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in HISTORY_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise RunError(f"{path}: column {missing[0]!r} is missing from the header")
            rows = [{c: _cell(c, row.get(c), path, n) for c in HISTORY_COLUMNS} for n, row in enumerate(reader, 2)]
    except FileNotFoundError:
        raise RunError(f"{path}: missing; is {path.parent} a finished grownet run folder?") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:  # csv.Error: a NUL byte, a field past the size limit
        raise RunError(f"{path}: cannot read ({exc})") from None
    return rows


def _cell(column: str, text: str | None, path: Path, line: int) -> Any:
    if column == "phase":
        return text or None
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise RunError(f"{path}: line {line}: {column} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        return None
    return int(value) if column in _INT_COLUMNS else value


def _arch(path: Path) -> Architecture | None:
    if not path.is_file():
        return None
    try:
        return Architecture.from_json(path)
    except ArchitectureError as exc:
        raise RunError(str(exc)) from None


def load_control(path: str | os.PathLike) -> ControlRecord:
    """Read one control folder (summary.json, history.csv, architecture.json)."""
    path = Path(path)
    summary = check_summary(read_json(path / "summary.json"), path / "summary.json")
    history = read_history(path / "history.csv") if (path / "history.csv").is_file() else []
    return ControlRecord(path.name, path, summary, history, _arch(path / "architecture.json"))


def _own_controls(path: Path) -> list[ControlRecord]:
    """The finished controls of the user's own architectures under ``path`` (``controls/``), by
    name: folders with a valid name whose summary.json says it is that control (other jobs'
    folders there, such as the growth study's ``grown_uniform`` search, do not)."""
    if not path.is_dir():
        return []
    found = []
    for sub in sorted(path.iterdir()):
        if sub.name in RESERVED_CONTROL_NAMES or not _CONTROL_NAME.fullmatch(sub.name) or not (sub / "summary.json").is_file():
            continue
        record = load_control(sub)
        if record.summary.get("control") == sub.name:
            found.append(record)
    return found


def load_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read a run folder: config.json, summary.json, history.csv, rounds.json,
    architecture.json and every finished control under ``controls/`` (the built-in ones in
    :data:`CONTROL_NAMES` order, then the user's own by name).

    Raises:
        RunError: when the folder or one of its required files (config.json, summary.json,
            history.csv) is missing or malformed.
    """
    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise RunError(f"{folder.path}: no such run folder; pass the --out folder of a grownet search")
    config = read_config(folder.config)
    summary = check_summary(read_json(folder.summary), folder.summary)
    rounds = check_rounds(read_json(folder.rounds, required=False, default=[]), folder.rounds)
    controls = {}
    for name in CONTROL_NAMES:
        if (folder.path / "controls" / name / "summary.json").is_file():
            controls[name] = load_control(folder.path / "controls" / name)
    controls.update((c.name, c) for c in _own_controls(folder.path / "controls"))
    return RunRecord(
        path=folder.path,
        config=config,
        summary=summary,
        history=read_history(folder.history),
        rounds=list(rounds),
        arch=_arch(folder.architecture),
        controls=controls,
    )

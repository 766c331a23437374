"""One validation layer for every file grownet reads, the user's and its own.

Two parts:

- **Reading**: :func:`read_json` / :func:`read_toml` (and :func:`parse_json` /
  :func:`parse_toml` for text) read at most :data:`MAX_FILE_BYTES`, refuse nesting deeper than
  :data:`MAX_DEPTH`, integers of more than :data:`MAX_DIGITS` digits and text that is not valid
  Unicode, so no file can end in a ``RecursionError``, an integer-conversion ``ValueError`` or
  a ``UnicodeEncodeError`` later on.
- **Fields**: ``check_*`` functions take a value and its field path (``rounds[2].layers[0].width``)
  and return it normalised or raise the caller's error class naming that path; the run-folder
  schemas :func:`check_config`, :func:`check_summary`, :func:`check_rounds` and
  :func:`check_manifest` are built from them.

Every error is a :class:`~grownet.errors.GrownetError` of the class the caller names, with a
one-line message; values are shown cut short (:func:`show`), so a 5,000-digit number or a
megabyte string never floods the line.
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .errors import ArchitectureError, ConfigError, GrownetError, RunError, UsageError
from .files import read_text

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_DEPTH",
    "MAX_DIGITS",
    "MAX_INT",
    "show",
    "cut",
    "parse_json",
    "parse_toml",
    "read_json",
    "read_toml",
    "check_tree",
    "check_text",
    "check_int",
    "check_number",
    "check_str",
    "check_bool",
    "check_object",
    "check_list",
    "check_file_name",
    "check_fields",
    "check_config",
    "check_summary",
    "check_rounds",
    "check_manifest",
    "read_run_file",
]

#: Largest JSON or TOML file grownet reads (its own run files are a few hundred kB at most).
MAX_FILE_BYTES = 64 * 2**20
#: Deepest nesting of objects and lists accepted in a file (grownet's own files nest 5 deep).
MAX_DEPTH = 64
#: Longest integer accepted in a file, in decimal digits (64-bit integers have 19 or 20).
MAX_DIGITS = 40
#: Largest integer a count, size or seed may take: the int64 range that torch and numpy hold.
MAX_INT = 2**63 - 1
#: Characters no name may hold: they would split a one-line message or a log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Error = type[GrownetError]


# ---- messages --------------------------------------------------------------------------------------


class _Short(reprlib.Repr):
    """``reprlib`` with integers past 64 bits shown by their digit count (``repr`` of an
    integer past 4,300 digits raises)."""

    def repr_int(self, x: int, level: int) -> str:
        return _int_text(x)


_SHORT = _Short()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 6
_SHORT.maxlevel = 3


def _int_text(value: int) -> str:
    if value.bit_length() <= 64:
        return str(value)
    # str() is exact but refused past 4,300 digits (about 14,280 bits); log10 is close enough there.
    digits = len(str(abs(value))) if value.bit_length() < 14_000 else int(math.log10(abs(value))) + 1
    return f"{'a negative' if value < 0 else 'an'} integer of {digits} digits"


def show(value: Any) -> str:
    """``repr(value)`` cut for a one-line message: long strings and lists elided, integers past
    64 bits shown by their number of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_text(value)
    return _SHORT.repr(value)


def cut(text: Any, limit: int = 60) -> str:
    """``str(text)`` without quotes, cut to ``limit`` characters (for names in messages)."""
    text = text if isinstance(text, str) else show(text)
    text = text if text.isprintable() else repr(text)[1:-1]  # a newline would break the line
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- reading ----------------------------------------------------------------------------------------


def parse_json(text: str, *, error: Error, where: str) -> Any:
    """Parse JSON text and :func:`check_tree` the result.

    Raises:
        error: ``"{where}: not valid JSON (...)"``, or the limit that was passed.
    """
    return _parsed(json.loads, text, error=error, where=where)


def parse_toml(text: str, *, error: Error, where: str) -> dict[str, Any]:
    """Parse TOML text and :func:`check_tree` the result.

    Raises:
        error: ``"{where}: invalid TOML (...)"``, or the limit that was passed.
    """
    return _parsed(tomllib.loads, text, error=error, where=where)


def _parsed(loads: Callable[[str], Any], text: str, *, error: Error, where: str) -> Any:
    try:
        data = loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: invalid TOML ({exc})") from None
    except RecursionError:
        raise error(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # the interpreter's limit on digits in an integer literal
        raise error(f"{where}: a number has more than {MAX_DIGITS} digits") from None
    check_tree(data, error=error, where=where)
    return data


def read_json(path: str | os.PathLike, *, error: Error, missing: str, what: str = "") -> Any:
    """Read and :func:`parse_json` a file of at most :data:`MAX_FILE_BYTES`.

    Args:
        error: the GrownetError class to raise.
        missing: the message after ``"{path}: "`` when the file does not exist.
        what: inserted into ``"{path}: cannot read{what} (...)"`` for other read failures.
    """
    text = read_text(path, error=error, missing=missing, what=what, max_bytes=MAX_FILE_BYTES)
    return parse_json(text, error=error, where=str(path))


def read_toml(path: str | os.PathLike, *, error: Error, missing: str, what: str = "") -> dict[str, Any]:
    """Read and :func:`parse_toml` a file of at most :data:`MAX_FILE_BYTES` (arguments as
    :func:`read_json`)."""
    text = read_text(path, error=error, missing=missing, what=what, max_bytes=MAX_FILE_BYTES)
    return parse_toml(text, error=error, where=str(path))


def check_tree(data: Any, *, error: Error, where: str) -> None:
    """Refuse parsed data nested deeper than :data:`MAX_DEPTH`, holding an integer of more than
    :data:`MAX_DIGITS` digits, or text that is not valid Unicode (a lone surrogate, which JSON's
    ``\\udcff`` escape makes and no UTF-8 file can hold). Iterative: any depth is safe to check."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                raise error(f"{where}: nested deeper than {MAX_DEPTH} levels")
            items = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
            for key, item in items:
                if key is not None:
                    _check_unicode(key, error=error, where=where)
                stack.append((item, depth + 1))
        elif isinstance(value, str):
            _check_unicode(value, error=error, where=where)
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**MAX_DIGITS:
            raise error(f"{where}: a number has more than {MAX_DIGITS} digits")


def _check_unicode(text: str, *, error: Error, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{where}: text {show(text)} is not valid Unicode (a lone surrogate)") from None


# ---- fields -------------------------------------------------------------------------------------------


def check_text(text: str, what: str, *, error: Error = UsageError) -> str:
    """``text`` (a name or path) if it is valid UTF-8 without control characters; Linux paths
    may hold any bytes, which Python decodes to lone surrogates that no log, JSON or HTML file
    can write, and a newline would split every one-line message and log line that names it,
    so such a name is refused before any work."""
    shown = repr(text) if len(text) <= 200 else show(text)  # a path: shown whole where it fits a line
    if _CONTROL.search(text):
        raise error(f"{what}: {shown} holds a control character (newline, tab, NUL...); rename it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what}: {shown} is not valid UTF-8; rename it with UTF-8 characters only") from None
    return text


def check_int(value: Any, path: str, *, error: Error, low: int = 0, high: int = MAX_INT, optional: bool = False) -> Any:
    """``value`` as an int in ``[low, high]`` (an integral float is accepted); ``None`` passes
    when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise error(f"{path}: must be an integer, got {show(value)}")
    if not low <= value <= high:
        raise error(f"{path}: must be an integer in [{low}, {high}], got {show(value)}")
    return value


def check_number(value: Any, path: str, *, error: Error, low: float | None = None, high: float | None = None,
                 optional: bool = False) -> Any:
    """``value`` as a finite float in ``[low, high]``; ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise error(f"{path}: must be a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
        rng = f"[{'-inf' if low is None else format(low, 'g')}, {'inf' if high is None else format(high, 'g')}]"
        raise error(f"{path}: must be a finite number in {rng}, got {show(value)}")
    return number


def check_str(value: Any, path: str, *, error: Error, optional: bool = False, max_len: int = 100_000) -> Any:
    """``value`` as a str of at most ``max_len`` characters; ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise error(f"{path}: must be a string, got {show(value)}")
    if len(value) > max_len:
        raise error(f"{path}: longer than {max_len} characters")
    return value


def check_bool(value: Any, path: str, *, error: Error) -> bool:
    """``value`` if it is true or false."""
    if not isinstance(value, bool):
        raise error(f"{path}: must be true or false, got {show(value)}")
    return value


def check_object(value: Any, path: str, *, error: Error) -> dict[str, Any]:
    """``value`` as a dict if it is a JSON object."""
    if not isinstance(value, Mapping):
        raise error(f"{path}: must be an object, got {type(value).__name__}")
    return dict(value)


def check_list(value: Any, path: str, *, error: Error, max_len: int = 1_000_000) -> list[Any]:
    """``value`` as a list if it is a JSON list of at most ``max_len`` items."""
    if not isinstance(value, (list, tuple)):
        raise error(f"{path}: must be a list, got {type(value).__name__}")
    if len(value) > max_len:
        raise error(f"{path}: more than {max_len} items")
    return list(value)


def check_file_name(value: Any, path: str, *, error: Error) -> str:
    """``value`` if it names a file inside a folder: a non-empty UTF-8 string of at most 255
    bytes without ``/`` or NUL, and not ``.`` or ``..``."""
    name = check_str(value, path, error=error)
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name.encode("utf-8", "replace")) > 255:
        raise error(f"{path}: must be a plain file name (no '/', NUL or '..'), got {show(name)}")
    return check_text(name, path, error=error)


# ---- schemas ------------------------------------------------------------------------------------------

#: A field check: ``(value, field path) -> normalised value``, raising RunError.
Check = Callable[[Any, str], Any]


def check_fields(data: Any, spec: Mapping[str, Check], *, path: str, error: Error, required: Iterable[str] = ()) -> dict[str, Any]:
    """``data`` checked as an object whose keys in ``spec`` pass their check (keys not in
    ``spec`` are kept as they are: newer grownet versions may add some).

    Raises:
        error: naming ``path.key`` (or ``key`` when ``path`` is empty).
    """
    obj = check_object(data, path or "file", error=error)
    out = dict(obj)
    for key in required:
        if key not in obj:
            raise error(f"{_join(path, key)}: missing required key")
    for key, check in spec.items():
        if key in obj:
            out[key] = check(obj[key], _join(path, key))
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _int(low: int = 0, high: int = MAX_INT) -> Check:
    return lambda v, p: check_int(v, p, error=RunError, low=low, high=high, optional=True)


def _num(low: float | None = None, high: float | None = None) -> Check:
    return lambda v, p: check_number(v, p, error=RunError, low=low, high=high, optional=True)


def _str(v: Any, p: str) -> Any:
    return check_str(v, p, error=RunError, optional=True)


def _list_of(check: Check, max_len: int = 1_000_000) -> Check:
    return lambda v, p: [check(x, f"{p}[{i}]") for i, x in enumerate(check_list(v, p, error=RunError, max_len=max_len))]


def _object_of(spec: Mapping[str, Check], required: Iterable[str] = ()) -> Check:
    return lambda v, p: check_fields(v, spec, path=p, error=RunError, required=required)


def _bool(v: Any, p: str) -> bool:
    return check_bool(v, p, error=RunError)


def _nested_check(build: Callable[[], Callable[[Any], Any]], caught: Error) -> Check:
    """A check running ``build()(value)`` (a grownet validator, imported on first use), its
    ``caught`` errors re-raised as RunError under the field path."""

    def check(v: Any, p: str) -> Any:
        try:
            build()(v)
        except caught as exc:
            raise RunError(_nested(p, str(exc))) from None
        return v

    return check


def _arch_from_dict() -> Callable[[Any], Any]:
    from .arch import Architecture

    return Architecture.from_dict


def _recipe_from_dict() -> Callable[[Any], Any]:
    from .recipe import Recipe

    return Recipe.from_dict


_architecture = _nested_check(_arch_from_dict, ArchitectureError)
_recipe = _nested_check(_recipe_from_dict, ConfigError)


def _nested(path: str, message: str) -> str:
    """A nested check's message under ``path``: ``grow.tau: ...`` becomes ``recipe.grow.tau: ...``."""
    head, sep, _ = message.partition(": ")
    return f"{path}.{message}" if sep and " " not in head else f"{path}: {message}"


_ACC = _num(0.0, 1.0)
_COUNT = _int()
_SECONDS = _num(0.0)

_CONFIG: dict[str, Check] = {
    "recipe": _recipe, "seed": _int(), "dataset": lambda v, p: check_str(v, p, error=RunError, max_len=4096),
    "data_dir": _str, "device": _str, "command": _str, "started": _str,
    "versions": lambda v, p: {k: _str(x, f"{p}.{k}") for k, x in check_object(v, p, error=RunError).items()},
}
_EVENT = {"epoch": _COUNT, "event": _str, "detail": _str}
_SUMMARY: dict[str, Check] = {
    "dataset": _str, "control": _str, "optimizer": _str, "schedule": _str,
    "classes": _list_of(_str), "seed": _COUNT,
    "val_acc": _ACC, "test_acc": _ACC, "val_loss": _num(0.0), "test_loss": _num(0.0),
    "macs": _COUNT, "params": _COUNT, "train_flops": _COUNT, "wall_time": _SECONDS,
    "rounds": _COUNT, "epochs": _COUNT, "best_epoch": _COUNT,
    "seed_arch": _architecture, "final_arch": _architecture,
    "events": _list_of(_object_of(_EVENT)),
}
_LAYER = {"layer": _str, "width": _COUNT, "activity": _num(0.0, 1.0), "tau": _num(0.0, 1.0), "decision": _str,
          "new_width": _COUNT, "reason": _str}


def _shares(v: Any, p: str) -> dict[str, Any]:
    """An object of per-layer shares in [0, 1] (a trace point's ``activity``)."""
    return {k: _ACC(x, f"{p}.{k}") for k, x in check_object(v, p, error=RunError).items()}


_TRACE = {"step": _COUNT, "activity": _shares}
_SIGNAL = {"signal": _str, "rho": _num(0.0), "steps": _COUNT, "trace": _list_of(_object_of(_TRACE))}
_ROUND = {"round": _int(1), "epoch": _COUNT, "macs": _COUNT, "params": _COUNT, "val_acc": _ACC,
          "layers": _list_of(_object_of(_LAYER, required=("layer",))), "deepened": _list_of(_COUNT), "grew": _bool,
          "new_macs": _COUNT, "new_params": _COUNT, "hold": _str, "signal": _object_of(_SIGNAL), "next_round": _bool}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(v: Any, p: str) -> str:
    text = check_str(v, p, error=RunError)
    if not _SHA256.fullmatch(text):
        raise RunError(f"{p}: must be 64 lowercase hexadecimal digits, got {show(text)}")
    return text


_MANIFEST: dict[str, Check] = {
    "seq": _int(1), "file": lambda v, p: check_file_name(v, p, error=RunError), "sha256": _sha256, "bytes": _COUNT,
}


def _schema(data: Any, spec: Mapping[str, Check], where: str | os.PathLike, required: Iterable[str]) -> dict[str, Any]:
    try:
        return check_fields(data, spec, path="", error=RunError, required=required)
    except RunError as exc:
        raise RunError(f"{where}: {exc}; the file was changed or damaged") from None


def check_config(data: Any, where: str | os.PathLike) -> dict[str, Any]:
    """A search's ``config.json`` (parsed): the recipe valid, the seed a non-negative int64, the
    dataset a string, versions/command/started strings.

    Raises:
        RunError: ``"{where}: {field}: ..."`` for the first field that fails.
    """
    return _schema(data, _CONFIG, where, ("recipe", "seed", "dataset"))


def check_summary(data: Any, where: str | os.PathLike) -> dict[str, Any]:
    """A run's or a control's ``summary.json`` (parsed): accuracies in [0, 1] or null, counts
    non-negative int64s, architectures valid, classes and events well-formed."""
    return _schema(data, _SUMMARY, where, ())


def check_rounds(data: Any, where: str | os.PathLike) -> list[dict[str, Any]]:
    """A run's ``rounds.json`` (parsed): a list of round objects, each layer record typed
    (widths non-negative ints, activity and tau in [0, 1] or null)."""
    try:
        return _list_of(_object_of(_ROUND))(data, "rounds")
    except RunError as exc:
        raise RunError(f"{where}: {exc}; the file was changed or damaged") from None


def check_manifest(data: Any, where: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint manifest ``checkpoints/latest.json`` (parsed): ``seq`` >= 1, ``file`` a
    plain file name, ``sha256`` 64 hex digits, ``bytes`` a non-negative int."""
    return _schema(data, _MANIFEST, where, ("seq", "file", "sha256"))


def read_run_file(path: str | os.PathLike, check: Callable[[Any, Any], Any], *, missing: str) -> Any:
    """``check(read_json(path), path)``: a run-folder file read and validated in one call, all
    failures as RunError."""
    return check(read_json(Path(path), error=RunError, missing=missing), path)

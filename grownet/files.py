"""Safe file writing: atomic replacement, so a crash never leaves a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "read_text", "stored_dir"]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename,
    so a reader never sees a half-written file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Bytes version of :func:`atomic_write_text`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus umask).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def stored_dir(path: str | os.PathLike | None) -> str | None:
    """A folder the user gave (``--data-dir``) as configs store it: absolute, so that a resume
    or a control started from another working directory finds it; None stays None."""
    return None if path is None else os.path.abspath(os.fspath(path))


def read_text(path: str | os.PathLike, *, error: type[Exception], missing: str, what: str = "",
              max_bytes: int | None = None) -> str:
    """Read a UTF-8 text file, turning I/O failures into one-line ``error``s.

    Args:
        error: the exception class to raise (a :class:`grownet.errors.GrownetError`).
        missing: the message after ``"{path}: "`` when the file does not exist.
        what: inserted into ``"{path}: cannot read{what} (...)"`` for other failures.
        max_bytes: refuse a file longer than this (read no further, so ``/dev/zero`` or a
            pipe that never ends is refused too).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
        raise error(f"{path}: cannot read{what} ({exc})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes // 2**20} MiB; is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read{what} ({exc})") from None


def _umask() -> int:
    """The process umask (reading it means setting it; it is restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

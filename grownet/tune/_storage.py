"""The study's storage: URL masking, opening an optuna RDB storage, and the study lock.

A storage URL may hold a password (``postgresql://user:password@host/db`` or a
``?password=`` query parameter). :func:`mask_url` is the only way a URL reaches a log line,
a page, a file or an error, and :func:`scrub` cleans a driver's message; neither can print
any part of a password whatever the URL looks like, because they hide everything that
could belong to one under any reading of the URL (see :func:`mask_url`). A URL that a
database driver would read differently from that (an unencoded ``@`` in the password) is
refused before any connection is tried, so no driver sees, or can echo, a piece of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import quote, unquote, unquote_plus

from ..errors import GrownetError, RunError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from sqlalchemy.engine import URL

logger = logging.getLogger("grownet.tune")

#: What replaces a hidden part of a URL.
MASK = "***"
#: What may stand before ``://`` and still be shown: a scheme, or a CLI ``--storage=scheme``.
_PREFIX = re.compile(r"[\w+.=\-]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
#: A user name that is shown as it is (anything else in the user part is hidden).
_USER = re.compile(r"[\w.~%+\-]*")
#: A query key ``[?&;]key=`` (linear: a key cannot hold a delimiter), and the keys that may
#: name a secret (``password``, ``sslpassword``, ``pwd``...).
_QUERY_KEY = re.compile(r"[?&;]([^=&;?#]*)=")
_SECRET_NAME = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)
_PORT = re.compile(r"\d*")
#: Longest storage URL accepted (a real one is far shorter; this bounds the work on garbage).
MAX_URL = 4096


def _secret_key(rest: str) -> "re.Match[str] | None":
    """The first query key of ``rest`` that may name a secret (the match ends after ``=``)."""
    return next((m for m in _QUERY_KEY.finditer(rest) if _SECRET_NAME.search(m.group(1))), None)


# ---- masking --------------------------------------------------------------------------------------


def _segments(url: str) -> list[tuple[str, bool]]:
    """``url`` cut into ``(text, hidden)`` pieces whose texts join back into ``url``.

    Hidden is: the user part up to the last ``@`` except a plain user name (an unencoded
    ``:`` or ``/`` in a password cannot end it early); with several ``@``, everything after
    the user name (one of them is in the password, and without a host the password would run
    to the end); a port that is not a number (``user:pass`` without a host), and after a user
    part the whole "host" that has one; and everything after a secret query key
    (``?password=``) to the end.
    """
    head, sep, rest = url.partition("://")
    if not sep:  # no scheme: show only a plain word, or the scheme-like word before ':'
        if ":" not in url and "@" not in url:
            return [(url, False)]
        word, colon, tail = url.partition(":")
        return [(word + colon, False), (tail, True)] if colon and _SCHEME.fullmatch(word) else [(url, True)]
    if not _PREFIX.fullmatch(head):
        return [(url, True)]
    out: list[tuple[str, bool]] = [(head + sep, False)]
    secret = _secret_key(rest)
    at = rest.rfind("@")
    start = 0
    if at >= 0 and (not rest.startswith("/") or ":" in rest[:at]):
        user, colon, password = rest[:at].partition(":")
        if "@" in rest[:at] or (secret is not None and secret.start() < at):
            # several '@' (any may end the password, and a password may run to the end when
            # the host is missing) or a secret key inside the user part: show the user only
            shown = user + colon if colon and _USER.fullmatch(user) else ""
            return [*out, (shown, False), (rest[len(shown):], True)]
        if _USER.fullmatch(user):
            out += [(user + colon, False), (password, True)] if colon else [(user, False)]
        else:
            out.append((rest[:at], True))
        out.append(("@", False))
        start = at + 1
    end = secret.end() if secret is not None else len(rest)
    host = rest[start:end]
    authority = re.split(r"[/?#]", host, maxsplit=1)[0]
    port_at = authority.find(":", authority.find("]") + 1 if authority.startswith("[") else 0)
    if port_at >= 0 and not _PORT.fullmatch(authority[port_at + 1:]):  # "user:pass" with no host
        if start:  # after a user part, that "host" may be the password's tail ("user:p@ss:word")
            return [*out[:-1], (rest[start - 1:], True)]
        return [*out, (host[: port_at + 1], False), (rest[port_at + 1:], True)]
    out.append((host, False))
    if secret is not None:
        out.append((rest[end:], True))
    return out


def _printable(text: str) -> str:
    """``text`` with control characters (newlines, escapes, undecodable bytes) escaped, so a
    URL cannot forge log lines."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text)


def mask_url(url: object) -> str:
    """``url`` with every part that could belong to a password replaced by ``***``.

    ``postgresql://tuner:s3cr%40t@db:5432/grownet`` -> ``postgresql://tuner:***@db:5432/grownet``.
    Everything after the user name's ``:`` up to the ``@`` is hidden, whatever it holds
    (``:``, ``/``, ``?``); with more than one ``@`` everything after the user name is hidden
    (``postgresql://tuner:***``). A user part that is not a plain name, a non-numeric port
    (``user:pass`` without a host) and everything after ``?password=`` (or another key naming
    a password, secret or token) are hidden too. Strings that are not URLs show only a
    leading scheme-like word. Control characters are escaped. Safe for logs, pages, files
    and errors.
    """
    shown: list[str] = []
    for part, hidden in _segments(str(url)):
        if hidden and part and shown[-1:] != [MASK]:
            shown.append(MASK)
        elif not hidden:
            shown.append(part)
    return _printable("".join(shown))


def _secrets(url: str) -> set[str]:
    """Every string a driver might echo that could be (part of) the password of ``url``:
    the hidden pieces, their pieces between reserved characters (a driver that misread the
    URL may echo ``ss@host`` of the password ``p@ss``), their percent-decoded and -encoded
    forms, and what SQLAlchemy reads as the password."""
    hidden = [part for part, h in _segments(url) if h and part]
    pieces = set(hidden)
    for part in hidden:
        pieces.update(p for p in re.split(r"[@:/?#&;=]", part) if p)
    with contextlib.suppress(Exception):
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        pieces.update(str(v) for k, v in parsed.query.items() if _SECRET_NAME.search(k))
        if parsed.password:
            pieces.add(str(parsed.password))
    forms = set()
    for p in pieces:
        forms |= {p, unquote(p), unquote_plus(p), quote(p, safe="")}
    return {f for f in forms if f}


def scrub(text: object, url: str) -> str:
    """``text`` (a driver's error message, a command line) with ``url`` shown masked and any
    form of its password replaced by ``***``."""
    out = str(text)
    url = str(url)
    if url:
        out = out.replace(url, mask_url(url))
    # Every occurrence of every form, overlaps merged, becomes one mask: replacing the forms
    # one after another could cut an occurrence apart and leave a piece of it in view (the
    # form " 10" of "+10" taking the space and "10" of "with 100:+10" left "0" shown).
    spans: list[list[int]] = []
    for start, end in sorted((m.start(), m.start() + len(secret)) for secret in _secrets(url)
                             for m in re.finditer(f"(?={re.escape(secret)})", out) if secret):  # overlapping too
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    for start, end in reversed(spans):
        out = out[:start] + MASK + out[end:]
    return out


# ---- opening the storage ----------------------------------------------------------------------------


def parse_url(url: str) -> "URL":
    """``url`` parsed by SQLAlchemy, checked before any connection is tried.

    Raises:
        UsageError: longer than :data:`MAX_URL`; not a database URL; an unknown database or
            missing dialect; or a user or password that SQLAlchemy would read differently from
            :func:`mask_url` (an unencoded ``@``, ``/`` or ``:``), which could send a piece of
            the password to the server as a host or database name.
    """
    from sqlalchemy.engine import make_url

    if len(str(url)) > MAX_URL:
        raise UsageError(f"--storage: a URL of {len(str(url))} characters is too long (at most {MAX_URL})")
    safe = mask_url(url)
    try:
        parsed = make_url(url)
        parsed.get_backend_name()
    except Exception:  # noqa: BLE001 - any parse failure is the same user error
        hint = "; percent-encode @ : / ? # in a user name or password (@ as %40...)" if "@" in url else ""
        raise UsageError(f"--storage: {safe} is not a database URL (e.g. sqlite:///study.db or "
                         f"postgresql://user@host/db){hint}") from None
    if parsed.get_backend_name() != "sqlite" and not _reads_alike(url, parsed):
        raise UsageError(f"--storage: {safe}: cannot tell where the user name and password end; percent-encode "
                         f"@ : / ? # in them, and any @ after them (@ as %40, : as %3A, / as %2F, ? as %3F, # as %23), "
                         f"or leave the password out and give it in ~/.pgpass or PGPASSWORD")
    try:
        parsed.get_dialect()
    except Exception:  # noqa: BLE001 - sqlalchemy's NoSuchModuleError
        raise UsageError(f"--storage: {safe}: unknown database {parsed.drivername!r}; use sqlite:///FILE.db, or "
                         f"postgresql://user@host/db with psycopg2-binary installed") from None
    return parsed


def _reads_alike(url: str, parsed: "URL") -> bool:
    """Whether SQLAlchemy's user and password of ``url`` are the ones :func:`mask_url` sees."""
    rest = url.partition("://")[2]
    at = rest.rfind("@")
    if at < 0 or (rest.startswith("/") and ":" not in rest[:at]):
        return parsed.username is None and parsed.password is None
    user, colon, password = rest[:at].partition(":")
    return parsed.username == unquote(user) and parsed.password == (unquote(password) if colon else None)


def with_driver(url: str) -> str:
    """``postgresql://`` URLs name no driver; SQLAlchemy 2.1 then wants psycopg 3, 2.0
    psycopg2. Use whichever of the two is installed (psycopg 3 first)."""
    import importlib.util

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.drivername == "postgresql":
        for module, driver in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
            if importlib.util.find_spec(module) is not None:
                return u.set(drivername=driver).render_as_string(hide_password=False)
    return url


def default_storage(out: Path) -> str:
    """The default storage of a worker writing to ``out``: ``sqlite:///OUT/study.db``."""
    return f"sqlite:///{out.resolve() / 'study.db'}"


def open_storage(url: str, heartbeat: int,
                 on_stale: Callable[["optuna.Study", Any], None]) -> "optuna.storages.RDBStorage":
    """An RDBStorage whose running trials send a heartbeat every ``heartbeat`` seconds; a
    trial silent for 4 heartbeats is failed and handed to ``on_stale``. Workers starting
    together on a new database create its tables one at a time (under a database-wide lock).

    Raises:
        UsageError: from :func:`parse_url`. RunError: the storage cannot be opened (URL masked).
    """
    import optuna

    parsed = parse_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs = {"connect_args": {"timeout": 60}}
    schema: StudyLock | None = None
    try:
        schema = StudyLock(url, "")
        with schema.hold(), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                with_driver(url), engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=4 * heartbeat,
                heartbeat_stale_trial_callback=on_stale,
            )
    except GrownetError:
        raise
    except Exception as exc:  # noqa: BLE001 - driver errors (ImportError for a missing driver too)
        text = f"{type(exc).__name__} {exc}"
        hint = ""
        if isinstance(exc, ImportError) or "No module named" in text or "Can't load plugin" in text:
            hint = " (install its driver, e.g. pip install psycopg2-binary for postgresql)"
        raise RunError(f"cannot open study storage {mask_url(url)}: {scrub(one_line(exc), url)}{hint}") from None
    finally:
        if schema is not None:
            schema.close()


def dispose(rdb: Any) -> None:
    """Close ``rdb``'s sessions and connections (errors ignored)."""
    with contextlib.suppress(Exception):
        rdb.remove_session()
        rdb.engine.dispose()


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the database layer (its message may quote the URL)."""
    mod = type(exc).__module__ or ""
    return mod.startswith(("sqlalchemy", "psycopg", "pymysql", "MySQLdb", "sqlite3", "optuna.exceptions", "alembic"))


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- the study lock -----------------------------------------------------------------------------------


class StudyLock:
    """A lock shared by every worker of one study: ``pg_advisory_lock`` on PostgreSQL,
    ``GET_LOCK`` on MySQL, an ``fcntl`` lock on ``<db>.lock`` beside an SQLite file. Other
    storages get no lock (the trial total may then be passed by up to one trial per extra
    worker)."""

    def __init__(self, url: str, study_name: str) -> None:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        self.dialect = u.get_backend_name()
        digest = hashlib.sha256(f"grownet.tune:{study_name}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self.name = "grownet:" + digest.hex()[:40]
        self.path: Path | None = None
        self.engine: Any = None
        if self.dialect == "sqlite":
            if u.database and u.database != ":memory:":
                self.path = Path(u.database + ".lock")
        elif self.dialect in ("postgresql", "mysql", "mariadb"):
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            self.engine = create_engine(with_driver(url), poolclass=NullPool)
        else:
            logger.warning("storage %s: no study lock for this database; with several workers the trial total "
                           "may be passed by a few trials", mask_url(url))

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block (blocks until it is free)."""
        if self.path is not None:
            with open(self.path, "a+") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        elif self.engine is not None:
            from sqlalchemy import text

            with self.engine.connect() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
                    unlock = text("SELECT pg_advisory_unlock(:k)"), {"k": self.key}
                else:
                    conn.execute(text("SELECT GET_LOCK(:n, -1)"), {"n": self.name})
                    unlock = text("SELECT RELEASE_LOCK(:n)"), {"n": self.name}
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(*unlock)
                    conn.commit()
        else:
            yield

    def close(self) -> None:
        """Release the lock's database connections."""
        if self.engine is not None:
            self.engine.dispose()

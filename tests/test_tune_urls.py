"""grownet.tune storage URLs: no part of a password is ever shown, whatever the URL looks like
(unencoded '@', ':' or '/' in the password, no user, no host, odd schemes, query passwords,
garbage), neither by mask_url nor in the errors, logs and files of a tune that fails on it."""

from __future__ import annotations

import logging
import re
import socket
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from grownet.cli import main
from grownet.errors import GrownetError, RunError, UsageError
from grownet.tune import mask_url, tune
from grownet.tune._storage import parse_url, scrub

#: A password made of distinctive pieces joined by every character that can break URL parsing.
PIECES = ("Qx7k", "Vb2m", "Kd9p", "Mz4t", "Pw5n", "Ry8c", "Hj3w")
PASSWORD = "Qx7k@Vb2m:Kd9p/Mz4t?Pw5n#Ry8c&Hj3w"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hostile_urls(pw: str, port: int = 5432) -> dict[str, str]:
    """URLs holding the password ``pw`` in every shape a user (or an attacker) might write."""
    return {
        "unencoded": f"postgresql://tuner:{pw}@127.0.0.1:{port}/grownet",
        "encoded": f"postgresql://tuner:{quote(pw, safe='')}@127.0.0.1:{port}/grownet",
        "driver in scheme": f"postgresql+psycopg2://tuner:{pw}@db.example/grownet?sslmode=require",
        "no user": f"postgresql://:{pw}@127.0.0.1:{port}/grownet",
        "no host": f"postgresql://tuner:{pw}",
        "no host, trailing @": f"postgresql://tuner:{pw}@",
        "odd scheme": f"weird+scheme.v2://tuner:{pw}@host/db",
        "redis-like": f"redis://:{pw}@host:6379/0",
        "query password": f"postgresql://127.0.0.1:{port}/grownet?sslmode=disable&password={pw}",
        "query password, any case": f"postgresql:///grownet?PassWord={pw}",
        "query password first": f"postgresql://h/db?password={pw}&user=tuner",
        "triple slash": f"postgresql:///tuner:{pw}@host/db",
        "one slash": f"postgresql:/tuner:{pw}@host/db",
        "no slashes": f"postgresql:tuner:{pw}@host/db",
        "no scheme": f"tuner:{pw}@host/db",
        "empty scheme": f"://tuner:{pw}@host/db",
        "space in scheme": f"post gres://tuner:{pw}@host/db",
        "user with @": f"postgresql://tu@ner:{pw}@host/db",
        "newline": f"postgresql://tuner:{pw}\n@host/db",
        "ipv6": f"postgresql://tuner:{pw}@[::1]:{port}/db",
    }


def leaked(text: str, pieces=PIECES) -> list[str]:
    return [p for p in pieces if p in text]


@pytest.mark.parametrize("name, url", hostile_urls(PASSWORD).items())
def test_mask_url_shows_no_piece_of_the_password(name, url):
    assert leaked(mask_url(url)) == [], mask_url(url)


@pytest.mark.parametrize("url, masked", [
    ("postgresql://tuner:s3cr%40t@db.example:5432/grownet", "postgresql://tuner:***@db.example:5432/grownet"),
    ("postgresql://tuner:pa/ss:w?rd@db.example/grownet", "postgresql://tuner:***@db.example/grownet"),
    ("postgresql://tuner:p@ss@db.example/grownet", "postgresql://tuner:***"),  # which '@' ends it is unknown
    ("postgresql://:secret@db/g", "postgresql://:***@db/g"),
    ("postgresql://tuner@db.example/grownet", "postgresql://tuner@db.example/grownet"),  # no password
    ("postgresql://[::1]:5432/db", "postgresql://[::1]:5432/db"),
    ("postgresql://tuner:secret", "postgresql://tuner:***"),  # no host: 'secret' is no port
    ("postgresql://db/g?sslmode=require&password=x&y", "postgresql://db/g?sslmode=require&password=***"),
    ("sqlite:////tmp/runs/a@b/study.db", "sqlite:////tmp/runs/a@b/study.db"),  # a path, no user part
    ("sqlite:///study.db", "sqlite:///study.db"),
    ("--storage=postgresql://u:pw@h/db", "--storage=postgresql://u:***@h/db"),  # a CLI argument
    ("study.db", "study.db"),
    ("sqlite:study.db", "sqlite:***"),
    ("://0@host", "***"),  # no scheme: not a URL, nothing of it shown
    ("postgresql://u:pw@h/db\n[fake log line]", "postgresql://u:***@h/db\\n[fake log line]"),
])
def test_mask_url_keeps_what_is_not_a_password(url, masked):
    assert mask_url(url) == masked


@settings(max_examples=300, deadline=None, database=None)
@given(pw=st.text(alphabet="QXZJKVW0123456789@:/?#&;=%+ ", min_size=1, max_size=24),
       user=st.sampled_from(["", "tuner", "a.b-c"]),
       shape=st.sampled_from(["{s}://{u}:{p}@host/db", "{s}://{u}:{p}@host:/db?x=y", "{s}://{u}:{p}@",
                              "{s}://host/db?password={p}", "{s}:/{u}:{p}@host", "{u}:{p}@host", "{s}:///{u}:{p}@h"]),
       scheme=st.sampled_from(["postgresql", "mysql+pymysql", "x-y.z", "sqlite"]))
def test_no_character_private_to_the_password_is_ever_shown(pw, user, shape, scheme):
    """Password characters QXZJKVW and digits appear nowhere else in these URLs, so none may
    appear in the mask, however the password's reserved characters cut the URL. (Not
    generated: ``scheme://user:1234/x``, which is a host, a port and a database; nor, from
    ``user:PASSWORD@host`` with a password that starts with ``//``, ``tuner://0@host``: a
    URL of scheme ``tuner`` and user ``0``, whose user name is shown as any user name is.
    The same text without a user, ``://0@host``, has no scheme and is hidden whole.)"""
    assume(not (shape == "{u}:{p}@host" and user and pw.startswith("//")))
    url = shape.format(s=scheme, u=user, p=pw)
    shown = mask_url(url)
    assert not set(shown) & set("QXZJKVW0123456789"), (url, shown)
    assert not set(scrub(f"could not connect to {url} with {pw}", url)) & set("QXZJKVW0123456789")


def test_scrub_masks_overlapping_forms_whole():
    """The form " 10" (``+`` decoded as a space) of the piece "+10" overlaps "100" in the echoed
    password: masked one after another they left the "0" between them in view (a case the
    property test below found); merged, nothing of it is."""
    url = "postgresql:/:100:+10@host"
    out = scrub(f"could not connect to {url} with 100:+10", url)
    assert out == "could not connect to postgresql:*** with***:***"
    assert scrub("QQQQ", "postgresql://tuner:QQQ@host/db") == "***"  # overlapping occurrences of one form


def test_scrub_hides_the_password_in_every_form_a_driver_may_echo():
    url = "postgresql://tuner:p%40ss-Word9@db.example/grownet"
    text = f"FATAL: password authentication failed (p@ss-Word9, p%40ss-Word9) for {url}"
    out = scrub(text, url)
    assert "ss-Word9" not in out and out.endswith("for postgresql://tuner:***@db.example/grownet")


@pytest.mark.parametrize("url", [
    f"postgresql://tuner:{PASSWORD}@127.0.0.1:5432/grownet",  # SQLAlchemy would read a part of it as the host
    "postgresql://tuner:Qx7k@Vb2m@127.0.0.1:5432/grownet",
    "postgresql:///tuner:Qx7k@127.0.0.1/grownet",
    "postgresql://tu/ner:Qx7k@127.0.0.1/grownet",
])
def test_a_url_a_driver_would_misread_is_refused_before_connecting(url):
    with pytest.raises(UsageError, match=r"^--storage: postgresql://\S*\*\*\*\S*(: cannot tell where the user name "
                                         r"and password end; percent-encode @ : / \? # in them| is not a database URL)"
                       ) as exc:
        parse_url(url)
    assert leaked(str(exc.value)) == []


def test_an_encoded_password_is_accepted():
    parsed = parse_url(f"postgresql://tuner:{quote(PASSWORD, safe='')}@127.0.0.1:5432/grownet")
    assert parsed.password == PASSWORD and parsed.host == "127.0.0.1"


@pytest.mark.parametrize("name", list(hostile_urls(PASSWORD)))
def test_a_tune_on_a_hostile_url_fails_in_one_line_without_the_password(name, tmp_path, caplog):
    """Refused (UsageError) or not reachable (RunError): the error, the log and the output
    folder hold no piece of the password, and no folder is left behind. (The URL is made in
    the test, on a port nothing listens on: test ids stay the same from one collection to the
    next, as parallel workers need.)"""
    pytest.importorskip("psycopg2")
    url = hostile_urls(PASSWORD, _free_port())[name]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(GrownetError) as exc:
        tune("cifar10", trials=1, storage=url, out=tmp_path / "o", device="cpu")
    assert isinstance(exc.value, (UsageError, RunError))
    message = str(exc.value)
    assert "\n" not in message and leaked(message) == [], message
    assert leaked(caplog.text) == []
    assert not (tmp_path / "o").exists()


def test_the_cli_prints_no_piece_of_the_password(tmp_path, capsys):
    pytest.importorskip("psycopg2")
    port = _free_port()  # nothing listens there
    for url in (f"postgresql://tuner:{PASSWORD}@127.0.0.1:{port}/grownet",
                f"postgresql://tuner:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/grownet"):
        code = main(["tune", "--trials", "1", "--out", str(tmp_path / "o"), "--storage", url])
        captured = capsys.readouterr()
        assert code == 2
        assert re.match(r"grownet: error: (--storage: |cannot open study storage )postgresql://tuner:\*\*\*",
                        captured.err), captured.err
        assert leaked(captured.out + captured.err) == []


def test_huge_urls_are_masked_quickly_and_refused_in_one_line():
    """Linear masking however the URL repeats query keys, user parts or '@'; an over-long URL
    is refused without quoting it."""
    for url in ("postgresql://h/db?" + "pass" * 200_000, "postgresql://h/db?" + "a&" * 200_000 + "password=Qx7k",
                "postgresql://u:" + "Qx7k@" * 200_000 + "h/db", "x:" * 200_000):
        assert "Qx7k" not in mask_url(url)
    url = "postgresql://u:" + "Qx7k" * 200_000 + "@h/db"
    with pytest.raises(UsageError, match=rf"^--storage: a URL of {len(url)} characters is too long \(at most 4096\)$"):
        parse_url(url)

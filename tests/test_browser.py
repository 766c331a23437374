"""The report in a real browser: headless Chromium opens it, nothing is logged as an error,
every figure has a rendered size, and a full-page screenshot is taken.

Chromium is driven over the DevTools protocol through ``--remote-debugging-pipe`` (JSON
messages separated by NUL bytes on file descriptors 3 and 4, the transport Playwright uses),
so no Python dependency is needed. Skipped where ``/usr/bin/chromium`` is absent (CI installs
it with ``apt-get install -y chromium``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from _runfolder import FINAL, SEED, XSS, smoke_run, write_control, write_synthetic_run

CHROMIUM = Path(os.environ.get("GROWNET_CHROMIUM", "/usr/bin/chromium"))
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install -y chromium)")

LAPTOP = {"width": 1366, "height": 768}
TIMEOUT = 60.0


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe."""

    def __init__(self, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Move the child's ends above 4 so that placing them on 3 and 4 cannot clobber either.
        child_r, child_w = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def fds() -> None:  # the child reads commands on fd 3 and writes replies on fd 4
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        args = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
            # Any host name fails to resolve: nothing can leave the machine even if a page asks.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank",
        ]
        self.proc = subprocess.Popen(args, preexec_fn=fds, pass_fds=(3, 4),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(child_r)
        os.close(child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None) -> dict[str, Any]:
        """Send a command and wait for its reply (events that arrive meanwhile are kept)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def wait_event(self, method: str) -> dict[str, Any]:
        """Wait for the next event ``method`` not yet seen."""
        seen = len(self.events)
        for event in self.events[:seen]:
            if event["method"] == method and not event.get("_taken"):
                event["_taken"] = True
                return event
        while True:
            event = self._read()
            if event.get("method") == method:
                event["_taken"] = True
                return event

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("chromium did not answer within the timeout")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (status {self.proc.poll()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg = json.loads(raw)
        if "method" in msg:
            self.events.append(msg)
        return msg

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


def open_page(url: str, profile: Path) -> dict[str, Any]:
    """Load ``url`` at laptop size; return the logged errors, each figure's rendered size,
    the page height and a full-page PNG screenshot."""
    browser = Chromium(profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {**LAPTOP, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": url}, session=session)
        browser.wait_event("Page.loadEventFired")
        sizes = browser.send("Runtime.evaluate", {"returnByValue": True, "expression": """
            [...document.querySelectorAll('img, svg')].map(el => {
                const r = el.getBoundingClientRect();
                return {tag: el.tagName.toLowerCase(), width: r.width, height: r.height,
                        loaded: el.tagName === 'IMG' ? el.complete && el.naturalWidth > 0 : true};
            })"""}, session=session)["result"]["value"]
        height = browser.send("Runtime.evaluate", {"returnByValue": True,
                              "expression": "document.documentElement.scrollHeight"}, session=session)["result"]["value"]
        shot = browser.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": LAPTOP["width"], "height": height, "scale": 1}}, session=session)
        errors = [_error_text(e) for e in browser.events if _is_error(e)]
        return {"errors": errors, "figures": sizes, "height": height, "png": base64.b64decode(shot["data"])}
    finally:
        browser.close()


def _is_error(event: dict[str, Any]) -> bool:
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.exceptionThrown":
        return True
    if method == "Runtime.consoleAPICalled":
        return params.get("type") in ("error", "assert")
    if method == "Log.entryAdded":
        return params.get("entry", {}).get("level") == "error"
    return False


def _error_text(event: dict[str, Any]) -> str:
    params = event.get("params", {})
    if "entry" in params:
        return f"{params['entry'].get('source')}: {params['entry'].get('text')} {params['entry'].get('url', '')}"
    if "exceptionDetails" in params:
        return params["exceptionDetails"].get("exception", {}).get("description") or params["exceptionDetails"].get("text", "")
    return " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


# ---- tests -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the session's real smoke run (a copy, with a hostile class name)."""
    from grownet.report import write_report

    run = Path(shutil.copytree(smoke_run(tmp_path_factory), tmp_path_factory.mktemp("browser") / "smoke-run",
                               ignore=shutil.ignore_patterns("checkpoints", ".lock")))
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["classes"][0] = XSS
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return write_report(run)


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the synthetic run of tests/_runfolder.py, with two controls."""
    from grownet.report import write_report

    run = write_synthetic_run(tmp_path_factory.mktemp("browser") / "run")
    write_control(run, "scratch", FINAL, val_acc=0.62, test_acc=0.61)
    write_control(run, "seed", SEED, val_acc=0.55, test_acc=0.54)
    return write_report(run)


def check_page(url: str, tmp_path: Path, *, figures: int, name: str) -> None:
    """Open ``url``; assert no errors, every figure rendered, a laptop-wide full-page screenshot."""
    page = open_page(url, tmp_path / "profile")
    assert page["errors"] == []
    found = page["figures"]
    assert len(found) == figures and all(f["tag"] == "img" for f in found)
    for f in found:
        assert f["loaded"] and f["width"] > 300 and f["height"] > 100, f
    # The page fits a laptop screen: no figure is wider than the viewport.
    assert max(f["width"] for f in found) <= LAPTOP["width"]
    shot = tmp_path / f"{name}.png"
    shot.write_bytes(page["png"])
    width, height = png_size(page["png"])
    assert (width, height) == (LAPTOP["width"], page["height"]) and height > 3 * LAPTOP["height"]
    assert shot.stat().st_size > 100_000  # a page of text and charts, not a blank image
    if os.environ.get("GROWNET_SCREENSHOT_DIR"):  # for a person to look at
        shutil.copy(shot, Path(os.environ["GROWNET_SCREENSHOT_DIR"]) / shot.name)


def test_smoke_run_report_renders_in_chromium_without_errors(smoke_report: Path, tmp_path: Path) -> None:
    check_page(smoke_report.as_uri(), tmp_path, figures=5, name="smoke-report")  # no controls: 4 figures and the activity trace


def test_report_with_controls_renders_in_chromium_without_errors(report_path: Path, tmp_path: Path) -> None:
    check_page(report_path.as_uri(), tmp_path, figures=5, name="synthetic-report")


def test_browser_check_sees_errors_and_blocked_requests(tmp_path: Path) -> None:
    """The checker itself: a page with a script error, a console error and a request to another
    host (refused by the page's policy) yields those errors."""
    from grownet.report.html import CSP

    bad = tmp_path / "bad.html"
    bad.write_text(
        f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}; script-src \'unsafe-inline\'">'
        '</head><body><img src="https://example.org/x.png" width="10" height="10">'
        "<script>console.error('boom'); missing_function();</script></body></html>", encoding="utf-8")
    page = open_page(bad.as_uri(), tmp_path / "profile")
    text = "\n".join(page["errors"])
    assert "boom" in text and "missing_function" in text
    assert "example.org/x.png" in text  # refused by img-src data:


def test_compare_page_renders_in_chromium_without_errors(report_path: Path, tmp_path: Path) -> None:
    from grownet.compare import write_compare

    out = write_compare([report_path.parent], tmp_path / "compare.html")
    page = open_page(out.as_uri(), tmp_path / "profile")
    assert page["errors"] == []
    assert len(page["figures"]) == 2 and all(f["loaded"] and f["width"] > 300 and f["height"] > 150 for f in page["figures"])
    # The two plots sit side by side on a laptop screen.
    assert page["figures"][0]["width"] + page["figures"][1]["width"] <= LAPTOP["width"]

"""A small Chrome DevTools Protocol driver for headless Chromium (test helper, also a script).

It talks CDP over `--remote-debugging-pipe`: Chromium reads NUL-terminated JSON messages on fd 3 and
writes its own on fd 4. That needs no websocket client, no port and no parsing of Chromium's stderr.

    with Browser() as browser:
        page = browser.new_page(width=1200, height=800)
        page.navigate(Path("sheet.html").absolute().as_uri())
        page.evaluate("document.title")

Script use (PNG screenshot of an HTML file):
    python -m tests.support.cdp sheet.html sheet.png --width 1200 --height 800   (from the repo root)
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI containers run as root, where the sandbox refuses to start
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)


class CDPError(RuntimeError):
    """Chromium answered with an error, went away, or did not answer in time."""


def find_chromium() -> str | None:
    """Debian's /usr/bin/chromium, else a Chromium/Chrome on PATH, else None."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium process with a throwaway profile; use as a context manager."""

    def __init__(self, executable: str | None = None, *, timeout: float = 15.0):
        executable = executable or find_chromium()
        if executable is None:
            raise CDPError("chromium not found (apt-get install chromium)")
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buffer = b""
        self._profile = tempfile.mkdtemp(prefix="bt-search-chromium-")
        self._log = tempfile.TemporaryFile()
        self._proc, self._to_chrome, self._from_chrome = _spawn(executable, self._profile, self._log)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None) -> dict:
        """Send one command and return its result; events read meanwhile are kept in `events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") != self._next_id:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise CDPError(f"{method}: {reply['error'].get('message')}")
            return reply.get("result", {})

    def wait_event(self, method: str, session_id: str | None = None) -> dict:
        """Return (and consume) the first event `method` for `session_id`, waiting if needed."""
        deadline = time.monotonic() + self.timeout
        seen = 0
        while True:
            for i in range(seen, len(self.events)):
                event = self.events[i]
                if event.get("method") == method and event.get("sessionId") == session_id:
                    return self.events.pop(i)
            seen = len(self.events)
            self.events.append(self._read_message(deadline))

    def new_page(self, *, width: int = 1280, height: int = 800) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Network.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page

    def close(self) -> None:
        try:
            if self._proc.poll() is None:
                self.send("Browser.close")
                self._proc.wait(timeout=5)
        except (CDPError, OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        finally:
            os.close(self._to_chrome)
            os.close(self._from_chrome)
            self._log.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError(f"no answer from chromium within {self.timeout} s{self._log_tail()}")
            ready, _, _ = select.select([self._from_chrome], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise CDPError(f"chromium exited (code {self._proc.poll()}){self._log_tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _log_tail(self) -> str:
        self._log.seek(0)
        tail = self._log.read().decode(errors="replace").strip()[-2000:]
        return f"; its output ends with:\n{tail}" if tail else ""


class Page:
    """One tab, driven through a flat CDP session."""

    def __init__(self, browser: Browser, session_id: str):
        self.browser = browser
        self.session_id = session_id

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict:
        return self.browser.send(method, params, self.session_id)

    def navigate(self, url: str) -> None:
        """Load `url` and wait for its load event (images included)."""
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"cannot load {url}: {result['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session_id)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CDPError(f"JavaScript error: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def requested_urls(self) -> list[str]:
        """URLs of every request this page has started so far (Network.requestWillBeSent)."""
        return [
            event["params"]["request"]["url"]
            for event in self.browser.events
            if event.get("sessionId") == self.session_id and event.get("method") == "Network.requestWillBeSent"
        ]

    def screenshot_png(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])


def screenshot(
    html_path: str | os.PathLike[str], png_path: str | os.PathLike[str], width: int = 1280, height: int = 800
) -> None:
    """Save a PNG of the viewport (`width` x `height`) of the HTML file at `html_path`."""
    with Browser() as browser:
        page = browser.new_page(width=width, height=height)
        page.navigate(Path(html_path).absolute().as_uri())
        Path(png_path).write_bytes(page.screenshot_png())


def _spawn(executable: str, profile: str, log: Any) -> tuple[subprocess.Popen, int, int]:
    """Start Chromium with our pipe ends as its fds 3 (commands in) and 4 (replies out)."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    # Lift the child's ends above 10 so the dup2 onto 3 and 4 below cannot clobber one another;
    # they are close-on-exec, so only the dup2 copies reach Chromium.
    child_in = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
    child_out = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(to_chrome_r)
    os.close(from_chrome_w)

    def map_pipe_fds() -> None:
        os.dup2(child_in, 3)
        os.dup2(child_out, 4)

    try:
        proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=False,  # fds 3 and 4 must survive; Python's own fds are close-on-exec anyway
            preexec_fn=map_pipe_fds,
        )
    except BaseException:
        os.close(to_chrome_w)
        os.close(from_chrome_r)
        raise
    finally:
        os.close(child_in)
        os.close(child_out)
    return proc, to_chrome_w, from_chrome_r


def _main() -> None:
    parser = argparse.ArgumentParser(description="PNG screenshot of an HTML file, with headless Chromium.")
    parser.add_argument("html_path")
    parser.add_argument("png_path")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    screenshot(args.html_path, args.png_path, args.width, args.height)


if __name__ == "__main__":
    _main()

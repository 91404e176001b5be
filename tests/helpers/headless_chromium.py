"""A minimal Chrome DevTools Protocol client for headless Chromium over `--remote-debugging-pipe`.

The pipe needs no port and no websocket library: Chromium reads NUL-terminated JSON commands on fd 3 and
writes replies and events on fd 4. Enough for a test to load a JS app, wait for text, run a script and take a
screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class HeadlessChromium:
    def __init__(self, binary: str, user_data_dir: Path, timeout_s: float = 60.0) -> None:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def pipe_ends_to_fds_3_and_4() -> None:  # runs in the child, before exec
            # via fds >= 10 first: either pipe end may itself be fd 3 or 4
            high_read = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
            high_write = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        # close_fds=False keeps the dup2'ed 3 and 4; the parent's own fds are non-inheritable (PEP 446)
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            close_fds=False,
            preexec_fn=pipe_ends_to_fds_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._timeout_s = timeout_s
        self._next_id = 0
        self._buffer = b""
        target = self.command("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self.command("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]

    def command(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sends one command (to the page once attached) and returns its result; raises on protocol errors."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if getattr(self, "_session", None):
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self._timeout_s
        while time.monotonic() < deadline:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise TimeoutError(f"no reply to {method} within {self._timeout_s} s")

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str) -> Any:
        result = self.command("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def set_viewport(self, width: int, height: int) -> None:
        self.command(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def open(self, url: str) -> None:
        self.command("Page.navigate", {"url": url})

    def wait_for(self, expression: str, done: Callable[[Any], bool], timeout_s: float) -> Any:
        """The value of a JS expression once ``done(value)`` (a JS app renders late), or its last value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if done(value) or time.monotonic() >= deadline:
                return value
            time.sleep(0.5)

    def wait_for_text(self, needles: list[str], timeout_s: float) -> str:
        """The page's text once it holds every needle; raises with what it held."""
        text = self.wait_for(
            "document.body ? document.body.innerText : ''",
            lambda text: all(needle in (text or "") for needle in needles),
            timeout_s,
        )
        text = text or ""
        missing = [needle for needle in needles if needle not in text]
        if missing:
            raise TimeoutError(f"page still lacks {missing} after {timeout_s} s; it shows:\n{text[:3000]}")
        return text

    def screenshot(self, path: Path) -> Path:
        data = self.command("Page.captureScreenshot", {"format": "png"})["data"]
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(base64.b64decode(data))
        os.replace(partial, path)
        return path

    def close(self) -> None:
        try:
            os.write(self._commands, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            os.close(self._commands)
            os.close(self._replies)

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

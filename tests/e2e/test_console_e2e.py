"""Live flows in mitmproxy's console: a real ``mitmproxy`` in a pseudo-terminal, with the addon, an SSE stream open
through it; the flow's response tab, opened once, shows events relayed after it was opened, with no key pressed.

The console is read from what it writes to its terminal, with the terminal's escape sequences taken out: a line
the console draws arrives as its text, split at most by colour changes, which are taken out too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from harness import ADDON, BIN, ROOT, free_port, upstream, wait_for, wait_port

ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


class Console:
    """``mitmproxy`` in a pseudo-terminal of 160 columns by 48 lines; what it writes is read by a thread."""

    def __init__(self, tmp: Path, upstream_port: int) -> None:
        self.port = free_port()
        self.screen = bytearray()
        self.lock = threading.Lock()
        args = [
            str(BIN / "mitmproxy"),
            "-s",
            str(ADDON),
            "--mode",
            f"reverse:http://127.0.0.1:{upstream_port}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            "--set",
            f"confdir={tmp / 'mitmproxy'}",
        ]
        self.fd, terminal = pty.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8"}
        self.proc = subprocess.Popen(
            args, stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True, cwd=ROOT, env=env
        )
        os.close(terminal)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.5)
                if ready:
                    data = os.read(self.fd, 65536)
                    if not data:
                        return
                    with self.lock:
                        self.screen += data
            except OSError:  # the terminal closed: the console has exited
                return

    def text(self, since: int = 0) -> str:
        """What the console wrote from byte ``since`` on, without escape sequences."""
        with self.lock:
            raw = bytes(self.screen[since:])
        return ESCAPES.sub(b"", raw).decode("utf-8", "replace")

    def written(self) -> int:
        with self.lock:
            return len(self.screen)

    def press(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.fd)


@contextlib.contextmanager
def console(tmp: Path, upstream_port: int) -> Iterator[Console]:
    proc = Console(tmp, upstream_port)
    try:
        wait_port(proc.port)
        yield proc
    finally:
        proc.stop()


def test_the_consoles_response_tab_follows_an_open_sse_stream(tmp_path: Path) -> None:
    with upstream(tmp_path, interval=0.3) as up, console(tmp_path, up) as mitmproxy:
        relayed: list[str] = []
        stop = threading.Event()

        def client() -> None:
            url = f"http://127.0.0.1:{mitmproxy.port}/sse/console"
            with (
                contextlib.suppress(httpx.HTTPError),  # (the console stops with the stream open)
                httpx.stream("GET", url, headers={"accept": "text/event-stream"}, timeout=30) as response,
            ):
                for line in response.iter_lines():
                    if line.startswith("id: "):
                        relayed.append(line[4:])
                    if stop.is_set() or len(relayed) >= 200:
                        return

        reader = threading.Thread(target=client, daemon=True)
        reader.start()
        try:
            wait_for(lambda: "/sse/console" in mitmproxy.text(), 30, "the flow in the console's list")
            wait_for(lambda: len(relayed) >= 2, 30, "two events relayed")
            mitmproxy.press(b"\r")  # the focused flow (the only one): its details
            wait_for(lambda: "Response" in mitmproxy.text(), 20, "the flow's details")
            mitmproxy.press(b"\t")  # its next tab: the response
            opened = mitmproxy.written()
            at_open = len(relayed)
            wait_for(
                lambda: "#1  id: 1" in mitmproxy.text(opened), 20, lambda: f"the SSE view: {mitmproxy.text()[-3000:]}"
            )
            later = at_open + 3
            # Events relayed after the tab was opened show on it, nothing pressed since.
            wait_for(
                lambda: f"#{later}  id: {later}" in mitmproxy.text(opened),
                30,
                lambda: f"event {later} on the open tab ({len(relayed)} relayed): {mitmproxy.text(opened)[-3000:]}",
            )
            assert reader.is_alive(), "the stream ended: the tab may have been drawn at its end only"
        finally:
            stop.set()

"""sse-resume: a mitmproxy addon that makes Server-Sent Events streams resumable.

    mitmdump -s addon/sse_resume.py [--set sse_support_replay=false ...]

A client that reconnects with ``Last-Event-ID`` gets the events it missed from the proxy's history, once each and
in order, then the live stream; duplicates an upstream resends are dropped. This file is what mitmproxy loads: the
addons are in ``sse_resume_shell`` (mitmproxy's side) and every decision in ``sse_resume_core`` (no mitmproxy).
"""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # the packages beside this file, from a checkout (mitmproxy's loader may undo its own)
    sys.path.insert(0, HERE)

from sse_resume_shell import addons as _addons  # noqa: E402 (after the path it is found on)

addons = _addons()

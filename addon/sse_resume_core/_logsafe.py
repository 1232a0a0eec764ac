"""What the addon's log lines may say about data: sizes and digests, never the bytes.

An exception's message often quotes the data that broke something (h11 quotes the offending line, a decoder its
input, a ``KeyError`` its key): :func:`safe_traceback` keeps the frames and the exception's type and says only how
long the message was. :func:`id_digest` names an event id for a log line without linking lines across sessions.
"""

from __future__ import annotations

import traceback
from urllib.parse import urlsplit, urlunsplit

from sse_resume_core._resume import digest

__all__ = ["id_digest", "redact_url", "safe_traceback", "withheld"]


def withheld(text: str) -> str:
    """A stand-in for ``text`` in a log line: its size and a digest (keyed with this process's secret)."""
    return f"{len(text)} characters, digest {digest(text, 4)}"


def safe_traceback(error: BaseException) -> str:
    """``error``'s traceback, as Python prints it, with every message of the chain replaced by its size.

    The frames (file, line, code) and the exception types stay; what the exceptions say does not.
    """
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    out: list[str] = []
    for n, exc in enumerate(reversed(chain)):
        if n:
            out.append(
                "\nThe above exception was the direct cause of the following exception:\n\n"
                if exc.__cause__ is not None
                else "\nDuring handling of the above exception, another exception occurred:\n\n"
            )
        if exc.__traceback__ is not None:
            out.append("Traceback (most recent call last):\n")
            out.extend(traceback.format_tb(exc.__traceback__))
        try:
            text = str(exc)
        except Exception:  # an exception whose message cannot even be made
            text = ""
        name = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
        out.append(f"{name} (message withheld: {withheld(text)})\n" if text else f"{name}\n")
    return "".join(out).rstrip("\n")


def id_digest(session: str, event_id: str) -> str:
    """A short digest of ``event_id`` for log lines of ``session``.

    Keyed with the session (and, through :func:`digest`, this process's secret): the lines of one session that
    name the same id show the same digest, while the same id in two sessions gives two unrelated digests, so a
    digest cannot link lines across sessions (nor be checked against a guessed id).
    """
    key = bytes.fromhex(digest("event ids of " + session, 32))
    return digest(event_id, 6, key)


def redact_url(url: str) -> str:
    """A URL fit for a log or a listing of settings: its password, if it has one, replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))

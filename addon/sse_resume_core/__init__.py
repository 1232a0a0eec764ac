"""sse_resume_core: the sans-I/O heart of sse-resume.

It parses event streams, remembers what went by, and decides how a reconnecting client is served. It knows
nothing of mitmproxy or of sockets: bytes and facts go in, blocks and decisions come out.
"""

from sse_resume_core._config import ConfigError, Settings
from sse_resume_core._history import (
    Found,
    HistoryLimits,
    HistoryStats,
    MemoryHistory,
    Recorded,
    SessionInfo,
    StoredEvent,
)
from sse_resume_core._identity import DEFAULT_IDENTITY_HEADERS, IdentityRule, request_identity
from sse_resume_core._parser import DEFAULT_MAX_SIZE, Block, BlockKind, SSEParser, parse
from sse_resume_core._resume import Decision, Outcome, Relay, Resumer, digest, session_key
from sse_resume_core._store import HistoryStore

__all__ = [
    "DEFAULT_IDENTITY_HEADERS",
    "DEFAULT_MAX_SIZE",
    "Block",
    "BlockKind",
    "ConfigError",
    "Decision",
    "Found",
    "HistoryLimits",
    "HistoryStats",
    "HistoryStore",
    "IdentityRule",
    "MemoryHistory",
    "Outcome",
    "Recorded",
    "Relay",
    "Resumer",
    "SSEParser",
    "SessionInfo",
    "Settings",
    "StoredEvent",
    "digest",
    "parse",
    "request_identity",
    "session_key",
]

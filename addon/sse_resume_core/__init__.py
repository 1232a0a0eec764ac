"""sse_resume_core: the sans-I/O heart of sse-resume.

It parses event streams, remembers what went by, and decides how a reconnecting client is served. It knows
nothing of mitmproxy or of sockets: bytes and facts go in, blocks and decisions come out.
"""

from sse_resume_core._parser import DEFAULT_MAX_SIZE, Block, BlockKind, SSEParser, parse

__all__ = ["DEFAULT_MAX_SIZE", "Block", "BlockKind", "SSEParser", "parse"]

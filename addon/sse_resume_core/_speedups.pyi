# The C module built from _speedups.c (optional: see _parser.plain_event_id).
ABI: int

def plain_event_id(chunk: bytes, /) -> str | None: ...

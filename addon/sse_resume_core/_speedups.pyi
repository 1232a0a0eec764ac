# The C module built from _speedups.c (optional: see _parser._compiled).
from typing import Literal

ABI: int

def single_event_id(chunk: bytes, /) -> str | Literal[False] | None: ...
def whole_events(chunk: bytes, /) -> tuple[list[bytes], list[str | None]] | None: ...

# The C module built from _speedups.c (optional: see _parser.single_event_id).
from typing import Literal

ABI: int

def single_event_id(chunk: bytes, /) -> str | Literal[False] | None: ...

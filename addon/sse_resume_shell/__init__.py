"""sse_resume_shell: the mitmproxy side of sse-resume, addon by addon.

Each module holds one small addon class with its own options, hooks and commands, which ``addon/sse_resume.py``
lists after the SSEResume addon. So far: fault injection (:class:`SSEFaults`), which cuts, stalls or repeats SSE
streams on purpose, for the person debugging a client.
"""

from sse_resume_shell._faults import FAULT_OPTIONS, MARKS, Fault, Injector, SSEFaults, StreamState

__all__ = ["FAULT_OPTIONS", "MARKS", "Fault", "Injector", "SSEFaults", "StreamState"]

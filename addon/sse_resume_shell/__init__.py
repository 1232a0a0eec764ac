"""sse_resume_shell: the mitmproxy side of sse-resume, as small addons with one job each.

``addons()`` makes them, in the order mitmproxy is to call their hooks (as mitmproxy's own ``default_addons()``);
``addon/sse_resume.py`` lists them. They share one :class:`Shell` (the settings, the store, the resumer, the
keeper, the open flows), which each gets at construction:

- :class:`SSEOptions` registers the ``sse_*`` options from the one table and puts them in effect;
- :class:`SSEView`, the SSE content view;
- :class:`SSEMetrics`, the Prometheus endpoint;
- :class:`SSELifecycle` starts the store, flushes the relays on a timer, closes the keeper and the store;
- :class:`SSELiveFlows` shows open flows as they grow;
- :class:`SSEKeep` runs the keeper (keep mode) and routes requests to it;
- :class:`SSEResume`, the resume hooks: requests, responses, the stream callables, the flow said at its end;
- :class:`SSESessionEnd` drops the history of an ended session;
- :class:`SSECommands`, the ``sse.*`` commands of the history;
- :class:`SSEFaults`, fault injection, last: it wraps the stream callable SSEResume set (its child
  :class:`SSECuts` cuts connections and has its commands).
"""

from sse_resume_shell._commands import SSECommands
from sse_resume_shell._cuts import SSECuts
from sse_resume_shell._faults import FAULT_OPTIONS, SSEFaults
from sse_resume_shell._faultstream import MARKS, StreamState
from sse_resume_shell._flow import FlowState
from sse_resume_shell._inject import Fault, Injector
from sse_resume_shell._keep import SSEKeep
from sse_resume_shell._lifecycle import SSELifecycle
from sse_resume_shell._live import SSELiveFlows
from sse_resume_shell._metrics import SSEMetrics
from sse_resume_shell._options import SSEOptions
from sse_resume_shell._resume import SSEResume
from sse_resume_shell._sessions import SSESessionEnd
from sse_resume_shell._shell import Shell
from sse_resume_shell._view import SSEView

__all__ = [
    "FAULT_OPTIONS",
    "MARKS",
    "Fault",
    "FlowState",
    "Injector",
    "SSECommands",
    "SSECuts",
    "SSEFaults",
    "SSEKeep",
    "SSELifecycle",
    "SSELiveFlows",
    "SSEMetrics",
    "SSEOptions",
    "SSEResume",
    "SSESessionEnd",
    "SSEView",
    "Shell",
    "StreamState",
    "addons",
    "resume_addons",
]


def resume_addons(shell: Shell) -> list[object]:
    """The addons around ``shell``, fault injection aside, in their order."""
    keep = SSEKeep(shell)
    live = SSELiveFlows(shell)
    return [
        SSEOptions(shell),  # first: the others' configure reads the settings it puts in effect
        SSEView(),
        SSEMetrics(shell),
        SSELifecycle(shell, live.refresh),
        live,
        keep,
        SSEResume(shell, keep),
        SSESessionEnd(shell),  # after SSEResume: a flow is said before its session's history goes
        SSECommands(shell),
    ]


def addons() -> list[object]:
    """A new sse-resume: every addon, around one new Shell."""
    shell = Shell()
    return [*resume_addons(shell), SSEFaults(flow_state=shell.flows.get)]

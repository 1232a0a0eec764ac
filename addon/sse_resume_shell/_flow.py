"""What the shell knows about one flow (:class:`FlowState`), and the small words every piece of it uses."""

from __future__ import annotations

from dataclasses import dataclass

from mitmproxy import hooks, http

from sse_resume_core._resume import Decision, Relay
from sse_resume_core._view import Transcript

__all__ = ["MARK", "RESULT_HEADER", "SSE_TYPE", "FlowState", "is_sse", "say", "show", "show_id", "wants_sse"]

SSE_TYPE = "text/event-stream"
RESULT_HEADER = "sse-resume"
MARK = ":arrows_counterclockwise:"


@dataclass(slots=True, eq=False)
class FlowState:
    """What the addon knows about one flow, from its request to its end (the shell's ``flows``, by flow id)."""

    session: str
    flow: http.HTTPFlow | None = None  # (for live updates of the open flow)
    decision: Decision | None = None
    relay: Relay | None = None
    failed: bool = False
    last_event_id: str | None = None
    answered: bool = False  # the addon made the response itself (a replay): later hooks leave it alone
    keep: str | None = None  # the keeper's ticket, when the keeper serves this flow
    origin: tuple[str, str, int, str | None] | None = None  # scheme, host, port, Host of a rerouted flow
    stopped: str = ""  # why the addon ended the response early (a compressed body it could not decode)
    copy: Transcript | None = None  # the transcript of a stream passed through untouched
    passed: str = ""  # why that stream was passed through
    shown: int = -1  # the transcript version last put on the open flow (see SSELiveFlows.refresh)
    note: str = ""  # the addon's sentence in the flow's comment (replaced when the addon says more)
    kept_outcome: str = ""  # the keeper's outcome already said on the open flow


def is_sse(message: http.Message | None) -> bool:
    return message is not None and message.headers.get("content-type", "").lower().startswith(SSE_TYPE)


def wants_sse(request: http.Request) -> bool:
    return SSE_TYPE in request.headers.get("accept", "").lower() or "last-event-id" in request.headers


def say(flow: http.HTTPFlow, state: FlowState, sentence: str) -> None:
    """Put the addon's sentence in the flow's comment, in place of the one it put there before."""
    comment = flow.comment
    if state.note and comment.endswith(state.note):
        comment = comment[: -len(state.note)].rstrip("\n")
    flow.comment = f"{comment}\n{sentence}" if comment else sentence
    state.note = sentence


def show(flows: list[http.HTTPFlow]) -> None:
    """Tell mitmweb's or the console's view that these flows changed."""
    from mitmproxy import ctx

    ctx.master.addons.trigger(hooks.UpdateHook(flows))


def show_id(event_id: str | None, limit: int = 40) -> str:
    """An event id as a user may read it in the flow view: quoted, escaped, shortened."""
    if event_id is None:
        return "(none)"
    text = repr(event_id)
    return text if len(text) <= limit else text[: limit - 4] + "...'"  # (limit characters in all)

"""A real MCP server (the Python SDK) for the end-to-end tests: one tool that reports progress and logs.

    python tests/e2e/mcp_server.py --port P [--no-event-store] [--delay 0.25]

The tool ``count(n, delay)`` sends ``n`` progress notifications and ``n`` log messages, ``delay`` seconds apart,
then returns "counted to n". With an event store (the default) every event carries an id and the server can replay
a stream; without one, events carry no ids and nothing can be resumed by the server.
"""

from __future__ import annotations

import argparse
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import JSONRPCMessage


class MemoryEventStore(EventStore):
    """Every event of every stream, in order, with globally unique ids.

    The SDK's EventStore is shared by all sessions and is told only a stream id, which for a POST stream is the
    JSON-RPC request id: two sessions' calls with the same request id would share a stream, and a resume would
    replay the other session's events (the shared-stream failure of the TypeScript SDK's issue 1004). So this
    store scopes each stream by the session of the transport that stores into it.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[str, str], JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        transport = sys._getframe(1).f_locals.get("self")  # the session's StreamableHTTPServerTransport
        session = str(getattr(transport, "mcp_session_id", ""))
        event_id = f"{stream_id}:{len(self.events) + 1}"
        self.events.append((event_id, (session, stream_id), message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        for i, (event_id, stream, _) in enumerate(self.events):
            if event_id == last_event_id:
                for later_id, later_stream, message in self.events[i + 1 :]:
                    if later_stream == stream and message is not None:
                        await send_callback(EventMessage(message, later_id))
                return stream[1]
        return None


def build(event_store: bool) -> MCPServer:
    server = MCPServer("sse-resume test server")

    @server.tool()
    async def count(n: int, delay: float, ctx: Context) -> str:
        """Report progress n times, delay seconds apart, logging each step."""
        for i in range(1, n + 1):
            await ctx.report_progress(i, total=n, message=f"step {i}")
            await ctx.info(f"log {i}")
            await anyio.sleep(delay)
        return f"counted to {n}"

    return server


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--port", type=int, required=True)
    args.add_argument("--no-event-store", action="store_true")
    opts = args.parse_args()
    app = build(not opts.no_event_store).streamable_http_app(
        event_store=None if opts.no_event_store else MemoryEventStore(),
        retry_interval=500,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    uvicorn.run(app, host="127.0.0.1", port=opts.port, log_level="warning")


if __name__ == "__main__":
    main()

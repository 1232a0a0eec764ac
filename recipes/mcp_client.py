"""Call an MCP tool through the proxy with the MCP Python SDK, printing notifications as they come.

    # terminal 1: the proxy in front of your MCP server (Streamable HTTP)
    .venv/bin/mitmdump -s addon/sse_resume.py --mode reverse:http://127.0.0.1:8000
    # terminal 2:
    .venv/bin/python recipes/mcp_client.py http://127.0.0.1:8080/mcp count '{"n": 5, "delay": 0.5}'

The client speaks protocol 2025-11-25 (``mode="legacy"``), the last version with resumable streams. If its
connection drops mid-call, it reconnects with ``Last-Event-ID`` and the proxy serves what it missed.
tests/e2e/test_mcp_e2e.py runs this recipe against the SDK test server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from mcp.client.client import Client


async def main(url: str, tool: str, arguments: dict[str, Any]) -> None:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        print(f"progress {progress:g}/{total:g}: {message}" if total else f"progress {progress:g}: {message}")

    async def on_log(params: Any) -> None:
        print(f"log [{params.level}] {params.data}")

    async with Client(url, mode="legacy", logging_callback=on_log) as client:
        result = await client.call_tool(tool, arguments, progress_callback=on_progress)
    for item in result.content or []:
        print("result:", getattr(item, "text", item))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("tool")
    parser.add_argument("arguments", nargs="?", default="{}", help="the tool's arguments, as JSON")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.tool, json.loads(args.arguments)))

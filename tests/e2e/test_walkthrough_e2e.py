"""docs/mcp-walkthrough.md, as a user follows it: the SDK test server, mitmweb with the addon in front of it,
``recipes/mcp_client.py`` calling a slow tool through it; headless Chromium watches the call's stream in mitmweb
while it is open, cuts it from mitmweb's command bar, and finds the resume: the cut flow marked and commented, the
client's reconnect marked, commented and showing its ``Last-Event-ID``. The client gets every notification once.

What is checked is what the page shows (its DOM text) and what mitmweb's REST API says (``/flows.json``). The
walkthrough's pictures are taken on the way, into the test's temporary directory; they are copied into the
directory ``SSE_RESUME_SCREENSHOTS`` names, when set (``./dev screenshots`` sets it to docs/images): the tests
themselves never touch tracked files.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from test_live_flows_e2e import MARK, PASSWORD, Web, open_response

from harness import ROOT, Mitmdump, Process, free_port, wait_for, wait_port
from test_mcp_e2e import mcp_server

SCISSORS = "\N{BLACK SCISSORS}"  # mitmweb's emoji for :scissors:, the mark of a cut
STEPS = 40  # the tool call's progress notifications, half a second apart: it runs for 20 s
SHOTS = tuple(f"mcp-walkthrough-{n}.png" for n in ("live", "cut", "last-event-id", "resumed"))


def test_mcp_walkthrough_in_mitmweb(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    web_port = free_port()
    options = [
        "sse_keep_upstream=true",
        f"web_port={web_port}",
        "web_host=127.0.0.1",
        f"web_password={PASSWORD}",
        "web_open_browser=false",
    ]
    with mcp_server(tmp_path) as server, Mitmdump(tmp_path, server, options, tool="mitmweb") as proxy:
        wait_port(web_port, proxy.proc)
        web = Web(web_port)
        arguments = f'{{"n": {STEPS}, "delay": 0.5}}'
        client = Process(
            [sys.executable, ROOT / "recipes" / "mcp_client.py", f"{proxy.url}/mcp", "count", arguments],
            tmp_path / "mcp-client.log",
            env={"PYTHONUNBUFFERED": "1"},
        )
        with client, sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"http://127.0.0.1:{web_port}/?token={PASSWORD}#/flows")

                # 1. The tool call's stream, live: its events show while it is open, and more follow.
                call = web.flow("/mcp", lambda f: is_open_call(web, f), "the tool call's open stream")
                show(page, web_port, call["id"], "response")
                detail = page.locator(".flow-detail")
                detail.get_by_text('"step 3"').wait_for(timeout=20_000)
                newest = detail.get_by_text('"step 5"')
                newest.wait_for(timeout=20_000)  # (the page was not loaded again)
                newest.scroll_into_view_if_needed()
                assert "SSE" in detail.inner_text()  # the content view picked
                page.screenshot(path=str(tmp_path / SHOTS[0]))
                assert open_response(flow_of(web, call["id"])), "the call ended before it was watched"

                # 2. Cut it from mitmweb's command bar, as the walkthrough says.
                page.get_by_text("Options", exact=True).click()
                page.get_by_text("Display Command Bar").click()
                page.get_by_text("Flow List", exact=True).click()
                command = page.get_by_placeholder("Enter command")
                command.fill('sse.cut "~u /mcp & ~m POST"')
                command.press("Enter")
                answer = page.locator(".command-result")
                answer.get_by_text("cut the client connection of 1 SSE stream").wait_for(timeout=20_000)
                cut = web.flow("/mcp", lambda f: f["id"] == call["id"] and f["marked"] == SCISSORS, "the cut marked")
                assert cut["comment"].startswith("sse-resume fault: client connection cut (command sse.cut)")
                resumed = web.flow("/mcp", is_open_resume, "the client's reconnect, marked while it is open")
                page.locator(".flow-detail nav").get_by_text("Comment", exact=True).click()  # (the flow shown)
                detail.get_by_text("sse-resume fault: client connection cut").wait_for(timeout=20_000)
                flow_list = page.locator(".flow-table")
                wait_for(lambda: MARK in flow_list.inner_text(), 20, "the reconnect's mark in the flow list")
                assert SCISSORS in flow_list.inner_text()
                page.screenshot(path=str(tmp_path / SHOTS[1]))

                # 3. The resume: the reconnect's Last-Event-ID on its request, the proxy's account on its response.
                client_id = str(header(resumed, "last-event-id"))  # (there: is_open_resume checked it)
                last = re.compile(rb"^id: " + re.escape(client_id.encode()) + rb"\r?$", re.MULTILINE)
                assert last.search(web.content(cut["id"])), client_id  # an id the cut stream delivered
                assert f"client's Last-Event-ID '{client_id}'" in resumed["comment"], resumed["comment"]
                assert "served" in resumed["comment"] and "from history" in resumed["comment"], resumed["comment"]
                show(page, web_port, resumed["id"], "request")
                detail.get_by_text(client_id, exact=True).wait_for(timeout=20_000)
                assert "last-event-id" in detail.inner_text().lower()
                page.screenshot(path=str(tmp_path / SHOTS[2]))
                show(page, web_port, resumed["id"], "response")
                detail.get_by_text(": sse-resume: served").wait_for(timeout=20_000)
                page.screenshot(path=str(tmp_path / SHOTS[3]))
            except Exception:  # what the page showed, for whoever reads the failure
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(tmp_path / "failed.png"))
                    (tmp_path / "failed.txt").write_text(page.locator("body").inner_text())
                raise
            finally:
                browser.close()
            wait_for(lambda: client.proc.poll() is not None, 60, lambda: f"the client's end: {client.output}")
        printed = [line for line in client.output.splitlines() if line.startswith(("progress", "log", "result"))]
    assert client.proc.returncode == 0, client.output
    steps = [(f"progress {i}/{STEPS}: step {i}", f"log [info] log {i}") for i in range(1, STEPS + 1)]
    assert printed == [*(line for step in steps for line in step), f"result: counted to {STEPS}"]  # each once
    for name in SHOTS:
        picture = (tmp_path / name).read_bytes()
        assert picture.startswith(b"\x89PNG\r\n\x1a\n") and len(picture) > 10_000
    if os.environ.get("SSE_RESUME_SCREENSHOTS"):  # a deliberate step: the tests never touch tracked files
        target = Path(os.environ["SSE_RESUME_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        for name in SHOTS:
            shutil.copyfile(tmp_path / name, target / name)


def show(page: Any, web_port: int, flow_id: str, tab: str) -> None:
    """Open mitmweb at a flow's tab by its address, ``#/flows/<id>/<tab>``, the one a click on them shows. (The
    page is loaded afresh: mitmweb reads the address when it loads, not when only its fragment changes.)"""
    page.goto("about:blank")
    page.goto(f"http://127.0.0.1:{web_port}/?token={PASSWORD}#/flows/{flow_id}/{tab}")
    page.locator(".flow-detail nav .active").get_by_text(tab.capitalize(), exact=True).wait_for(timeout=20_000)


def flow_of(web: Web, flow_id: str) -> dict[str, Any]:
    return next(f for f in web.flows() if f["id"] == flow_id)


def header(flow: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in flow["request"]["headers"] if k.lower() == name), None)


def is_open_call(web: Web, flow: dict[str, Any]) -> bool:
    """The tool call's stream: a POST of ``tools/call`` whose SSE response is still open. (The ``initialize``
    POST's response is open too, for a moment.)"""
    if not (flow["request"]["method"] == "POST" and open_response(flow) and flow["response"]["status_code"] == 200):
        return False
    return b'"tools/call"' in web.http.get(f"/flows/{flow['id']}/request/content.data").content


def is_open_resume(flow: dict[str, Any]) -> bool:
    """The GET with which the client comes back after the cut: Last-Event-ID, marked, still open."""
    return (
        flow["request"]["method"] == "GET"
        and header(flow, "last-event-id") is not None
        and flow["marked"] == MARK
        and open_response(flow)
    )

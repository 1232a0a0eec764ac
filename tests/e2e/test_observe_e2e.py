"""What a user sees, end to end: saved flows read back, the metrics endpoint of a running mitmdump, and mitmweb
showing an SSE flow in the content view.

The screenshot in docs/images is taken here: the test writes it into its temporary directory, and copies it into
the directory ``SSE_RESUME_SCREENSHOTS`` names, when set (``./dev screenshots`` sets it to docs/images).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
from mitmproxy import contentviews
from mitmproxy.http import HTTPFlow
from mitmproxy.io import FlowReader
from mitmproxy.test import taddons

from harness import EventSourceClient, Mitmdump, free_port, read_events, scrape, upstream, wait_for, wait_port
from sse_resume_shell._view import SSEContentview


def test_saved_flows_and_metrics(tmp_path: Path) -> None:
    metrics_port = free_port()
    saved = tmp_path / "flows.mitm"
    with (
        upstream(tmp_path, interval=0.01) as up,
        Mitmdump(tmp_path, up, [f"sse_metrics_port={metrics_port}"], extra=["-w", str(saved)]) as proxy,
    ):
        wait_port(metrics_port)
        before = scrape(metrics_port)
        url = f"{proxy.url}/sse/saved?hang_after=8"
        recorded = lambda n: lambda: scrape(metrics_port)["sse_resume_events_recorded_total"] >= n  # noqa: E731
        read_events(url, 3, until=recorded(8))  # fresh: 1-8 relayed, the client took 3 and hung up
        hit = httpx.get(url, headers={"accept": "text/event-stream", "last-event-id": "3"})
        assert hit.headers["sse-resume"] == "hit"
        dup_url = f"{proxy.url}/sse/dups?resume=0&hang_after=8"
        read_events(dup_url, 3, until=recorded(8 + 8))  # the second stream this proxy records, 1-8 too
        # Back with 8: the upstream starts again at 1 and the proxy drops 1-8 as repeats, so nothing comes. The
        # client stays until the proxy has dropped all eight, then hangs up.
        dropped = lambda n: lambda: scrape(metrics_port)["sse_resume_events_deduplicated_total"] >= n  # noqa: E731
        with httpx.stream("GET", dup_url, headers={"accept": "text/event-stream", "last-event-id": "8"}, timeout=20):
            wait_for(dropped(before["sse_resume_events_deduplicated_total"] + 8), 20, "1-8 dropped as repeats")
        EventSourceClient(url, last_event_id="ancient-id").run(1, max_connections=1)  # last: it records more
        after = scrape(metrics_port)
    # mitmdump has stopped: the flows are written.
    assert after["sse_resume_replay_hits_total"] - before["sse_resume_replay_hits_total"] == 1
    assert after["sse_resume_replay_misses_total"] - before["sse_resume_replay_misses_total"] == 1
    assert after["sse_resume_events_replayed_total"] == 5
    assert after["sse_resume_events_deduplicated_total"] >= 8  # the restarted upstream resent 1-8
    assert after["sse_resume_sessions"] == 2 and after["sse_resume_history_events"] > 0

    with saved.open("rb") as f:
        flows = [flow for flow in FlowReader(f).stream() if isinstance(flow, HTTPFlow)]
    by_kind: dict[tuple[str, str | None, str | None], HTTPFlow] = {}
    for flow in flows:
        facts = flow.metadata.get("sse_resume", {})
        key = (flow.request.path.split("?")[0], flow.request.headers.get("last-event-id"), facts.get("outcome"))
        by_kind[key] = flow
    fresh = by_kind[("/sse/saved", None, "fresh")]
    assert fresh.response is not None and (fresh.response.raw_content or b"").startswith(
        b'id: 1\ndata: {"n": 1}\n\n'
    )  # kept though the client left
    contentviews.add(SSEContentview())
    with taddons.context():  # prettify_message reads mitmproxy's options
        view = contentviews.prettify_message(fresh.response, fresh)
    assert view.view_name == "SSE" and view.text.startswith('#1  id: 1\n{\n  "n": 1\n}')
    hit_flow = by_kind[("/sse/saved", "3", "hit")]
    assert hit_flow.comment == "sse-resume: served 5 events from history after id '3'"
    assert hit_flow.marked and hit_flow.response is not None
    assert b'data: {"n": 8}' in (hit_flow.response.raw_content or b"")
    miss = by_kind[("/sse/saved", "ancient-id", "miss")]
    assert miss.comment == "sse-resume: Last-Event-ID 'ancient-id' unknown: forwarded upstream"
    dups = by_kind[("/sse/dups", "8", "up-to-date")]
    assert "8 duplicate events dropped" in dups.comment and dups.metadata["sse_resume"]["duplicates"] == 8


def test_mitmweb_shows_sse_flow_in_content_view(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    web_port = free_port()
    shot = tmp_path / "mitmweb-sse.png"
    options = ["web_password=sse-test", f"web_port={web_port}", "web_host=127.0.0.1", "web_open_browser=false"]
    with upstream(tmp_path, interval=0.05) as up, Mitmdump(tmp_path, up, options, tool="mitmweb") as proxy:
        wait_port(web_port)
        body = httpx.get(f"{proxy.url}/sse/mcp?end_after=3&pad=12", headers={"accept": "text/event-stream"}).content
        assert body.count(b"\n\n") == 3
        flow_id = _finished_flow(web_port, "/sse/mcp")
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(f"http://127.0.0.1:{web_port}/?token=sse-test#/flows/{flow_id}/response")
                page.get_by_text("#3  id: 3").wait_for(timeout=20_000)
                assert page.get_by_text("SSE", exact=True).count() >= 1  # the view picked automatically
                page.screenshot(path=str(shot))
            finally:
                browser.close()
        details = httpx.get(f"http://127.0.0.1:{web_port}/flows/{flow_id}/response/content/sse.json?token=sse-test")
        rendered = details.json()
        assert rendered["view_name"] == "SSE" and '"n": 3' in rendered["text"]
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 10_000
    if os.environ.get("SSE_RESUME_SCREENSHOTS"):  # a deliberate step: the tests never touch tracked files
        target = Path(os.environ["SSE_RESUME_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target / shot.name)


def _finished_flow(web_port: int, path: str, timeout: float = 20) -> str:
    """The id of the flow of ``path`` once mitmweb lists it with its response body (the addon's transcript, set
    when the stream ends)."""
    deadline = time.monotonic() + timeout
    while True:
        flows = httpx.get(f"http://127.0.0.1:{web_port}/flows?token=sse-test").json()
        done = [
            f["id"]
            for f in flows
            if f["request"]["path"].startswith(path) and (f.get("response") or {}).get("contentLength")
        ]
        if done:
            return str(done[0])
        if time.monotonic() > deadline:
            raise TimeoutError(f"mitmweb lists no finished flow of {path}")
        time.sleep(0.05)  # (polling a condition, with a deadline)

"""Other real clients through the proxy: HTTP/2 (curl over TLS, ALPN h2), a headless Chromium EventSource, and
the recipes as a reader would run them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import ROOT, Mitmdump, curl, read_events

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream_port: int) -> Iterator[Mitmdump]:
    tmp = tmp_path_factory.mktemp("proxy")
    with Mitmdump(tmp, upstream_port, [f"confdir={tmp / 'conf'}"], metrics=True) as p:
        yield p


def https(proxy: Mitmdump) -> str:
    return f"https://127.0.0.1:{proxy.port}"


def test_http2_client_resumes_like_http1(proxy: Mitmdump) -> None:
    url = f"{https(proxy)}/sse/h2"
    out, first = curl(url, "-k", "--http2", "-i", stop_after=3)
    assert out.startswith("HTTP/2 200"), out
    assert first[:3] == ["1", "2", "3"]
    out, ids = curl(url, "-k", "--http2", "-i", "-H", "Last-Event-Id: 3", stop_after=6)
    assert out.startswith("HTTP/2 200"), out
    assert [int(i) for i in ids] == list(range(4, 4 + len(ids))) and len(ids) >= 3, out


def test_http2_client_gets_a_replay_response(proxy: Mitmdump) -> None:
    url = f"{https(proxy)}/sse/h2-hit?interval=0.01&hang_after=6"
    seen_all = proxy.recorded_more(6)
    curl(url, "-k", "--http2", stop_after=2)
    # curl hung up after 2 events; the proxy may have relayed a few more before it noticed. Stay connected
    # without reading (as a dropped network would) until it has recorded all six: a second request reads the
    # same events again, so it continues the first one's stream and records the ones the first did not.
    read_events(f"{proxy.url}/sse/h2-hit?interval=0.01&hang_after=6", 1, until=seen_all)
    out, ids = curl(url, "-k", "--http2", "-i", "-H", "Accept: text/event-stream", "-H", "Last-Event-Id: 2")
    assert out.startswith("HTTP/2 200") and "sse-resume: hit" in out, out
    assert ids[:4] == ["3", "4", "5", "6"], out


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory, upstream_port: int) -> Iterator[Mitmdump]:
    """A proxy in keep mode."""
    tmp = tmp_path_factory.mktemp("kept")
    with Mitmdump(tmp, upstream_port, [f"confdir={tmp / 'conf'}", "sse_keep_upstream=true"]) as p:
        yield p


def test_http2_client_in_keep_mode(tmp_path: Path, upstream_port: int) -> None:
    # A proxy of its own: the only stream it records is this test's, so its count of recorded events says which.
    options = [f"confdir={tmp_path / 'conf'}", "sse_keep_upstream=true"]
    with Mitmdump(tmp_path, upstream_port, options, metrics=True) as kept:
        url = f"{https(kept)}/sse/h2-kept?interval=0.02"
        out, first = curl(url, "-k", "--http2", "-i", "-H", "Accept: text/event-stream", stop_after=3)
        assert out.startswith("HTTP/2 200") and "sse-resume: kept" in out, out
        assert first[:3] == ["1", "2", "3"]
        # The proxy reads on while the client is away. Come back once it has recorded event 4: before that,
        # "up-to-date; kept" is the right answer, and not the one this test is about.
        kept.wait_metric("sse_resume_events_recorded_total", 4)
        out, ids = curl(url, "-k", "--http2", "-i", "-H", "Last-Event-Id: 3", stop_after=20)
    assert out.startswith("HTTP/2 200") and "sse-resume: hit; kept" in out, out
    assert ids == [str(n) for n in range(4, 24)], out  # the replay, then live events, in one response


def browser_events(page_url: str, count: int) -> tuple[list[str], str]:
    """Open the EventSource page in headless Chromium; return the ids it saw (once ``count`` are in) and its log."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(page_url)
            page.wait_for_function(f"window.sseSeen.length >= {count}", timeout=30_000)
            seen: list[str] = page.evaluate("window.sseSeen")
            text: str = page.inner_text("#log")
        finally:
            browser.close()
    return seen, text


def test_browser_eventsource_gets_every_event_once_in_order(proxy: Mitmdump, upstream_port: int) -> None:
    seen, text = browser_events(f"{proxy.url}/page?drop_after=3&retry=200&interval=0.05", 15)
    ids = [int(i) for i in seen]
    assert ids[: len(ids)] == list(range(1, len(ids) + 1)), text  # every event once, in order
    assert text.count("(reconnecting)") >= 4  # the upstream really dropped the connection, repeatedly
    with httpx.Client() as client:
        requests = client.get(f"http://127.0.0.1:{upstream_port}/requests").json()
    resumed = [r.get("last-event-id") for r in requests if r.get("last-event-id")]
    assert {"3", "6", "9", "12"} <= set(resumed)  # and the browser came back with Last-Event-ID each time


def test_browser_in_keep_mode_never_sees_the_upstream_drops(kept: Mitmdump, upstream_port: int) -> None:
    seen, text = browser_events(f"{kept.url}/page?drop_after=3&retry=200&interval=0.05&x=kept", 15)
    ids = [int(i) for i in seen]
    assert ids == list(range(1, len(ids) + 1)), text  # every event once, in order
    assert "(reconnecting)" not in text  # the proxy reconnected upstream; the browser's stream never broke
    with httpx.Client() as client:
        requests = client.get(f"http://127.0.0.1:{upstream_port}/requests").json()
    # The proxy's own reconnects, with the browser's headers (its Referer names this page) and the upstream's ids.
    resumed = {r.get("last-event-id") for r in requests if "x=kept" in r.get("referer", "")}
    assert {"3", "6", "9", "12"} <= resumed, resumed


def test_curl_walkthrough_recipe(proxy: Mitmdump) -> None:
    out = subprocess.run(
        ["bash", ROOT / "recipes" / "curl_walkthrough.sh", proxy.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    steps = out.split("\n### ")
    assert len(steps) == 5, out
    first, second, third, fourth = steps[1:]
    assert [line for line in first.splitlines() if line.startswith("id: ")] == ["id: 1", "id: 2", "id: 3"]
    second_ids = [int(line[4:]) for line in second.splitlines() if line.startswith("id: ")]
    assert second_ids[:3] == [4, 5, 6] and second_ids == list(range(4, 4 + len(second_ids)))
    assert "sse-resume: miss" in third.lower() and ": sse-resume: Last-Event-ID unknown" in third
    for last, line in zip((2, 5, 8), fourth.strip().splitlines()[1:], strict=True):
        got = [int(n) for n in line.split(": ", 1)[1].split()]
        assert got == list(range(last + 1, last + 1 + len(got))) and got, line


def test_eventsource_page_recipe_is_the_one_served(proxy: Mitmdump) -> None:
    with httpx.Client() as client:
        page = client.get(f"{proxy.url}/page").text
    assert page == (ROOT / "recipes" / "eventsource.html").read_text()
    assert 'new EventSource("/sse" + location.search)' in page

"""Keep mode through a real mitmdump: the proxy reads the upstream itself, through client absences and upstream
failures. Real upstream processes (the demo upstream, over HTTP and HTTPS), real clients on raw sockets and httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import ClientDecoder, Mitmdump, RawSSE, curl, free_port, numbers, scrape, start_upstream, wait_for

SSE = {"accept": "text/event-stream"}
RECORDED = "sse_resume_events_recorded_total"


def keep_proxy(tmp: Path, upstream: int, *options: str, extra: tuple[str, ...] = ()) -> Mitmdump:
    """A proxy in keep mode, with its metrics. Its kept streams are read on for 30 s after their clients leave, so
    a test that waits for a count of recorded events starts a proxy of its own: then the count is its stream's."""
    return Mitmdump(tmp, upstream, ["sse_keep_upstream=true", *options], extra=extra, metrics=True)


async def recorded(proxy: Mitmdump, at_least: int) -> None:
    """Wait until ``proxy`` has recorded ``at_least`` events (the client is away meanwhile: nothing reads)."""
    await asyncio.to_thread(proxy.wait_metric, RECORDED, at_least)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream_port: int) -> Iterator[Mitmdump]:
    with keep_proxy(tmp_path_factory.mktemp("keep"), upstream_port, "sse_assign_ids=true") as p:
        yield p


def requests_to(upstream_port: int, path: str) -> list[dict[str, str]]:
    """Headers of the requests the upstream got for ``path`` (every /sse... request is logged by it)."""
    seen: list[dict[str, str]] = httpx.get(f"http://127.0.0.1:{upstream_port}/requests").json()
    return [h for h in seen if h.get("x-test") == path]


async def read(port: int, path: str, count: int, headers: dict[str, str] | None = None) -> RawSSE:
    """Open ``path``, read ``count`` events, and return the open stream (the caller aborts or reads on)."""
    sse = RawSSE()
    await sse.open(port, path, {**SSE, **(headers or {})})
    await asyncio.wait_for(sse.read_until(lambda s: len(s.events) >= count), 20)
    return sse


def read_and_hang_up(port: int, path: str, count: int, headers: dict[str, str] | None = None) -> RawSSE:
    """Read ``count`` events of one response, then hang up."""

    async def scenario() -> RawSSE:
        sse = await read(port, path, count, headers)
        sse.abort()
        return sse

    return asyncio.run(scenario())


def test_client_away_gets_every_event_in_one_response(tmp_path: Path, upstream_port: int) -> None:
    # resume=0: the upstream cannot resume at all; only the proxy, which read on, can fill the gap.
    path = "/sse/away?interval=0.05&resume=0"

    async def scenario(proxy: Mitmdump) -> tuple[RawSSE, RawSSE]:
        first = await read(proxy.port, path, 5, {"x-test": "away"})
        first.abort()
        await recorded(proxy, 25)  # 20 events go by while the client is away
        second = await read(proxy.port, path, 40, {"x-test": "away", "last-event-id": first.events[-1][0] or ""})
        second.abort()
        return first, second

    with keep_proxy(tmp_path, upstream_port, "sse_assign_ids=true") as proxy:
        first, second = asyncio.run(scenario(proxy))
    assert numbers(first.events) == [1, 2, 3, 4, 5]
    assert second.headers["sse-resume"] == "hit; kept"
    assert numbers(second.events) == list(range(6, 46)), numbers(second.events)  # replay, then live: no gap
    assert len(requests_to(upstream_port, "away")) == 1  # one upstream request, read on by the proxy


def test_silent_upstream_replay_latency(tmp_path: Path, upstream_port: int) -> None:
    path = "/sse/quiet?interval=0.01&hang_after=8"  # eight events, then silence for an hour

    async def scenario(proxy: Mitmdump) -> list[float]:
        first = await read(proxy.port, path, 3, {"x-test": "quiet"})
        first.abort()
        await recorded(proxy, 8)  # all the upstream will ever send
        latencies = []
        for _ in range(5):
            start = time.monotonic()
            again = await read(proxy.port, path, 1, {"x-test": "quiet", "last-event-id": "3"})
            latencies.append(time.monotonic() - start)
            await asyncio.wait_for(again.read_until(lambda s: len(s.events) >= 5), 5)
            assert numbers(again.events) == [4, 5, 6, 7, 8]
            assert again.headers["sse-resume"] == "hit; kept"
            again.abort()
        return sorted(latencies)

    with keep_proxy(tmp_path, upstream_port, "sse_assign_ids=true") as proxy:
        latencies = asyncio.run(scenario(proxy))
    print(
        f"\nkeep mode, upstream silent: first replayed event after {latencies[2] * 1000:.1f} ms (median of 5), "
        f"max {latencies[-1] * 1000:.1f} ms"
    )
    # The upstream sent nothing after 8 and was asked once: only the proxy can have answered (the latency above is
    # a figure, not a bound: the machine's load decides it).
    assert len(requests_to(upstream_port, "quiet")) == 1


def test_upstream_killed_and_restarted_client_stream_goes_on(tmp_path: Path) -> None:
    port = free_port()
    upstream = start_upstream(tmp_path, port, 0.05)
    with keep_proxy(tmp_path, port) as proxy:

        async def scenario() -> RawSSE:
            nonlocal upstream
            sse = await read(proxy.port, "/sse/restart?retry=200", 10)
            upstream.stop()  # every open stream is cut
            # The outage's length, a part of the scenario (the proxy's tries meet a closed port meanwhile), not a
            # wait for anything: the test holds whatever its length.
            await asyncio.sleep(0.5)
            upstream = start_upstream(tmp_path, port, 0.05)
            await asyncio.wait_for(sse.read_until(lambda s: len(s.events) >= 40), 20)
            sse.abort()
            return sse

        try:
            sse = asyncio.run(scenario())
        finally:
            upstream.stop()
        metrics = scrape(proxy.metrics)
    assert numbers(sse.events) == list(range(1, 41))  # one response, no gap, no repeat
    assert not sse.ended
    assert metrics["sse_resume_upstream_reconnects_total"] >= 1


def test_upstream_gone_for_good_ends_the_response_cleanly(tmp_path: Path) -> None:
    port = free_port()
    upstream = start_upstream(tmp_path, port, 0.05)
    with keep_proxy(tmp_path, port, "sse_keep_max_tries=3") as proxy:

        async def scenario() -> tuple[RawSSE, float]:
            sse = await read(proxy.port, "/sse/gone?retry=100", 3)
            upstream.stop()
            start = time.monotonic()
            await asyncio.wait_for(sse.read_all(), 20)  # 0.1 + 0.2 + 0.4 s of tries, then the end
            return sse, time.monotonic() - start

        sse, took = asyncio.run(scenario())
        metrics = scrape(proxy.metrics)
        log = proxy.output
    assert sse.ended  # the chunked terminator: a clean end, so the client reconnects by itself
    assert numbers(sse.events)[:3] == [1, 2, 3]
    assert metrics["sse_resume_upstream_given_up_total"] == 1
    assert "gave up after 3 tries" in log
    print(f"\nupstream gone: response ended {took:.2f} s later")


def test_assigned_ids_resume_and_never_reach_upstream(tmp_path: Path, upstream_port: int) -> None:
    # No ids from the upstream, and a connection it drops every 7 events.
    path = "/sse/noids?interval=0.05&ids=0&drop_after=7&retry=100"

    async def scenario(proxy: Mitmdump) -> tuple[RawSSE, RawSSE]:
        first = await read(proxy.port, path, 10, {"x-test": "noids"})
        first.abort()
        await recorded(proxy, 12)  # a couple more while the client is away
        last = first.events[-1][0] or ""
        second = await read(proxy.port, path, 10, {"x-test": "noids", "last-event-id": last})
        second.abort()
        return first, second

    with keep_proxy(tmp_path, upstream_port, "sse_assign_ids=true") as proxy:
        first, second = asyncio.run(scenario(proxy))
    ids = [i for i, _ in first.events + second.events]
    assert all(i and i.startswith("sse-resume.") for i in ids), ids
    assert len(set(ids)) == len(ids)
    # Without ids the upstream starts again from 1 on each connection: the proxy cannot know those are repeats,
    # but every event it read reaches the client once, in the order read, with a unique id.
    assert second.headers["sse-resume"] == "hit; kept"
    sent = [h.get("last-event-id", "") for h in requests_to(upstream_port, "noids")]
    assert len(sent) >= 2 and not any(v.startswith("sse-resume.") for v in sent), sent


def test_reconnect_with_upstream_ids_dedupes_resent_events(proxy: Mitmdump, upstream_port: int) -> None:
    # The upstream drops every 6 events and resumes after the Last-Event-ID the proxy sends (its own ids).
    sse = read_and_hang_up(proxy.port, "/sse/drops?interval=0.02&drop_after=6&retry=50", 30, {"x-test": "drops"})
    assert numbers(sse.events) == list(range(1, 31))
    sent = [h.get("last-event-id", "") for h in requests_to(upstream_port, "drops")]
    assert sent[:3] == ["", "6", "12"], sent


def test_grace_ends_a_kept_stream_nobody_came_back_for(tmp_path: Path, upstream_port: int) -> None:
    # A grace long enough that a busy machine still scrapes within it: "during" is a snapshot inside the grace.
    with keep_proxy(tmp_path, upstream_port, "sse_keep_grace=5") as proxy:
        read_and_hang_up(proxy.port, "/sse/grace?interval=0.05", 2)
        proxy.wait_metric(RECORDED, 5)  # read on after the client left...
        during = scrape(proxy.metrics)
        proxy.wait_metric("sse_resume_keep_grace_expired_total", 1)  # ...until the grace ran out
        after = scrape(proxy.metrics)
    assert during["sse_resume_kept_streams"] == 1 and during["sse_resume_keep_grace_expired_total"] == 0
    assert after["sse_resume_kept_streams"] == 0
    assert after["sse_resume_keep_grace_expired_total"] == 1


def test_kept_stream_stops_at_its_bounds_while_the_client_is_away(tmp_path: Path, upstream_port: int) -> None:
    with keep_proxy(tmp_path, upstream_port, "sse_keep_max_bytes=4096") as proxy:

        async def scenario() -> tuple[RawSSE, float, dict[str, float]]:
            sse = await read(proxy.port, "/sse/bounds?interval=0.005&pad=200", 2)
            sse.abort()
            # Events of ~230 bytes go by until the kept stream reaches its 4 KiB bound and stops.
            await asyncio.to_thread(proxy.wait_metric, "sse_resume_keep_buffer_full_total", 1)
            # Nothing reads the upstream now: what the history holds is what the stream read while away.
            held = (await asyncio.to_thread(scrape, proxy.metrics))["sse_resume_history_bytes"]
            back = await read(proxy.port, "/sse/bounds?interval=0.005&pad=200", 30, {"last-event-id": "2"})
            # Counted while the client is still there: once it leaves, the new kept stream meets its bound too.
            metrics = await asyncio.to_thread(scrape, proxy.metrics)
            back.abort()
            return back, held, metrics

        back, held, metrics = asyncio.run(scenario())
    assert metrics["sse_resume_keep_buffer_full_total"] == 1
    # What was read before the bound is replayed, then a new upstream request resumes after it: no gap.
    assert numbers(back.events) == list(range(3, 33))
    # The events the client read, those that went by before the keeper saw it gone, and 4 KiB read while it was
    # away, with the history's bookkeeping (about 15 KiB in all on a quiet machine): bounded, not growing with time.
    assert held < 64 * 1024, held


def test_flow_view_shows_the_real_upstream(tmp_path: Path, upstream_port: int) -> None:
    from mitmproxy import http, io

    flows_file = tmp_path / "flows.mitm"
    with keep_proxy(tmp_path, upstream_port, extra=("-w", str(flows_file))) as proxy:
        read_and_hang_up(proxy.port, "/sse/view?interval=0.02", 5)
        # mitmdump prints a flow once it has ended (here: the client hung up), when it has also been saved.
        wait_for(lambda: f"GET http://127.0.0.1:{upstream_port}/sse/view" in proxy.output, 20, "the flow's end")
    with flows_file.open("rb") as f:
        flows = [flow for flow in io.FlowReader(f).stream() if isinstance(flow, http.HTTPFlow)]
    (flow,) = [flow for flow in flows if flow.request.path.startswith("/sse/view")]
    assert (flow.request.host, flow.request.port, flow.request.scheme) == ("127.0.0.1", upstream_port, "http")
    assert "x-sse-resume-keep" not in flow.request.headers
    assert flow.response is not None and flow.response.status_code == 200
    assert flow.response.headers["content-type"] == "text/event-stream"
    assert flow.response.headers["sse-resume"] == "kept"
    assert b'data: {"n": 1}' in (flow.response.raw_content or b"")
    assert "kept" in flow.comment
    assert flow.metadata["sse_resume"]["kept"] is True


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sse-resume test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "upstream.pem", tmp / "upstream.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@contextlib.contextmanager
def tls_upstream(tmp: Path) -> Iterator[tuple[int, Path]]:
    cert, key = _self_signed(tmp)
    port = free_port()
    with start_upstream(tmp, port, 0.05, ["--tls-cert", str(cert), "--tls-key", str(key)]):
        yield port, cert


@pytest.mark.parametrize("trust", ["ssl_insecure=true", "ca", "none"])
def test_upstream_tls_options_are_honoured(tmp_path: Path, trust: str) -> None:
    with tls_upstream(tmp_path) as (port, cert):
        options = {"ssl_insecure=true": ["ssl_insecure=true"], "ca": [f"ssl_verify_upstream_trusted_ca={cert}"]}
        keep = ["sse_keep_upstream=true", *options.get(trust, [])]
        with Mitmdump(tmp_path, port, keep, upstream_scheme="https") as proxy:

            async def scenario() -> RawSSE:
                sse = RawSSE()
                await sse.open(proxy.port, "/sse/tls", SSE)
                if sse.status == 200:
                    await asyncio.wait_for(sse.read_until(lambda s: len(s.events) >= 3), 10)
                else:
                    await asyncio.wait_for(sse.read_all(), 10)
                sse.abort()
                return sse

            sse = asyncio.run(scenario())
            log = proxy.output
    if trust == "none":
        assert sse.status == 502  # the self-signed certificate is not trusted: the keeper refuses it too
        assert "upstream" in log and "unreachable" in log
    else:
        assert sse.status == 200 and sse.headers["sse-resume"] == "kept"
        assert numbers(sse.events) == [1, 2, 3]


@pytest.fixture(scope="module")
def server_without_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An MCP server (the SDK's) without an event store, one for the module: each test's client has sessions of
    its own."""
    from test_mcp_e2e import mcp_server

    with mcp_server(tmp_path_factory.mktemp("mcp-server"), event_store=False) as port:
        yield port


def test_mcp_server_without_event_store_cut_mid_call(tmp_path: Path, server_without_store: int) -> None:
    """The SDK server keeps no events and sends no ids: with keep mode and proxy-made ids the cut call completes."""
    from test_mcp_e2e import assert_every_notification_once, cut_call

    with keep_proxy(tmp_path, server_without_store, "sse_assign_ids=true") as proxy:
        got = cut_call(proxy.port)
        log = proxy.output
    assert_every_notification_once(got)
    assert "keep mode" in log


def test_request_headers_reach_upstream_unchanged_and_gzip_is_decoded(proxy: Mitmdump, upstream_port: int) -> None:
    headers = {
        "x-test": "headers",
        "authorization": "Bearer abc",
        "cookie": "a=1; b=2",
        "x-custom": "Some  Value",
        "accept-encoding": "gzip",
    }

    sse = read_and_hang_up(proxy.port, "/sse/headers?interval=0.02&gzip=1", 3, headers)
    assert numbers(sse.events) == [1, 2, 3]  # read through the upstream's gzip
    assert "content-encoding" not in sse.headers  # the keeper sends the stream decoded
    (seen,) = requests_to(upstream_port, "headers")
    for name, value in {**SSE, **headers}.items():
        assert seen[name] == value, name
    assert "x-sse-resume-keep" not in seen and "last-event-id" not in seen


def test_keeper_refuses_a_request_without_a_valid_ticket(proxy: Mitmdump) -> None:
    import re

    port = int(re.findall(r"keeper on 127\.0\.0\.1:(\d+)", proxy.output)[0])
    direct = httpx.get(f"http://127.0.0.1:{port}/sse", headers={"x-sse-resume-keep": "guess"})
    assert direct.status_code == 403
    bare = httpx.get(f"http://127.0.0.1:{port}/sse")
    assert bare.status_code == 403


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_regular_proxy_mode(tmp_path: Path, scheme: str) -> None:
    """A forward proxy (curl -x), plain HTTP and HTTPS through CONNECT: kept streams resume the same way."""
    with tls_upstream(tmp_path) if scheme == "https" else _plain_upstream(tmp_path) as (port, _):
        options = ["sse_keep_upstream=true", "ssl_insecure=true", f"confdir={tmp_path}"]
        with Mitmdump(tmp_path, port, options, upstream_scheme="regular", metrics=True) as proxy:
            url = f"{scheme}://127.0.0.1:{port}/sse/regular?interval=0.05"
            args = ["-x", proxy.url, "-k", "-H", "Accept: text/event-stream"]
            _, first = curl(url, *args, stop_after=3)
            proxy.wait_metric(RECORDED, 6)  # the kept stream reads on while the client is away
            out, again = curl(url, *args, "-i", "-H", f"Last-Event-ID: {first[2]}", stop_after=12)
    assert first[:3] == ["1", "2", "3"]
    assert "sse-resume: hit; kept" in out, out
    assert again == [str(n) for n in range(4, 16)], out


@contextlib.contextmanager
def _plain_upstream(tmp: Path) -> Iterator[tuple[int, None]]:
    port = free_port()
    with start_upstream(tmp, port, 0.05):
        yield port, None


def test_upstream_breaking_http_framing_is_reconnected(proxy: Mitmdump, upstream_port: int) -> None:
    """An upstream whose HTTP framing goes bad every 5 events (it then hangs): the proxy drops that connection and
    resumes; the client's one response carries every event once."""
    sse = read_and_hang_up(proxy.port, "/sse/garbage?interval=0.02&garbage_after=5&retry=50", 20)
    assert numbers(sse.events) == list(range(1, 21))
    assert not sse.ended
    assert "upstream broke" in proxy.output


def test_streams_beyond_the_cap_are_served_the_usual_way(tmp_path: Path, upstream_port: int) -> None:
    with keep_proxy(tmp_path, upstream_port, "sse_keep_max_streams=2") as proxy:

        async def scenario() -> list[RawSSE]:
            streams = [await read(proxy.port, f"/sse/cap{i}?interval=0.05", 2) for i in range(3)]
            for sse in streams:
                sse.abort()
            return streams

        streams = asyncio.run(scenario())
    assert [s.headers.get("sse-resume") for s in streams] == ["kept", "kept", None]
    assert all(numbers(s.events) == [1, 2] for s in streams)


def test_mcp_tool_result_that_arrives_while_the_client_is_away(tmp_path: Path, server_without_store: int) -> None:
    """MCP by hand (httpx): a tool call's POST stream is read to 2 notifications and cut; the call finishes while
    the client is away; the client comes back with the proxy-made id of the last event it had and gets the rest
    of the notifications and the result, then the end of the response."""
    with (
        keep_proxy(tmp_path, server_without_store, "sse_assign_ids=true") as proxy,
        httpx.Client(base_url=proxy.url, timeout=10) as client,
    ):
        accept = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}
        init = client.post(
            "/mcp",
            headers=accept,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            },
        )
        headers = {**accept, "mcp-session-id": init.headers["mcp-session-id"]}
        client.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        n = 4
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "count", "arguments": {"n": n, "delay": 0.2}, "_meta": {"progressToken": "p"}},
        }
        first: list[tuple[str | None, dict[str, Any]]] = []
        with client.stream("POST", "/mcp", headers=headers, json=call) as response:
            assert response.headers["sse-resume"] == "kept"
            decoder = ClientDecoder()
            for chunk in response.iter_bytes():
                first += [(e.id, json.loads(e.data)) for e in decoder.feed(chunk) if e.data]
                if len(first) >= 2:
                    break  # the client goes: the tool is still running
        # The rest of the call happens while nobody reads: the proxy records all the server sends for it (the
        # initialize result, then the call's n progress notifications and n log messages, and its result).
        proxy.wait_metric(RECORDED, 1 + 2 * n + 1)
        back = client.get(
            "/mcp", headers={**headers, "accept": "text/event-stream", "last-event-id": first[-1][0] or ""}
        )
        decoder = ClientDecoder()
        rest = [(e.id, json.loads(e.data)) for e in decoder.feed(back.content) + decoder.close() if e.data]
    assert all(event_id and event_id.startswith("sse-resume.") for event_id, _ in first + rest)
    messages = [m for _, m in first + rest]
    progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
    assert progress == [1, 2, 3, 4], messages  # every notification once, in order
    assert messages[-1]["id"] == 2 and messages[-1]["result"]["content"][0]["text"] == "counted to 4"
    assert back.headers["sse-resume"] == "hit; kept"

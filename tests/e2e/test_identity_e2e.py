"""Credentials in any header keep users apart, through a real mitmdump, in plain mode, keep mode and with Redis.

The upstream is the test's own: it authenticates each request by an API key in whichever header carries it, and
numbers each user's events from 1 (so user B's ``Last-Event-ID: 1`` names a position in user A's history too).
Clients read with httpx-sse: never with the addon's own parser.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import httpx_sse
import pytest
import redis as redis_client

from harness import Mitmdump, RedisServer, wait_for

SECRETS = {"alice-7f3a91": "alice", "mallory-c04d2e": "mallory"}
INTERVAL = 0.02  # seconds between two events of one upstream response
MAX_EVENTS = 1500  # events one upstream response sends at most (30 s), so no loop runs unbounded


class KeyedUpstream(BaseHTTPRequestHandler):
    """GET /<anything>: the caller's own event stream, numbered from 1, resumed after a numeric Last-Event-ID.

    The caller is whoever's key appears in a header value (``X-API-Key: k``, ``Authorization: Bearer k``,
    ``Cookie: sid=k`` ...); no key known, 401.
    """

    protocol_version = "HTTP/1.0"  # the body ends when the connection does, as many SSE servers do
    stopping = threading.Event()

    def do_GET(self) -> None:
        values = [value for name, value in self.headers.items() if name.lower() != "last-event-id"]
        users = {user for key, user in SECRETS.items() if any(key in value for value in values)}
        if len(users) != 1:
            self.send_response(401)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        (user,) = users
        last = self.headers.get("last-event-id", "")
        first = int(last) + 1 if last.isdigit() else 1
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        try:
            for n in range(first, first + MAX_EVENTS):
                if self.stopping.wait(INTERVAL):
                    return
                event = {"user": user, "n": n}
                self.wfile.write(b"id: %d\ndata: %s\n\n" % (n, json.dumps(event).encode()))
                self.wfile.flush()
        except OSError:
            return  # the reader hung up

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def keyed_upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeyedUpstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        KeyedUpstream.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, keyed_upstream: int) -> Iterator[Mitmdump]:
    with Mitmdump(tmp_path_factory.mktemp("plain"), keyed_upstream) as p:
        yield p


@pytest.fixture(scope="module", params=["plain", "keep", "redis"])
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, keyed_upstream: int
) -> Iterator[Mitmdump]:
    """The proxy in each mode: plain, keep mode, and with the history in a real redis-server."""
    mode: str = request.param
    if mode == "plain":
        yield request.getfixturevalue("plain")
        return
    if mode == "keep":
        options = ["sse_keep_upstream=true", "sse_keep_grace=5"]
    else:
        server: RedisServer = request.getfixturevalue("redis")
        options = [f"sse_store={server.url}", "sse_store_secret=identity test secret"]
    with Mitmdump(tmp_path_factory.mktemp(mode), keyed_upstream, options) as p:
        yield p


def read_sse(url: str, headers: dict[str, str], count: int) -> tuple[str, list[dict[str, object]]]:
    """Read up to ``count`` events (their JSON data) from one response; return its sse-resume header with them."""
    got: list[dict[str, object]] = []
    with (
        httpx.Client(timeout=httpx.Timeout(10)) as client,
        httpx_sse.connect_sse(client, "GET", url, headers={"accept": "text/event-stream", **headers}) as source,
    ):
        outcome = source.response.headers.get("sse-resume", "")
        if source.response.status_code != 200:
            return f"status {source.response.status_code}", got
        for event in source.iter_sse():
            if event.data:
                got.append(json.loads(event.data))
                if len(got) >= count:
                    break
    return outcome, got


def wait_for_hit(url: str, headers: dict[str, str], last_event_id: str) -> list[dict[str, object]]:
    """Reconnect as the victim until the proxy answers from history (the condition), and return what it served."""
    deadline = time.monotonic() + 20
    while True:
        outcome, got = read_sse(url, {**headers, "last-event-id": last_event_id}, 2)
        if outcome.startswith("hit") or time.monotonic() > deadline:
            assert outcome.startswith("hit"), outcome
            return got


def attack(
    proxy: Mitmdump,
    path: str,
    header: str,
    value: str,
    session: dict[str, str],
    later: Mitmdump | None = None,
    stored: Callable[[], None] | None = None,
) -> None:
    """Alice reads 1-3 through ``proxy``; then she, and mallory with her own key, resume after 1 through ``later``
    (another proxy on the same store, once ``stored`` returns), or the same proxy."""
    kept = "sse_keep_upstream=true" in proxy.args
    alice = {header: value.format(key="alice-7f3a91"), **session}
    mallory = {header: value.format(key="mallory-c04d2e"), **session}
    outcome, got = read_sse(proxy.url + path, alice, 3)
    assert (outcome, got) == ("kept" if kept else "", [{"user": "alice", "n": n} for n in (1, 2, 3)])
    if stored is not None:
        stored()
    url = (later or proxy).url + path
    # The history holds alice's events after her id 1: her own reconnect is served them...
    assert wait_for_hit(url, alice, "1") == [{"user": "alice", "n": 2}, {"user": "alice", "n": 3}]
    # ...and mallory, who guesses the id with her own key, gets nothing of alice's: her request is not in
    # alice's history, so it goes upstream with mallory's key, and she reads her own events after her id 1.
    outcome, got = read_sse(url, {**mallory, "last-event-id": "1"}, 5)
    assert (outcome.split(";")[0], got) == ("miss", [{"user": "mallory", "n": n} for n in (2, 3, 4, 5, 6)])
    assert kept or "sse-resume: session" in (later or proxy).output  # the logs name sessions by digests...
    for p in {proxy, later or proxy}:
        assert "alice-7f3a91" not in p.output and "mallory-c04d2e" not in p.output  # ...never by credentials


# Real servers' credential headers, and how their values look; the upstream finds the key in any of them.
HEADERS = [
    ("X-API-Key", "{key}"),
    ("Api-Key", "{key}"),
    ("X-Auth-Token", "{key}"),
    ("X-Goog-Api-Key", "{key}"),
    ("apikey", "{key}"),
    ("PRIVATE-TOKEN", "{key}"),
    ("Ocp-Apim-Subscription-Key", "{key}"),
    ("Authorization", "Bearer {key}"),
    ("Proxy-Authorization", "Basic {key}"),
    ("Cookie", "theme=dark; sid={key}"),
    # What authenticating gateways put in for the user they let through
    ("X-MS-CLIENT-PRINCIPAL-NAME", "{key}"),
    ("X-Amzn-Oidc-Identity", "{key}"),
    ("X-Consumer-Username", "{key}"),
    ("X-Forwarded-Client-Cert", "Hash={key}"),
    ("X-IBM-Client-Id", "{key}"),
]


@pytest.mark.parametrize("session", [{}, {"mcp-session-id": "shared-session"}], ids=["no-session", "same-session"])
def test_another_key_never_gets_the_victims_events(proxy: Mitmdump, session: dict[str, str]) -> None:
    """The finding as reported: X-API-Key, a guessed Last-Event-ID, with and without a shared session id."""
    attack(proxy, f"/feed/x-api-key-{len(session)}", "X-API-Key", "{key}", session)


@pytest.mark.parametrize(("header", "value"), HEADERS, ids=[h for h, _ in HEADERS])
def test_every_credential_header_separates_users(plain: Mitmdump, header: str, value: str) -> None:
    """In plain mode, each header real servers authenticate by."""
    attack(plain, f"/feed/header-{header.lower()}", header, value, {})


def test_a_header_named_by_the_option_separates_users(tmp_path: Path, keyed_upstream: int) -> None:
    """``sse_identity_headers`` adds a header the built-in patterns do not match."""
    with Mitmdump(tmp_path, keyed_upstream, ["sse_identity_headers=x-shard"]) as p:
        attack(p, "/feed/custom", "X-Shard", "{key}", {})


def test_another_key_on_another_proxy_sharing_the_redis_store(
    tmp_path: Path, keyed_upstream: int, redis: RedisServer
) -> None:
    """Two proxies on one Redis: what alice left through one is in Redis, and through the other only she gets it.

    Redis's keys name no credential or session id (they are keyed digests).
    """
    client = redis_client.Redis(port=redis.port)
    before = set(client.scan_iter("*:ev"))

    def in_redis() -> None:  # alice's three events written behind to Redis by the first proxy
        wait_for(
            lambda: any(client.zcard(k) >= 3 for k in set(client.scan_iter("*:ev")) - before),
            20,
            "alice's events in Redis",
        )

    options = [f"sse_store={redis.url}", "sse_store_secret=identity test secret"]
    with Mitmdump(tmp_path, keyed_upstream, options) as first, Mitmdump(tmp_path, keyed_upstream, options) as second:
        session = {"mcp-session-id": "shared-session"}
        attack(first, "/feed/two-proxies", "X-API-Key", "{key}", session, later=second, stored=in_redis)
    names = b" ".join(client.scan_iter("*"))
    assert b"sse-resume:" in names
    assert b"alice-7f3a91" not in names and b"mallory-c04d2e" not in names and b"shared-session" not in names
    client.close()

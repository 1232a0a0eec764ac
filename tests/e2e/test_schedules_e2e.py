"""Generated schedules against a real mitmdump with the addon and the scripted upstream.

Each example picks an upstream (ids that are unique, stamped by the second, not UTF-8 and read alike, or not
UTF-8 and unique; a response that resumes after Last-Event-ID, starts again from the first event with it, or
starts again at 1; every response numbered from 1 with data of its own; a connection dropped every few events or
not), one to three clients of one session, and for each a schedule (read k events, hang up, maybe losing what was
in flight, reconnect with its last id), then lets every client read to the end. The proxy's history holds 5
events, so most reconnects are past it. Invariant, for every client: each event at most once, in order, none
skipped, all by the end; or the client was told (a miss: the header and the comment) where the upstream's ids
name several events. Derandomized, so CI runs the same schedules every time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import ClientDecoder, Mitmdump, scripted_upstream

TOTAL = 12


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mitmdump]:
    tmp = tmp_path_factory.mktemp("proxy")
    with scripted_upstream(tmp) as port, Mitmdump(tmp, port, ["sse_max_event_history=5"]) as p:
        yield p


@dataclass
class Client:
    """One client of the session: what it got, response by response."""

    reads: list[tuple[int, bool]]
    log: list[str | tuple[int, int]] = field(default_factory=list)
    """The sse-resume header of each response (a str), then the (response, n) of each event it got there."""
    last_event_id: str = ""

    @property
    def done(self) -> bool:
        return any(isinstance(item, tuple) and item[1] == TOTAL for item in self.log[-1:])

    def read_some(self, client: httpx.Client, url: str, count: int, lose_in_flight: bool) -> None:
        """One connection: read ``count`` events (or up to event TOTAL), then hang up (after a pause when what is
        in flight is lost). Gives up after 5 seconds without them (an upstream past its last event is silent)."""
        decoder = ClientDecoder(self.last_event_id)
        headers = {"accept": "text/event-stream"}
        if self.last_event_id:
            headers["last-event-id"] = self.last_event_id
        got = 0
        try:
            with client.stream("GET", url, headers={k.encode(): v.encode() for k, v in headers.items()}) as response:
                self.log.append(response.headers.get("sse-resume", ""))
                for chunk in response.iter_bytes():
                    for event in decoder.feed(chunk):
                        data = json.loads(event.data)
                        self.log.append((data.get("r", 0), data["n"]))
                        self.last_event_id = event.last_event_id  # what follows it in the chunk is lost too
                        got += 1
                        if got >= count or data["n"] == TOTAL:
                            if lose_in_flight:
                                # The client stops reading for a while, a part of the schedule: the proxy relays
                                # more meanwhile and this client never reads it. Whether any arrives does not
                                # matter; the invariant holds either way.
                                time.sleep(0.1)
                            return
        except httpx.TransportError:
            pass  # the upstream dropped, and the proxy with it, or it went silent: reconnect

    def run(self, url: str) -> None:
        with httpx.Client(timeout=5) as client:
            for count, lose in self.reads:
                if self.done:
                    return
                self.read_some(client, url, count, lose)
            deadline = time.monotonic() + 30
            while not self.done and time.monotonic() < deadline:  # then read to the end, reconnecting as needed
                self.read_some(client, url, TOTAL, False)


def assert_invariant(client: Client, may_miss: bool, fresh: bool) -> None:
    """Each event at most once, in order, none skipped, all by the end; after a miss (allowed only when the
    upstream's ids may name several events) the first event may be any the upstream sends."""
    seen: set[tuple[int, int]] = set()
    responses: set[int] = set()
    previous: tuple[int, int] | None = None
    told = False
    for item in client.log:
        if isinstance(item, str):
            if item.startswith("miss"):
                assert may_miss, ("a miss where every id names one event", client.log)
                told = True
                seen.clear()
                responses.clear()
            continue
        assert item not in seen, ("received twice", item, client.log)
        if told:
            told = False
        elif previous is None:
            assert item[1] == 1, ("the first event skipped", item, client.log)
        elif item[0] == previous[0]:
            assert item[1] == previous[1] + 1, ("not the next event", previous, item, client.log)
        else:  # another response's events: only a new upstream response, from its start, never from history
            assert fresh and item[0] not in responses and item[1] == 1, ("crossed", previous, item, client.log)
        seen.add(item)
        responses.add(item[0])
        previous = item
    assert previous is not None and previous[1] == TOTAL, ("not all events by the end", client.log)


UPSTREAMS = [
    # (ids, how a response starts for a Last-Event-ID, fresh, drop_after). One that starts at 1 and drops after k
    # events never gets past k: those do not drop. One that resumes after an id several events carry skips the rest
    # of them (its own doing): not drawn.
    ("unique", "after", False, 0),
    ("unique", "after", False, 3),
    ("unique", "from", False, 5),
    ("unique", "ignore", False, 0),
    ("unique", "ignore", True, 0),
    ("stamp", "from", False, 0),
    ("stamp", "from", False, 4),
    ("stamp", "ignore", False, 0),
    ("bad-utf8", "from", False, 0),
    ("bad-utf8", "ignore", False, 0),
    ("bad-utf8-unique", "after", False, 3),
    ("bad-utf8-unique", "ignore", False, 0),
]


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    upstream=st.sampled_from(UPSTREAMS),
    per_id=st.integers(min_value=2, max_value=4),
    clients=st.lists(
        st.lists(st.tuples(st.integers(min_value=1, max_value=4), st.booleans()), max_size=4), min_size=1, max_size=3
    ),
)
def test_real_proxy_every_client_gets_each_event_once_in_order_or_is_told(
    proxy: Mitmdump, upstream: tuple[str, str, bool, int], per_id: int, clients: list[list[tuple[int, bool]]]
) -> None:
    ids, resume, fresh, drop_after = upstream
    query = (
        f"interval=0.01&count={TOTAL}&ids={ids}&per_id={per_id}&resume={resume}&fresh={int(fresh)}"
        f"&drop_after={drop_after}"
    )
    url = f"{proxy.url}/sse/schedule-{uuid.uuid4().hex[:8]}?{query}"
    readers = [Client(reads) for reads in clients]
    threads = [threading.Thread(target=reader.run, args=(url,)) for reader in readers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    # A miss is the only answer when the client's id names several events: ids that repeat, or, when every
    # response numbers from 1, an id that another response the session read has too.
    may_miss = ids in ("stamp", "bad-utf8") or (fresh and len(readers) + sum(len(r.reads) for r in readers) > 1)
    for reader in readers:
        assert_invariant(reader, may_miss, fresh)

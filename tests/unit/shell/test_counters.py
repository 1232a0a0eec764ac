"""The counters (addon/sse_resume_shell/_counters.py): one table, read by sse.stats and by the Prometheus collector
alike, so that what one shows the other does, under the names the table gives."""

from __future__ import annotations

import asyncio

from mitmproxy.test import taddons
from prometheus_client import CollectorRegistry, generate_latest

from shell_harness import Addon, relay_through, sse_flow
from sse_resume_core import MemoryHistory
from sse_resume_core._store import StoreHealth
from sse_resume_shell._counters import CORE, KEEP, STORE, readings, stats
from sse_resume_shell._metrics import MetricsCollector


class ReportingStore(MemoryHistory):
    """A memory history that reports a remote store's health, as the Redis store does."""

    def __init__(self) -> None:
        super().__init__()
        self.reported = StoreHealth(up=True, writes=7, failures=2, dropped=1, fallbacks=3, queued=4)

    def health(self) -> StoreHealth:  # type: ignore[override]
        return self.reported


def exposition(addon: Addon) -> str:
    """What the Prometheus endpoint would serve now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(addon.shell))
    return generate_latest(registry).decode()


def scrape(addon: Addon) -> dict[str, float]:
    values = {}
    for line in exposition(addon).splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_each_counter_has_one_name_in_each_place() -> None:
    table = [*CORE, *STORE, *KEEP]
    keys = [c.key for c in table]
    metrics = [c.metric for c in table if c.metric is not None]
    assert len(set(keys)) == len(keys) and len(set(metrics)) == len(metrics)
    assert all(c.doc.endswith(".") for c in table)


def test_sse_stats_and_prometheus_read_the_same_values() -> None:
    addon = Addon()
    with taddons.context(addon):
        relay_through(addon, sse_flow(), [b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 6))])
        asyncio.run(addon.request(sse_flow(last_event_id="2")))  # a hit
        counts = stats(addon.shell)
        assert list(counts) == [c.key for c in CORE] + ["store"] and counts["store"] == "memory"
        assert (counts["stored"], counts["hits"], counts["replayed"]) == (5, 1, 3)
        scraped = scrape(addon)
    for counter, value in readings(addon.shell):
        if counter.metric is None or isinstance(value, dict):
            continue
        name = f"sse_resume_{counter.metric}" + ("_total" if counter.kind == "counter" else "")
        assert scraped[name] == value, name
    assert not any(name.startswith("sse_resume_store_") for name in scraped)  # (no health: a memory store)


def test_a_store_that_reports_its_health_adds_its_counters_to_both() -> None:
    addon = Addon()
    addon.shell.store = ReportingStore()
    counts = stats(addon.shell)
    assert list(counts) == [c.key for c in (*CORE, *STORE)]
    assert (counts["store_up"], counts["store_writes"], counts["store_queued"]) == (True, 7, 4)
    scraped = scrape(addon)
    assert scraped["sse_resume_store_up"] == 1 and scraped["sse_resume_store_dropped_writes_total"] == 1
    assert scraped["sse_resume_store_fallbacks_total"] == 3 and "sse_resume_store" not in scraped


def test_metrics_move_after_hit_miss_and_dedupe() -> None:
    addon = Addon()
    with taddons.context(addon):
        before = scrape(addon)
        relay_through(addon, sse_flow(), [b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 6))])
        asyncio.run(addon.request(sse_flow(last_event_id="2")))
        relay_through(addon, sse_flow(last_event_id="nope-an-id"), [b"id: 9\ndata: a-payload\n\n"])
        relay_through(addon, sse_flow(last_event_id="5"), [b"id: 4\ndata: 4\n\nid: 6\ndata: 6\n\n"])
        after = scrape(addon)
        text = exposition(addon)
    assert before["sse_resume_replay_hits_total"] == 0 and after["sse_resume_replay_hits_total"] == 1
    assert after["sse_resume_replay_misses_total"] == 1
    assert after["sse_resume_events_replayed_total"] == 3
    assert after["sse_resume_events_deduplicated_total"] == 1
    assert after["sse_resume_history_events"] == 7 and after["sse_resume_sessions"] == 1
    assert after['sse_resume_evictions_total{reason="count"}'] == 0
    assert "nope-an-id" not in text and "a-payload" not in text  # no ids or payloads in labels

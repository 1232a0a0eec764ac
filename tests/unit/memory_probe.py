"""Memory of the history under load, measured with tracemalloc. Run by test_event_history_memory (at a small
scale) and by benchmarks/bench_history.py (at full scale).

    python tests/unit/memory_probe.py full|ids-only [--sessions 10000] [--max-bytes N] [--summary]

``--sessions`` sessions record 1,000 events each, one session after the other, with the default limits but for
``--max-bytes`` (so the byte cap binds long before the end). tracemalloc traces the last ``--traced`` sessions
(by default a few more than the cap can hold): the history the store holds at the end was all created in that
window (the probe checks this), so the traced memory still allocated at the end is what the history costs, and
any leak of the evictions inside the window shows up in it too. Tracing every record would take ten times as
long and measure nothing more. Prints one line of JSON, or with ``--summary`` one line for people.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from typing import Any

from sse_resume_core import HistoryLimits, MemoryHistory

PAYLOAD = b'data: {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}\n\n'
DEFAULT_MAX_BYTES = HistoryLimits().max_bytes
# Sessions to trace at the default byte cap: the cap holds about 800 (full mode) or 1,450 (ids-only) of them.
TRACED_AT_DEFAULT = {"full": 1100, "ids-only": 1700}


def measure(replay: bool, sessions: int, events: int, traced: int, max_bytes: int) -> dict[str, Any]:
    limits = HistoryLimits(replay=replay, max_bytes=max_bytes)
    h = MemoryHistory(limits, clock=lambda: 1000.0)  # time stands still: this is about space, not expiry
    gc.collect()
    before = 0
    for s in range(sessions):
        if s == sessions - traced:
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
        key = f"session-{s:05d}"
        stream = h.new_stream(key)
        for n in range(events):
            event_id = f"{s}-{n}"
            h.record(key, stream, event_id, PAYLOAD + event_id.encode())  # each event its own bytes
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    snap = h.snapshot()
    oldest_held = min(int(info.key.split("-")[1]) for info in h.sessions())
    return {
        "mode": "full" if replay else "ids-only",
        "events": snap.events,
        "sessions": snap.sessions,
        "traced_bytes": used,
        "accounted_bytes": snap.bytes,
        "max_bytes": limits.max_bytes,
        "evicted": dict(snap.evicted),
        "stored": snap.stored,
        "all_held_were_traced": oldest_held >= sessions - traced,
        "id_bytes": sys.getsizeof(f"{sessions // 2}-{events // 2}"),
        "payload_bytes": sys.getsizeof(PAYLOAD + b"5000-500") + 8,  # the bytes object and its list slot
    }


def summary(r: dict[str, Any]) -> str:
    """One line for people: what was held, and the traced bytes per event, beyond the id and payload too."""
    payload = r["payload_bytes"] if r["mode"] == "full" else 0
    per_event = r["traced_bytes"] / r["events"]
    return (
        f"{r['mode']}: {r['events']:,} events held in {r['sessions']:,} sessions after {r['stored']:,} "
        f"recorded; traced {r['traced_bytes'] / 2**20:.1f} MiB = {per_event:.0f} bytes/event "
        f"({per_event - r['id_bytes'] - payload:.0f} beyond the id and payload objects); "
        f"accounted {r['accounted_bytes'] / 2**20:.1f} MiB of a {r['max_bytes'] / 2**20:.1f} MiB cap; "
        f"evicted {r['evicted']}"
    )


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("mode", choices=["full", "ids-only"])
    args.add_argument("--sessions", type=int, default=10_000)
    args.add_argument("--events", type=int, default=1_000)
    args.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="the history's byte cap")
    args.add_argument("--traced", type=int, default=0, help="sessions traced at the end (default: by mode and cap)")
    args.add_argument("--summary", action="store_true", help="print one line for people instead of JSON")
    opts = args.parse_args()
    traced = opts.traced or -(-TRACED_AT_DEFAULT[opts.mode] * opts.max_bytes // DEFAULT_MAX_BYTES)  # (rounded up)
    result = measure(opts.mode == "full", opts.sessions, opts.events, min(traced, opts.sessions), opts.max_bytes)
    print(summary(result) if opts.summary else json.dumps(result))


if __name__ == "__main__":
    main()

"""Memory of the history under the task's load, measured with tracemalloc. Run by test_event_history_memory.

    python tests/unit/memory_probe.py full|ids-only

10,000 sessions record 1,000 events each, one session after the other, with the default limits (so the byte
cap binds long before the end). tracemalloc traces the last ``--traced`` sessions: the history the store holds
at the end was all created in that window (the probe checks this), so the traced memory still allocated at the
end is what the history costs, and any leak of the evictions inside the window shows up in it too. Tracing all
ten million records would take ten times as long and measure nothing more. Prints one line of JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc

from sse_resume_core import HistoryLimits, MemoryHistory

PAYLOAD = b'data: {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}\n\n'


def measure(replay: bool, sessions: int, events: int, traced: int) -> dict[str, object]:
    limits = HistoryLimits(replay=replay)
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


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("mode", choices=["full", "ids-only"])
    args.add_argument("--sessions", type=int, default=10_000)
    args.add_argument("--events", type=int, default=1_000)
    args.add_argument("--traced", type=int, default=0, help="sessions traced at the end (default: by mode)")
    opts = args.parse_args()
    traced = opts.traced or (1100 if opts.mode == "full" else 1700)
    print(json.dumps(measure(opts.mode == "full", opts.sessions, opts.events, min(traced, opts.sessions))))


if __name__ == "__main__":
    main()

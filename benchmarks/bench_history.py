"""History store: lookup cost as the history grows, memory per event, and whether compressing payloads pays.

1. Find an id and list the 10 events after it, with 100, 10,000 and 1,000,000 events held, for MemoryHistory
   and for a baseline that scans a list the way the MCP SDKs' example event stores do.
2. Bytes per event in ids-only mode beyond the id string itself (tracemalloc).
3. Held payloads compressed or not (sse_compress_events_from): memory and recording CPU per event, MCP results
   of 1-10 KB and small events.
4. Memory per event under load: 10,000 sessions x 1,000 events with the default limits, in full and ids-only
   mode, each in its own process (tests/unit/memory_probe.py; the unit tests run it at a small scale).

    python benchmarks/bench_history.py [--sizes 100,10000,1000000] [--load-sessions 10000]
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from sse_resume_core import HistoryLimits, MemoryHistory

AFTER = 10  # events listed after the id looked up
PROBE = Path(__file__).resolve().parents[1] / "tests" / "unit" / "memory_probe.py"


def payload(n: int) -> bytes:
    data = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": n, "total": 100}})
    return f"id: {n}\ndata: {data}\n\n".encode()


class ListScanStore:
    """The baseline: one list of (event id, stream, message), scanned from the front on every replay."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, bytes]] = []

    def store(self, stream: str, event_id: str, message: bytes) -> None:
        self.events.append((event_id, stream, message))

    def replay_after(self, last_event_id: str) -> list[bytes]:
        for i, (event_id, stream, _) in enumerate(self.events):
            if event_id == last_event_id:
                return [m for _, s, m in self.events[i + 1 :] if s == stream]
        return []


def per_call(fn: Callable[[], object], budget: float = 0.5) -> float:
    """Seconds per call: the best of five batches, each sized to take about budget / 5."""
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if time.perf_counter() - start > budget / 50 or calls > 1_000_000:
            break
        calls *= 4
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def lookups(sizes: list[int]) -> None:
    print(f"find an id and list the {AFTER} events after it")
    print(f"{'events held':>12} {'MemoryHistory':>15} {'list scan':>12} {'scan / ours':>12}")
    ours_at: dict[int, float] = {}
    for n in sizes:
        h = MemoryHistory(HistoryLimits(max_events=n, max_bytes=2**40, ttl=1e9))
        base = ListScanStore()
        stream = h.new_stream("s")
        for i in range(n):
            raw = payload(i)
            h.record("s", stream, str(i), raw)
            base.store(stream, str(i), raw)
        target = str(n - AFTER - 1)
        found = h.lookup("s", target)
        assert found is not None and len(found.after) == AFTER
        assert len(base.replay_after(target)) == AFTER
        ours = per_call(functools.partial(h.lookup, "s", target))
        scan = per_call(functools.partial(base.replay_after, target), budget=2.0 if n > 10_000 else 0.5)
        ours_at[n] = ours
        print(f"{n:>12,} {ours * 1e6:>13.1f}us {scan * 1e6:>10.1f}us {scan / ours:>11.1f}x")
        gc.collect()
    small, large = min(sizes), max(sizes)
    print(
        f"ratio MemoryHistory lookup at {large:,} / at {small:,}: {ours_at[large] / ours_at[small]:.2f}x (goal <= 2x)"
    )


def ids_only_memory(sizes: tuple[int, ...] = (100_000, 150_000, 200_000)) -> None:
    """Bytes per event in ids-only mode beyond the id string: all of them in the history, then with the default
    history of 1,000 and the rest remembered behind it (what an upstream that starts over is checked against).
    At several sizes, as the id dict's share swings with how full its table is (it doubles at two thirds)."""
    for n in sizes:
        ids = [f"{i:08d}" for i in range(n)]  # created before tracing: the id strings are "the id itself"
        id_size = sys.getsizeof(ids[0])
        for label, max_events in (("in the history", n), ("remembered behind it", HistoryLimits().max_events)):
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            h = MemoryHistory(
                HistoryLimits(max_events=max_events, max_remembered=n, max_bytes=2**40, ttl=1e9, replay=False)
            )
            stream = h.new_stream("s")
            for event_id in ids:
                h.record("s", stream, event_id, b"")
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            del h
            print(
                f"ids-only, {n:,} events, {label}: {used / n:.1f} bytes per event besides the id string "
                f"({id_size} bytes); goal <= 64"
            )
    print("(full mode adds the payload, a bytes object: its length + 33, and an 8-byte slot)")


def mcp_event(rng: random.Random, n: int, size: int) -> bytes:
    """An MCP tool result of about ``size`` bytes as the Python SDK sends it (sse-starlette: CRLF, JSON-RPC)."""
    text = " ".join(rng.choice(WORDS) for _ in range(size // 5))[:size]
    data = json.dumps({"jsonrpc": "2.0", "id": n, "result": {"content": [{"type": "text", "text": text}]}})
    return f"id: {n}\r\nevent: message\r\ndata: {data}\r\n\r\n".encode()


WORDS: tuple[str, ...] = (
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "file",
    "code",
    "function",
    "value",
)
WORDS += ("returns", "error", "test", "result", "tool", "model", "agent", "read", "write", "path", "line", "server")


def compression(n: int = 2000) -> None:
    """Memory per held event (tracemalloc) and recording CPU per event, with compression off and on (the
    default, from 1 KiB), for MCP results of 1, 3 and 10 KB and for small events."""
    rng = random.Random(7)
    print("held events, per event: traced bytes and CPU to record, compression off -> on (sse_compress_events_from)")
    shapes = {
        "small 115 B": [payload(i) for i in range(n)],
        **{f"MCP JSON {k} KB": [mcp_event(rng, i, k * 1000) for i in range(n)] for k in (1, 3, 10)},
    }
    for name, events in shapes.items():
        raw = sum(map(len, events)) / n
        measured = []
        for compress_from in (0, HistoryLimits().compress_from):
            limits = HistoryLimits(max_events=n, ttl=1e9, compress_from=compress_from)
            ids: list[str | None] = [str(i) for i in range(n)]
            h = MemoryHistory(limits)  # CPU first, untraced (tracing slows every allocation down)
            stream = h.new_stream("s")
            start = time.process_time()
            for k in range(0, n, 250):  # in the relay's batches
                h.record_many("s", stream, ids[k : k + 250], events[k : k + 250])
            spent = time.process_time() - start
            del h
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            copies = [bytes(bytearray(e)) for e in events]  # the relay's chunks: the history alone keeps them
            h = MemoryHistory(limits)
            stream = h.new_stream("s")
            for k in range(0, n, 250):
                h.record_many("s", stream, ids[k : k + 250], copies[k : k + 250])
            del copies
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            del h
            measured.append((used / n, spent / n * 1e6))
        (off, off_t), (on, on_t) = measured
        print(
            f"  {name:15} {raw:7.0f} B: {off:7.0f} -> {on:7.0f} bytes = {on / off:4.2f}x;"
            f" {off_t:5.1f} -> {on_t:6.1f} us to record"
        )


def memory_under_load(sessions: int) -> None:
    """Both modes at once, each in its own process: tracemalloc sees one history each, and nothing else."""
    print(f"memory per event: {sessions:,} sessions x 1,000 events, default limits")
    procs = [
        subprocess.Popen(
            [sys.executable, PROBE, mode, f"--sessions={sessions}", "--summary"], stdout=subprocess.PIPE, text=True
        )
        for mode in ("full", "ids-only")
    ]
    for proc in procs:
        out = proc.communicate()[0]
        if proc.returncode:
            raise SystemExit(f"{PROBE.name} failed (exit status {proc.returncode})")
        print(f"  {out.strip()}")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--sizes", default="100,10000,1000000")
    args.add_argument("--load-sessions", type=int, default=10_000, help="sessions of the memory run (0: skip it)")
    opts = args.parse_args()
    lookups([int(s) for s in opts.sizes.split(",")])
    ids_only_memory()
    compression()
    if opts.load_sessions:
        memory_under_load(opts.load_sessions)


if __name__ == "__main__":
    main()

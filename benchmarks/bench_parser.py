"""Parser throughput: sse_resume_core against httpx-sse's decoders and sseclient-py, in one run.

A stream of about 200-byte events (id, event type, one line of JSON data) is cut into 16 KiB chunks, as a socket
would deliver it, and each parser turns it into events whose id, type and data the loop reads. Each parser runs
``--rounds`` times; the best round counts. Ratios against httpx-sse are printed last.

    python benchmarks/bench_parser.py [--megabytes 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import codecs
import json
import time
from collections.abc import Callable, Iterator

from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from sseclient import SSEClient

from sse_resume_core import SSEParser

CHUNK = 16 * 1024


def make_stream(megabytes: float) -> tuple[bytes, int]:
    parts: list[bytes] = []
    size = 0
    count = 0
    while size < megabytes * 1_000_000:
        count += 1
        data = json.dumps(
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"n": count, "pad": "x" * 80}}
        )
        event = f"id: {count}\nevent: update\ndata: {data}\n\n".encode()
        parts.append(event)
        size += len(event)
    return b"".join(parts), count


def ours(chunks: list[bytes]) -> int:
    parser = SSEParser()
    count = 0
    for chunk in chunks:
        for block in parser.feed(chunk):
            if block.data is not None:
                _ = (block.id, block.type, block.data)
                count += 1
    return count


def httpx_sse(chunks: list[bytes]) -> int:
    # What httpx-sse's EventSource.iter_sse does: incremental UTF-8 text, then lines, then events.
    text = codecs.getincrementaldecoder("utf-8")("replace")
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    count = 0
    for chunk in chunks:
        for line in lines.decode(text.decode(chunk)):
            event = decoder.decode(line)
            if event is not None:
                _ = (event.id, event.event, event.data)
                count += 1
    return count


def sseclient_py(chunks: list[bytes]) -> int:
    count = 0
    for event in SSEClient(iter(chunks)).events():
        _ = (event.id, event.event, event.data)
        count += 1
    return count


def best_of(rounds: int, run: Callable[[list[bytes]], int], chunks: list[bytes]) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(rounds):
        start = time.perf_counter()
        count = run(chunks)
        best = min(best, time.perf_counter() - start)
    return best, count


def chunked(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--megabytes", type=float, default=50)
    args.add_argument("--rounds", type=int, default=3)
    opts = args.parse_args()
    data, expected = make_stream(opts.megabytes)
    chunks = list(chunked(data))
    print(f"{len(data) / 1e6:.1f} MB, {expected} events of {len(data) / expected:.0f} bytes, {len(chunks)} chunks")
    results: dict[str, float] = {}
    for name, run in (("sse_resume_core", ours), ("httpx-sse", httpx_sse), ("sseclient-py", sseclient_py)):
        seconds, count = best_of(opts.rounds, run, chunks)
        if count != expected:
            raise SystemExit(f"{name} parsed {count} events, expected {expected}")
        results[name] = seconds
        print(f"{name:16} {len(data) / seconds / 1e6:8.1f} MB/s {count / seconds:12,.0f} events/s")
    base = results["httpx-sse"]
    for name, seconds in results.items():
        print(f"ratio {name} / httpx-sse: {base / seconds:.2f}x")


if __name__ == "__main__":
    main()

"""Parser throughput: sse_resume_core's SSEParser against httpx-sse's decoders, shape by shape, in one run.

For each event shape of ``event_shapes.py`` (the MCP SDKs' JSON-RPC events, LLM token streams, multi-line data,
...), with LF line ends and with CRLF line ends (the shape's own, and the other: servers send both, and each
parser reads them by different code), a stream of about ``--megabytes`` MB of ~200-byte events is fed to each
parser in two ways: cut into 16 KiB
pieces, as a socket read delivers it to a client, and as the upstream's HTTP chunks (one event each, but for the
``many`` shape), as mitmproxy hands them to the relay. Each parser turns it into events whose id, type and data
the loop reads. httpx-sse is run as its ``EventSource.iter_sse`` runs it: incremental UTF-8 decoding, its
``SSELineDecoder``, ``rstrip("\\n")`` of each line, its ``SSEDecoder``.

Rounds are paired, as in ``bench_relay.py``: in each, every parser reads the stream once, in turn (the order
reversed every other round), timed in CPU seconds of this process (time spent waiting for a CPU on a busy machine
does not count), and each round gives the ratio of httpx-sse's time to SSEParser's. The median of those ratios
and the middle half of them are printed last (above 1: SSEParser is faster); the headline is the ``starlette``
shape with CRLF (what MCP Python SDK servers send) in 16 KiB pieces.

    python benchmarks/bench_parser.py [--shapes starlette] [--ends LF,CRLF] [--megabytes 20] [--rounds 5]
                                      [--pieces 16k,chunks] [--sseclient]
"""

from __future__ import annotations

import argparse
import codecs
import itertools
import statistics
import time
from collections.abc import Callable

from event_shapes import SHAPES
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from sseclient import SSEClient

from sse_resume_core import SSEParser

PIECE = 16 * 1024
SIZE = 200


def make_stream(shape: str, megabytes: float, ends: str) -> tuple[list[bytes], int]:
    """About ``megabytes`` MB of events of ``shape``, as its HTTP chunks, with ``ends`` ("LF" or "CRLF") line
    ends; and how many events that is. (No shape has a CR or LF inside a line, so replacing them is exact.)"""
    one = len(SHAPES[shape].make(1, SIZE)[1])
    count = max(1, int(megabytes * 1_000_000 / one))
    chunks = [chunk.replace(b"\r\n", b"\n") for chunk in SHAPES[shape].chunks(count, SIZE)]
    if ends == "CRLF":
        chunks = [chunk.replace(b"\n", b"\r\n") for chunk in chunks]
    return chunks, count


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
            event = decoder.decode(line.rstrip("\n"))
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


def paired(
    rounds: int, parsers: dict[str, Callable[[list[bytes]], int]], chunks: list[bytes], expected: int
) -> dict[str, list[float]]:
    """Each parser's CPU seconds in each of ``rounds`` paired rounds (stops if one miscounts the events)."""
    seconds: dict[str, list[float]] = {name: [] for name in parsers}
    names = list(parsers)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.process_time()
            count = parsers[name](chunks)
            seconds[name].append(time.process_time() - start)
            if count != expected:
                raise SystemExit(f"{name} parsed {count} events, expected {expected}")
    return seconds


def middle(ratios: list[float]) -> str:
    """The median of per-round ratios and the range of the middle half of them."""
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return f"{q[1]:5.2f}x (middle half {q[0]:.2f}-{q[2]:.2f}x)"


def pieces(data: bytes) -> list[bytes]:
    return [data[i : i + PIECE] for i in range(0, len(data), PIECE)]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of: {', '.join(SHAPES)}")
    args.add_argument("--ends", default="LF,CRLF", help="line ends, comma-separated, of: LF, CRLF")
    args.add_argument("--pieces", default="16k,chunks", help="how the stream is cut: 16k (16 KiB), chunks (HTTP)")
    args.add_argument("--megabytes", type=float, default=20)
    args.add_argument("--rounds", type=int, default=5)
    args.add_argument("--sseclient", action="store_true", help="run sseclient-py too (slow)")
    opts = args.parse_args()
    names = [name.strip() for name in opts.shapes.split(",") if name.strip()]
    if not names or any(name not in SHAPES for name in names):
        raise SystemExit(f"--shapes: a comma-separated list of {', '.join(SHAPES)}")
    ends = [end.strip() for end in opts.ends.split(",") if end.strip()]
    if not ends or any(end not in ("LF", "CRLF") for end in ends):
        raise SystemExit("--ends: LF, CRLF or both")
    cuts = [cut.strip() for cut in opts.pieces.split(",") if cut.strip()]
    if not cuts or any(cut not in ("16k", "chunks") for cut in cuts):
        raise SystemExit("--pieces: 16k, chunks or both")
    parsers: dict[str, Callable[[list[bytes]], int]] = {"sse_resume_core": ours, "httpx-sse": httpx_sse}
    if opts.sseclient:
        parsers["sseclient-py"] = sseclient_py
    ratios: list[tuple[str, str, str, str]] = []
    for shape, end in itertools.product(names, ends):
        chunks, expected = make_stream(shape, opts.megabytes, end)
        data = b"".join(chunks)
        print(f"shape {shape} {end}: {len(data) / 1e6:.1f} MB, {expected:,} events of {len(data) / expected:.0f} bytes")
        feeds = {"16k": ("16 KiB pieces", pieces(data)), "chunks": ("HTTP chunks", chunks)}
        for how, feed in (feeds[cut] for cut in cuts):
            seconds = paired(opts.rounds, parsers, feed, expected)
            for name, times in seconds.items():
                median = statistics.median(times)
                print(
                    f"  {how:14} {name:16} {len(data) / median / 1e6:7.1f} MB/s {expected / median:11,.0f} events/s"
                    f" (median of {opts.rounds} rounds, CPU time)",
                    flush=True,
                )
            theirs, mine = seconds["httpx-sse"], seconds["sse_resume_core"]
            ratios.append((shape, end, how, middle([t / m for t, m in zip(theirs, mine, strict=True)])))
    print("\nratio SSEParser / httpx-sse throughput, median of paired rounds (above 1: SSEParser is faster)")
    for shape, end, how, ratio in ratios:
        print(f"  {shape:14} {end:5} {how:14} {ratio}")


if __name__ == "__main__":
    main()

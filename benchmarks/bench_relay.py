"""Relay throughput through mitmdump: the addon against a plain ``stream = True`` script, in one run.

A fast upstream sends ``--events`` events of about 200 bytes, each its own HTTP chunk; curl reads them through
mitmdump. Each configuration runs ``--rounds`` times, alternating, and its best round counts.

    python benchmarks/bench_relay.py [--events 100000] [--rounds 3] [--set sse_support_replay=false ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import ADDON, Mitmdump, Process, free_port, wait_port  # noqa: E402


def run_once(proxy: Mitmdump, events: int, tag: str) -> float:
    """Seconds until curl has received ``events`` events (then it hangs up: a kept stream never ends by itself)."""
    url = f"{proxy.url}/sse/{tag}?n={events}&size=200"
    start = time.perf_counter()
    curl = subprocess.Popen(
        ["curl", "-sN", "--max-time", "600", "-H", "Accept: text/event-stream", url], stdout=subprocess.PIPE
    )
    assert curl.stdout is not None
    got, last = 0, b""
    while got < events and (data := os.read(curl.stdout.fileno(), 1 << 16)):
        got += (last + data[:1]).count(b"\n\n") + data.count(b"\n\n")  # a separator split across two reads
        last = data[-1:]
    seconds = time.perf_counter() - start
    curl.kill()
    curl.wait()
    if got != events:
        raise SystemExit(f"{tag}: received {got} events, expected {events}")
    return seconds


def compare(proxies: dict[str, Mitmdump], events: int, rounds: int) -> dict[str, float]:
    """Warm each proxy up, then run alternating rounds; print and return each one's best time (seconds)."""
    for proxy in proxies.values():  # warm up: first request, imports, caches
        run_once(proxy, 1000, "warmup")
    best = dict.fromkeys(proxies, float("inf"))
    for r in range(rounds):
        for name, proxy in proxies.items():
            best[name] = min(best[name], run_once(proxy, events, f"round{r}"))
    for name, seconds in best.items():
        print(f"{name:12} {events / seconds:10,.0f} events/s ({seconds:.2f} s for {events:,})")
    return best


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options every relay benchmark takes."""
    args = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--events", type=int, default=100_000)
    args.add_argument("--rounds", type=int, default=3)
    return args


@contextlib.contextmanager
def fast_upstream() -> Iterator[tuple[Path, int]]:
    """A temporary folder and the fast upstream running on a free port, for the benchmark's proxies."""
    tmp = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    port = free_port()
    with Process([sys.executable, HERE / "fast_upstream.py", "--port", str(port)], tmp / "upstream.log") as upstream:
        wait_port(port, upstream.proc)
        yield tmp, port


def run(proxies: dict[str, Mitmdump], events: int, rounds: int) -> dict[str, float]:
    """:func:`compare` the proxies, then stop them."""
    try:
        return compare(proxies, events, rounds)
    finally:
        for proxy in proxies.values():
            proxy.stop()


def main() -> None:
    args = arguments(__doc__)
    args.add_argument("--set", action="append", default=[], help="an option for the addon's mitmdump")
    opts = args.parse_args()
    with fast_upstream() as (tmp, port):
        proxies = {
            "passthrough": Mitmdump(tmp, port, (), HERE / "passthrough.py"),
            "sse-resume": Mitmdump(tmp, port, opts.set, ADDON),
        }
        best = run(proxies, opts.events, opts.rounds)
    print(f"ratio sse-resume / passthrough: {best['passthrough'] / best['sse-resume']:.2f}x (goal >= 0.9x)")


if __name__ == "__main__":
    main()

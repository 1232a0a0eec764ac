"""Relay throughput through mitmdump: the addon against a plain ``stream = True`` script, in one run.

A fast upstream sends ``--events`` events of about 200 bytes, each its own HTTP chunk; curl reads them through
mitmdump. Two measures, each a ratio against the first configuration:

* one at a time: each configuration runs ``--rounds`` times, alternating, and its best round's events per
  second count. On a shared machine this swings by 10% and more from run to run (other tenants, a sibling
  hyperthread busy or not);
* side by side: in each of ``--side-rounds`` rounds every configuration relays at once, and each mitmdump's
  events per CPU-second (read from /proc) is divided by the first one's; the median counts. The mitmdumps
  share whatever the machine gives at that moment, so the ratio holds to a few percent where the first swings.

    python benchmarks/bench_relay.py [--events 100000] [--rounds 3] [--side-rounds 5] [--set name=value ...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
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


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time a process has used so far (Linux), or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _relay_measured(name: str, proxy: Mitmdump, events: int, tag: str, used: dict[str, float | str]) -> None:
    """:func:`run_once`, noting in ``used[name]`` the CPU seconds the proxy spent meanwhile (or what failed)."""
    before = cpu_seconds(proxy.proc.pid)
    try:
        run_once(proxy, events, tag)
    except SystemExit as e:  # (in a thread it would end silently)
        used[name] = str(e)
        return
    after = cpu_seconds(proxy.proc.pid)
    if before is not None and after is not None:
        used[name] = after - before


def side_by_side(proxies: dict[str, Mitmdump], events: int, rounds: int) -> dict[str, float] | None:
    """Run every proxy at once, ``rounds`` times; print and return each one's median events per CPU-second
    against the first proxy's (None where CPU time cannot be read)."""
    ratios: dict[str, list[float]] = {name: [] for name in proxies}
    for r in range(rounds):
        used: dict[str, float | str] = {}
        threads = [
            threading.Thread(target=_relay_measured, args=(name, proxy, events, f"side{r}", used))
            for name, proxy in proxies.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failed := [v for v in used.values() if isinstance(v, str)]:
            raise SystemExit(failed[0])
        if len(used) != len(proxies):
            print("side by side: no CPU times here (/proc), skipped")
            return None
        first = next(iter(proxies))
        for name in proxies:
            ratios[name].append(float(used[first]) / float(used[name]))
    medians = {name: statistics.median(values) for name, values in ratios.items()}
    for name, values in ratios.items():
        spread = ", ".join(f"{v:.2f}" for v in sorted(values))
        print(f"{name:12} {medians[name]:.2f}x events per CPU-second, side by side (rounds: {spread})")
    return medians


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options every relay benchmark takes."""
    args = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--events", type=int, default=100_000)
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--side-rounds", type=int, default=5)
    return args


@contextlib.contextmanager
def fast_upstream() -> Iterator[tuple[Path, int]]:
    """A temporary folder and the fast upstream running on a free port, for the benchmark's proxies."""
    tmp = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    port = free_port()
    with Process([sys.executable, HERE / "fast_upstream.py", "--port", str(port)], tmp / "upstream.log") as upstream:
        wait_port(port, upstream.proc)
        yield tmp, port


def run(
    proxies: dict[str, Mitmdump], opts: argparse.Namespace, side: bool = True
) -> tuple[dict[str, float], dict[str, float] | None]:
    """:func:`compare` the proxies one at a time, then (with ``side``) :func:`side_by_side`; stop them."""
    try:
        best = compare(proxies, opts.events, opts.rounds)
        return best, side_by_side(proxies, opts.events, opts.side_rounds) if side else None
    finally:
        for proxy in proxies.values():
            proxy.stop()


def report(label: str, first: str, other: str, results: tuple[dict[str, float], dict[str, float] | None]) -> None:
    """Print the two ratios of ``other`` against ``first``."""
    best, efficiency = results
    line = f"ratio {label}: {best[first] / best[other]:.2f}x events/s, best round one at a time"
    if efficiency is not None:
        line += f"; {efficiency[other]:.2f}x events per CPU-second, median side by side"
    print(line)


def main() -> None:
    args = arguments(__doc__)
    args.add_argument("--set", action="append", default=[], help="an option for the addon's mitmdump")
    opts = args.parse_args()
    with fast_upstream() as (tmp, port):
        proxies = {
            "passthrough": Mitmdump(tmp, port, (), HERE / "passthrough.py"),
            "sse-resume": Mitmdump(tmp, port, opts.set, ADDON),
        }
        results = run(proxies, opts)
    report("sse-resume / passthrough (goal >= 0.9x)", "passthrough", "sse-resume", results)


if __name__ == "__main__":
    main()

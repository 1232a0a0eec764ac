"""Relay throughput through mitmdump: the addon against a plain ``stream = True`` script, in one run.

A fast upstream sends ``--events`` events of about 200 bytes, each its own HTTP chunk; curl reads them through
mitmdump, one configuration at a time. Rounds are paired: in each, every configuration relays once, in turn (the
order reversed every other round, so a slow drift of the machine favours neither), and each one's time is divided
by the first's *in the same round*. The median of those ratios counts; the spread of the middle half and the
ratio of the best rounds are printed beside it. The same is done with the CPU time each mitmdump spent (read from
/proc), which leaves out the time a proxy waited for a CPU, though not a CPU slowed down by its neighbours.

On a shared machine a round now and then runs 20-30% slow (other tenants, a sibling hyperthread busy or not):
pairing rounds and taking the median keeps such a round from deciding the result, as a best-of-few would not.

    python benchmarks/bench_relay.py [--events 50000] [--rounds 10] [--set name=value ...]
    python benchmarks/bench_relay.py --live [--tool mitmweb]    # live flows (sse_live_flows) on against off
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

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


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time a process has used so far (Linux), or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Rounds:
    """What :func:`compare` measured: per configuration, each round's seconds and CPU seconds (None: unknown)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float | None]] = field(default_factory=dict)


def compare(proxies: dict[str, Mitmdump], events: int, rounds: int) -> Rounds:
    """Warm each proxy up, then run ``rounds`` paired rounds; print each one's median and best events/s."""
    for proxy in proxies.values():  # warm up: first request, imports, caches
        run_once(proxy, 1000, "warmup")
    result = Rounds({name: [] for name in proxies}, {name: [] for name in proxies})
    names = list(proxies)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            pid = proxies[name].proc.pid
            before = cpu_seconds(pid)
            result.seconds[name].append(run_once(proxies[name], events, f"round{r}"))
            after = cpu_seconds(pid)
            result.cpu[name].append(None if before is None or after is None else after - before)
    for name, times in result.seconds.items():
        print(
            f"{name:12} {events / statistics.median(times):10,.0f} events/s median, {events / min(times):10,.0f} best"
            f" ({rounds} rounds of {events:,})"
        )
    return result


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options every relay benchmark takes."""
    args = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--events", type=int, default=50_000)
    args.add_argument("--rounds", type=int, default=10)
    return args


@contextlib.contextmanager
def fast_upstream() -> Iterator[tuple[Path, int]]:
    """A temporary folder and the fast upstream running on a free port, for the benchmark's proxies."""
    tmp = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    port = free_port()
    with Process([sys.executable, HERE / "fast_upstream.py", "--port", str(port)], tmp / "upstream.log") as upstream:
        wait_port(port, upstream.proc)
        yield tmp, port


def run(proxies: dict[str, Mitmdump], opts: argparse.Namespace) -> Rounds:
    """:func:`compare` the proxies; stop them."""
    try:
        return compare(proxies, opts.events, opts.rounds)
    finally:
        for proxy in proxies.values():
            proxy.stop()


def _summary(ratios: list[float]) -> str:
    """The median of per-round ratios, and the range of the middle half of them."""
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
    return f"{q[1]:.2f}x (middle half {q[0]:.2f}-{q[2]:.2f}x)"


def report(label: str, first: str, other: str, rounds: Rounds, cpu: bool = True) -> None:
    """Print the ratios of ``other`` against ``first``: events/s, and with ``cpu`` events per CPU-second."""
    mine, theirs = rounds.seconds[other], rounds.seconds[first]
    line = f"ratio {label}: {_summary([t / m for t, m in zip(theirs, mine, strict=True)])} events/s"
    line += f", best rounds {min(theirs) / min(mine):.2f}x"
    spent = [(t, m) for t, m in zip(rounds.cpu[first], rounds.cpu[other], strict=True) if t is not None and m]
    if cpu and len(spent) == len(mine):
        line += f"; {_summary([t / m for t, m in spent])} events per CPU-second"
    print(line)


def live(tmp: Path, port: int, opts: argparse.Namespace, on: bool) -> Mitmdump:
    """The addon with live flows forced on or off, in ``--tool`` (mitmweb: on a port of its own, no browser)."""
    extra: list[str] = []
    if opts.tool == "mitmweb":
        extra = ["--set", f"web_port={free_port()}", "--set", "web_open_browser=false", "--set", "web_password=x"]
        extra += ["--set", "web_host=127.0.0.1"]
    options = [*opts.set, f"sse_live_flows={'on' if on else 'off'}"]
    return Mitmdump(tmp, port, options, ADDON, extra=extra, tool=opts.tool)


def main() -> None:
    args = arguments(__doc__)
    args.add_argument("--set", action="append", default=[], help="an option for the addon's mitmdump")
    args.add_argument(
        "--live",
        action="store_true",
        help="compare the addon with live flows on (open flows refreshed once a second) and off, in --tool",
    )
    args.add_argument("--tool", choices=["mitmdump", "mitmweb"], default="mitmdump", help="for --live")
    opts = args.parse_args()
    with fast_upstream() as (tmp, port):
        if opts.live:
            proxies = {"live-off": live(tmp, port, opts, False), "live-on": live(tmp, port, opts, True)}
            rounds = run(proxies, opts)
            report(f"live on / off in {opts.tool} (goal >= 0.97x)", "live-off", "live-on", rounds)
            return
        proxies = {
            "passthrough": Mitmdump(tmp, port, (), HERE / "passthrough.py"),
            "sse-resume": Mitmdump(tmp, port, opts.set, ADDON),
        }
        rounds = run(proxies, opts)
    report("sse-resume / passthrough (goal >= 0.9x)", "passthrough", "sse-resume", rounds)


if __name__ == "__main__":
    main()

"""Relay throughput through mitmdump: the addon against a plain ``stream = True`` script, shape by shape, in one run.

A fast upstream sends ``--events`` events of about 200 bytes in each of the event shapes real servers send
(``event_shapes.py``: the MCP SDKs', LLM token streams', multi-line data, many events to a chunk...), each event
its own HTTP chunk unless the shape says otherwise; curl reads them through mitmdump, one configuration at a time.
Each shape is measured in rounds of its own, and rounds are paired: in each, every configuration relays once, in
turn (the order reversed every other round, so a slow drift of the machine favours neither), and each one's time
is divided by the first's *in the same round*. The median of those ratios counts; the spread of the middle half
and the ratio of the best rounds are printed beside it. The same is done with the CPU time each mitmdump spent
(read from /proc), which leaves out the time a proxy waited for a CPU, though not a CPU slowed down by its
neighbours. A table of every shape's ratios comes last.

On a shared machine a round now and then runs 20-30% slow (other tenants, a sibling hyperthread busy or not):
pairing rounds and taking the median keeps such a round from deciding the result, as a best-of-few would not.

    python benchmarks/bench_relay.py [--shapes starlette,typescript] [--events 50000] [--rounds 10] [--set n=v ...]
    python benchmarks/bench_relay.py --quick    # a smoke run: every shape, few events, 3 rounds
    python benchmarks/bench_relay.py --live [--tool mitmweb]    # live flows (sse_live_flows) on against off
    python benchmarks/bench_relay.py --against OLD/addon/sse_resume.py    # this addon against another checkout's

``--against`` pairs the addon with another copy of it (a checkout of an earlier commit, say) in the same rounds,
so a change is measured against what it changed rather than through two runs' baselines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from event_shapes import SHAPES, Shape  # noqa: E402

from harness import ADDON, Mitmdump, Process, free_port, wait_port  # noqa: E402

SIZE = 200  # bytes of one event
WARMUP = 1000  # events of the round each proxy relays first, per shape, unmeasured


def run_once(proxy: Mitmdump, shape: Shape, events: int, tag: str) -> float:
    """Seconds until curl has received ``events`` events (then it hangs up: a kept stream never ends by itself)."""
    url = f"{proxy.url}/sse/{tag}?n={events}&size={SIZE}&shape={shape.name}"
    end = shape.terminator
    overlap = len(end) - 1  # bytes of a terminator that the last read can have left unfinished
    start = time.perf_counter()
    curl = subprocess.Popen(
        ["curl", "-sN", "--max-time", "600", "-H", "Accept: text/event-stream", url], stdout=subprocess.PIPE
    )
    assert curl.stdout is not None
    got, last = 0, b""
    while got < events and (data := os.read(curl.stdout.fileno(), 1 << 16)):
        got += (last + data[:overlap]).count(end) + data.count(end)  # (the first: one split across two reads)
        last = (last + data)[-overlap:]
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

    events: int
    seconds: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float | None]] = field(default_factory=dict)


def prepare(upstream_port: int, shape: Shape, counts: Sequence[int]) -> None:
    """Have the upstream prepare the bodies of ``shape`` it will send (it keeps them): asked for directly, once
    each, so that no measured round waits for one to be made."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # (never through a proxy from the env)
    for n in counts:
        url = f"http://127.0.0.1:{upstream_port}/sse/prepare?n={n}&size={SIZE}&shape={shape.name}"
        with direct.open(url, timeout=600) as response:
            response.read()


def compare(proxies: dict[str, Mitmdump], upstream_port: int, shape: Shape, events: int, rounds: int) -> Rounds:
    """Warm each proxy up, then run ``rounds`` paired rounds of ``shape``; print each one's median and best
    events/s."""
    prepare(upstream_port, shape, (WARMUP, events))
    for proxy in proxies.values():  # warm up: first request, imports, caches
        run_once(proxy, shape, WARMUP, f"{shape.name}-warmup")
    result = Rounds(events, {name: [] for name in proxies}, {name: [] for name in proxies})
    names = list(proxies)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            pid = proxies[name].proc.pid
            before = cpu_seconds(pid)
            result.seconds[name].append(run_once(proxies[name], shape, events, f"{shape.name}-{r}"))
            after = cpu_seconds(pid)
            result.cpu[name].append(None if before is None or after is None else after - before)
    for name, times in result.seconds.items():
        print(
            f"  {name:12} {events / statistics.median(times):10,.0f} events/s median, "
            f"{events / min(times):10,.0f} best ({rounds} rounds of {events:,})"
        )
    return result


def arguments(doc: str | None, shapes: str = ",".join(SHAPES)) -> argparse.ArgumentParser:
    """The options every relay benchmark takes (``shapes``: the default of ``--shapes``)."""
    args = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--events", type=int, help="events per round (default 50,000; 5,000 with --quick)")
    args.add_argument("--rounds", type=int, help="paired rounds per shape (default 10; 3 with --quick)")
    args.add_argument("--shapes", default=shapes, help=f"comma-separated, of: {', '.join(SHAPES)} (default: {shapes})")
    args.add_argument("--quick", action="store_true", help="a smoke run: fewer events and rounds")
    args.add_argument(
        "--against",
        type=Path,
        metavar="SCRIPT",
        help="compare with this addon script (another checkout's addon/sse_resume.py) instead of a passthrough",
    )
    return args


def baseline(tmp: Path, port: int, opts: argparse.Namespace, options: Sequence[str]) -> tuple[str, Mitmdump]:
    """The first of a comparison: the plain ``stream = True`` script, or ``--against``'s addon with ``options``."""
    if opts.against is not None:
        return "against", Mitmdump(tmp, port, options, opts.against.resolve())
    return "passthrough", Mitmdump(tmp, port, (), HERE / "passthrough.py")


def shapes_of(opts: argparse.Namespace) -> list[Shape]:
    """The shapes ``--shapes`` names, in its order (stops with a message on an unknown name); and ``--quick``
    applied to the events and rounds not given."""
    if opts.events is None:
        opts.events = 5_000 if opts.quick else 50_000
    if opts.rounds is None:
        opts.rounds = 3 if opts.quick else 10
    names = [name.strip() for name in opts.shapes.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHAPES]
    if unknown or not names:
        raise SystemExit(f"unknown shape(s) {', '.join(unknown) or '(none given)'}; the shapes: {', '.join(SHAPES)}")
    return [SHAPES[name] for name in names]


@contextlib.contextmanager
def fast_upstream() -> Iterator[tuple[Path, int]]:
    """A temporary folder and the fast upstream running on a free port, for the benchmark's proxies."""
    tmp = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    port = free_port()
    with Process([sys.executable, HERE / "fast_upstream.py", "--port", str(port)], tmp / "upstream.log") as upstream:
        wait_port(port, upstream.proc)
        yield tmp, port


def describe(shape: Shape) -> str:
    """The shape's name and its first event's bytes (cut short), for the heading of its rounds."""
    first = shape.make(1, SIZE)[1]
    shown = repr(first if len(first) <= 72 else first[:60] + b"..." + first[-8:])
    per_chunk = "each its own HTTP chunk" if shape.per_chunk == 1 else f"{shape.per_chunk} to an HTTP chunk"
    return f"shape {shape.name}: events like {shown}, {per_chunk}"


def run(
    proxies: dict[str, Mitmdump], upstream_port: int, opts: argparse.Namespace, cpu: bool = True
) -> dict[str, Rounds]:
    """:func:`compare` the two proxies on each shape of ``opts``, printing the ratio of the second to the first
    (with ``cpu``, per CPU-second too) after each; stop them. Returns each shape's rounds."""
    shapes = shapes_of(opts)
    first, other = proxies
    measured: dict[str, Rounds] = {}
    try:
        for shape in shapes:
            print(describe(shape), flush=True)
            measured[shape.name] = compare(proxies, upstream_port, shape, opts.events, opts.rounds)
            print(f"  {report_line(measured[shape.name], first, other, cpu)}", flush=True)
    finally:
        for proxy in proxies.values():
            proxy.stop()
    return measured


@dataclass(frozen=True)
class Ratio:
    """The median of per-round ratios and the range of the middle half of them."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, ratios: list[float]) -> Ratio:
        if len(ratios) == 1:
            return cls(ratios[0], ratios[0], ratios[0])
        q = statistics.quantiles(ratios, n=4, method="inclusive")
        return cls(q[1], q[0], q[2])

    def __str__(self) -> str:
        return f"{self.median:.2f}x (middle half {self.low:.2f}-{self.high:.2f}x)"


def ratios(rounds: Rounds, first: str, other: str) -> tuple[Ratio, float, Ratio | None]:
    """``other`` against ``first``: the events/s ratio of paired rounds, that of the best rounds, and the ratio of
    events per CPU-second (None when /proc could not tell)."""
    mine, theirs = rounds.seconds[other], rounds.seconds[first]
    speed = Ratio.of([t / m for t, m in zip(theirs, mine, strict=True)])
    spent = [(t, m) for t, m in zip(rounds.cpu[first], rounds.cpu[other], strict=True) if t is not None and m]
    cpu = Ratio.of([t / m for t, m in spent]) if len(spent) == len(mine) else None
    return speed, min(theirs) / min(mine), cpu


def report_line(rounds: Rounds, first: str, other: str, cpu: bool = True) -> str:
    speed, best, per_cpu = ratios(rounds, first, other)
    line = f"ratio {other} / {first}: {speed} events/s, best rounds {best:.2f}x"
    if cpu and per_cpu is not None:
        line += f"; {per_cpu} events per CPU-second"
    return line


def report(label: str, first: str, other: str, measured: dict[str, Rounds], cpu: bool = True) -> None:
    """Print every shape's ratios of ``other`` against ``first``: events/s, and with ``cpu`` events per CPU-second."""
    print(f"\n{label}: median of paired rounds (the middle half of the rounds)")
    print(f"  {'shape':14} {'events/s':32} {'events per CPU-second' if cpu else ''}".rstrip())
    for name, rounds in measured.items():
        speed, _, per_cpu = ratios(rounds, first, other)
        shown_cpu = str(per_cpu) if cpu and per_cpu is not None else ""
        print(f"  {name:14} {speed!s:32} {shown_cpu}".rstrip())


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
    shapes_of(opts)  # (an unknown shape stops it before any process starts)
    with fast_upstream() as (tmp, port):
        if opts.live:
            proxies = {"live-off": live(tmp, port, opts, False), "live-on": live(tmp, port, opts, True)}
            measured = run(proxies, port, opts)
            report(f"live on / off in {opts.tool} (goal >= 0.97x)", "live-off", "live-on", measured)
            return
        first, proxy = baseline(tmp, port, opts, opts.set)
        proxies = {first: proxy, "sse-resume": Mitmdump(tmp, port, opts.set, ADDON)}
        measured = run(proxies, port, opts)
    goal = " (goal >= 0.9x)" if first == "passthrough" else ""
    report(f"sse-resume / {first}{goal}", first, "sse-resume", measured)


if __name__ == "__main__":
    main()

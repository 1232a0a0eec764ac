"""Relay throughput in keep mode (the proxy reads the upstream itself) against a plain ``stream = True`` script.

Same upstream, client and rounds as ``bench_relay.py``; the addon runs with ``sse_keep_upstream=true`` (and a
grace of 0, so a finished round's kept stream stops at once instead of reading on beside the next round).

    python benchmarks/bench_keep.py [--events 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench_relay import compare

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import ADDON, Mitmdump, Process, free_port, wait_port  # noqa: E402


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--events", type=int, default=100_000)
    args.add_argument("--rounds", type=int, default=3)
    opts = args.parse_args()
    tmp = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    port = free_port()
    upstream = Process([sys.executable, HERE / "fast_upstream.py", "--port", str(port)], tmp / "upstream.log")
    wait_port(port, upstream.proc)
    keep = ["sse_keep_upstream=true", "sse_keep_grace=0"]
    proxies = {
        "passthrough": Mitmdump(tmp, port, (), HERE / "passthrough.py"),
        "keep mode": Mitmdump(tmp, port, keep, ADDON),
    }
    try:
        best = compare(proxies, opts.events, opts.rounds)
        print(f"ratio keep mode / passthrough: {best['passthrough'] / best['keep mode']:.2f}x")
    finally:
        for proxy in proxies.values():
            proxy.stop()
        upstream.stop()


if __name__ == "__main__":
    main()

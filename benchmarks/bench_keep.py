"""Relay throughput in keep mode (the proxy reads the upstream itself) against a plain ``stream = True`` script.

Same upstream, event shapes, client and rounds as ``bench_relay.py`` (each shape in paired rounds of its own);
the addon runs with ``sse_keep_upstream=true`` (and a grace of 0, so a finished round's kept stream stops at once
instead of reading on beside the next round).

    python benchmarks/bench_keep.py [--shapes starlette,typescript] [--events 50000] [--rounds 10] [--quick]
    python benchmarks/bench_keep.py --against OLD/addon/sse_resume.py    # against another checkout's keep mode
"""

from __future__ import annotations

import sys

from bench_relay import HERE, arguments, baseline, fast_upstream, report, run, shapes_of

sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from harness import ADDON, Mitmdump


def main() -> None:
    opts = arguments(__doc__).parse_args()
    shapes_of(opts)  # (an unknown shape stops it before any process starts)
    with fast_upstream() as (tmp, port):
        keep = ["sse_keep_upstream=true", "sse_keep_grace=0"]
        first, proxy = baseline(tmp, port, opts, keep)
        proxies = {first: proxy, "keep mode": Mitmdump(tmp, port, keep, ADDON)}
        measured = run(proxies, port, opts)
    goal = " (goal >= 2x)" if first == "passthrough" else ""
    report(f"keep mode / {first}{goal}", first, "keep mode", measured)


if __name__ == "__main__":
    main()

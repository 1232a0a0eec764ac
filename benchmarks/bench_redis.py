"""Relay throughput with the Redis store against the memory store, through mitmdump, in one run.

The same fast upstream and client as bench_relay.py; one mitmdump keeps history in memory, the other in a real
redis-server started here (on 127.0.0.1, a free port, in memory only), in paired rounds as bench_relay.py runs them.
At the end, the events Redis holds are counted, to show the writes really went there.

    python benchmarks/bench_redis.py [--shapes id-data] [--events 50000] [--rounds 10] [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))

from bench_relay import arguments, fast_upstream, report, run, shapes_of  # noqa: E402

from harness import Mitmdump, RedisServer  # noqa: E402


def main() -> None:
    opts = arguments(__doc__, shapes="id-data").parse_args()
    shapes_of(opts)  # (an unknown shape stops it before any process starts)
    with fast_upstream() as (tmp, port), RedisServer(tmp) as server:
        history = [f"sse_max_event_history={opts.events}", f"sse_max_history_bytes={1 << 30}"]
        proxies = {
            "memory": Mitmdump(tmp, port, history),
            "redis": Mitmdump(tmp, port, [*history, f"sse_store={server.url}", "sse_store_secret=bench"]),
        }
        # Events/s only: the redis proxy's CPU time would miss the work done in redis-server.
        measured = run(proxies, port, opts, cpu=False)
        report("redis / memory store", "memory", "redis", measured, cpu=False)
        client = redis.Redis(port=server.port)
        time.sleep(5)  # let the writes behind finish
        held = sum(int(client.zcard(key)) for key in client.scan_iter(match="sse-resume:v2:{*}:ev"))
        print(f"events held in Redis after the run: {held:,}")


if __name__ == "__main__":
    main()

"""The keeper's HTTP/1.1 client (sse_resume_keep._upstream): what its errors say (never the upstream's bytes)."""

from __future__ import annotations

import h11

from sse_resume_keep._upstream import broken


def test_h11_errors_are_described_without_the_upstreams_bytes() -> None:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(b"HTTP/1.1 200 OK\r\nSECRET-TOKEN\r\n\r\n")
    try:
        conn.next_event()
    except h11.RemoteProtocolError as e:
        text = broken(e, 33)
    assert text.startswith("illegal header line after 33 bytes") and "SECRET" not in text

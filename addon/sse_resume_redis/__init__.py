"""sse_resume_redis: a history shared by several proxies, in Redis.

An I/O adapter for the storage interface of ``sse_resume_core`` (``HistoryStore``): it knows Redis, not mitmproxy.
"""

from sse_resume_redis._store import RedisHistory, StoreHealth, redact

__all__ = ["RedisHistory", "StoreHealth", "redact"]

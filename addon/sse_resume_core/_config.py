"""One pydantic model validates every setting, whichever source it comes from.

Sources, lowest precedence first: the defaults, an ``sse:`` block in mitmproxy's own ``config.yaml``, the YAML
file named by ``sse_config``, then each mitmproxy option (``--set``, ``sse_`` keys of ``config.yaml``) whose value
differs from its default. A value given on the command line therefore beats the file; an option left at its
default lets the file speak.

The YAML file (and the ``sse:`` block) has the shape docs/options.md shows, and may carry any other setting under
``sse:`` by its option name without the ``sse_`` prefix::

    sse:
      client_resilience:
        max_event_history: 1000
        event_ttl: 300
        support_replay: false
        dedupe_window: 100
      stale_policy: restart
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sse_resume_core._history import HistoryLimits
from sse_resume_core._identity import DEFAULT_IDENTITY_HEADERS, check_patterns
from sse_resume_core._logsafe import redact_url

__all__ = [
    "ConfigError",
    "Settings",
    "effective",
    "load_file",
    "merge",
    "mitmproxy_options",
    "options_table",
    "section_values",
    "shown",
]

_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP header name (RFC 9110 token)


class ConfigError(ValueError):
    """A setting is invalid; the message names the option and the reason."""


class Settings(BaseModel):
    """Every setting of the addon, validated. Field names are the mitmproxy option names without ``sse_``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_header: str = Field(
        "mcp-session-id",
        description="Request header that names the client's session (MCP: mcp-session-id).",
        json_schema_extra={
            "doc": (
                "Request header that names the client's session. It is part of the request's "
                "[identity](#identity-who-may-read-which-history), with the upstream's scheme, host, port, path "
                "and query and the credential headers."
            )
        },
    )
    identity_headers: tuple[str, ...] = Field(
        (),
        description=(
            "Request headers that tell users apart, besides the built-in ones: names or patterns (* and ?), "
            "any case. A request reads only the history of requests with the same URL, session header and "
            "values of these headers. '!pattern' takes the headers it matches out of the built-in ones. "
            "Built in: " + ", ".join(DEFAULT_IDENTITY_HEADERS) + "."
        ),
        json_schema_extra={
            "doc": (
                "Request headers that tell users apart, besides the built-in ones: names or patterns (`*`, "
                "`?`), any case; `!pattern` takes the headers it matches out. See "
                "[identity](#identity-who-may-read-which-history)."
            ),
            "default": "none (the built-in set only)",
        },
    )
    max_event_history: int = Field(
        1000,
        ge=1,
        le=10_000_000,
        description="Events kept per session for replay and lookups; oldest evicted first.",
        json_schema_extra={
            "doc": (
                "Events kept per session (all its streams together), with their payloads: what a reconnect is "
                "served from. The oldest is evicted first."
            )
        },
    )
    max_remembered_ids: int = Field(
        100_000,
        ge=0,
        le=100_000_000,
        description=(
            "Events per session still recognised by id and bytes after their payload left the history (this "
            "many in all, the history's included): an upstream that ignores Last-Event-ID and sends them "
            "again is deduplicated, and a client resuming from one is told what is missing."
        ),
        json_schema_extra={
            "doc": (
                "Events per session (the history's included) still recognised by their id and bytes after their "
                "payload was evicted, about 60 bytes each beyond the id, within `sse_max_history_bytes`. An "
                "upstream that ignores `Last-Event-ID` and starts over is deduplicated against them; a client "
                "resuming from one of them whose later events left the history is told (`sse-resume: behind`) "
                "and resumed upstream from its own id."
            )
        },
    )
    event_ttl: int = Field(
        300,
        ge=1,
        le=7 * 86400,
        description="Seconds an event is kept; a session idle this long is dropped whole.",
        json_schema_extra={"doc": "Seconds an event is kept; a session idle this long is dropped whole."},
    )
    support_replay: bool = Field(
        True,
        description=(
            "Keep event payloads and answer reconnects from them. false keeps ids only: reconnects are "
            "forwarded upstream with the right Last-Event-ID and deduplicated, nothing is replayed by the "
            "proxy."
        ),
        json_schema_extra={
            "doc": (
                "Keep payloads and answer reconnects from them. `false` keeps ids only: reconnects are "
                "forwarded with the right `Last-Event-ID` and deduplicated; nothing is replayed by the proxy."
            )
        },
    )
    dedupe_window: int = Field(
        100,
        ge=0,
        le=100_000,
        description=(
            "Event ids remembered per client connection (the most recent, at least this many), to drop repeats."
        ),
        json_schema_extra={
            "doc": (
                "Events remembered per client connection, to drop one the upstream sends again within one "
                "response: the most recent ones, never fewer than this (up to 1,024 more between the bulk cuts "
                "that keep it cheap). An event is its id and its bytes; events without id are never dropped."
            )
        },
    )
    stale_policy: Literal["forward", "restart"] = Field(
        "forward",
        description=(
            "What to do with a Last-Event-ID that is not in history: 'forward' passes it upstream "
            "unchanged, 'restart' drops it so the upstream starts a fresh stream. Either way the client is "
            "told."
        ),
        json_schema_extra={
            "doc": (
                "A `Last-Event-ID` that is not held: `forward` passes it upstream unchanged, `restart` drops it "
                "so the upstream starts afresh. Either way the response says `sse-resume: miss` and starts with "
                "an SSE comment."
            )
        },
    )
    max_event_bytes: int = Field(
        1024 * 1024,
        ge=64,
        le=1024**3,
        description="Largest event (bytes) parsed and kept; larger ones pass through untouched.",
        json_schema_extra={
            "doc": (
                "Largest event parsed and kept; a larger one passes through untouched and is not recorded. In "
                "keep mode, 8 times this may wait for a slow client (see [Keep mode](keep.md#hostile-traffic))."
            )
        },
    )
    max_sessions: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Sessions kept across the proxy; the least recently used is dropped first.",
        json_schema_extra={"doc": "Sessions kept across the proxy; the least recently used goes first."},
    )
    max_history_bytes: int = Field(
        256 * 1024 * 1024,
        ge=64 * 1024,
        description="Bytes of history kept across all sessions; oldest events of idle sessions go first.",
        json_schema_extra={
            "doc": (
                "Bytes of history across all sessions (an estimate that errs high); oldest events of the least "
                "recently used sessions go first."
            )
        },
    )
    compress_events_from: int = Field(
        1024,
        ge=0,
        le=1024**3,
        description=(
            "Held events of at least this many bytes are kept compressed (zlib) when that saves a quarter or "
            "more; 0: never."
        ),
        json_schema_extra={
            "doc": (
                "Events of at least this many bytes are held compressed (zlib, level 1) when that saves a "
                "quarter of their size or more, and decompressed when replayed: MCP's JSON results of 1-10 KB "
                "take 0.1-0.5 of their size, so about twice as many fit in `sse_max_history_bytes`. The proxy "
                "forwards them as they came either way. `0`: never."
            )
        },
    )
    replay_mode: Literal["auto", "response", "inline"] = Field(
        "auto",
        description=(
            "How missed events are served. 'response': at once, as a complete response ending with a short "
            "retry, so the client reconnects for the live stream (EventSource and MCP clients do). "
            "'inline': in front of the live upstream stream, in one response, once the upstream sends its "
            "first bytes. 'auto': 'response' for clients that accept text/event-stream, 'inline' for the "
            "others (curl)."
        ),
        json_schema_extra={
            "doc": (
                "How a hit is served: `response` (at once, a complete response ending with a short `retry`), "
                "`inline` (in front of the live upstream stream, one response), `auto` (`response` for clients "
                "that send `Accept: text/event-stream`, `inline` for others such as curl)."
            )
        },
    )
    max_replay_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description=(
            "Bytes of one replay, at most; a longer one is served in parts of the events that fit (at least "
            "one). 'response' mode: each part ends with the short retry and the client comes back for the "
            "next. 'inline': the events after the first part are asked of the upstream, after the last one "
            "served."
        ),
        json_schema_extra={
            "doc": (
                "Bytes of one replay, at most. A longer one is served in parts, each of the events that fit (at "
                "least one): in `response` mode a part ends with the short `retry`, and the client comes "
                "straight back for the next; `inline`, the first part goes in front of the stream and the "
                "events after it are asked of the upstream (`Last-Event-ID` of the last event served), as the "
                "comment at its start says. See [serving a hit](theory.md#serving-a-hit)."
            )
        },
    )
    max_replay_bytes_in_flight: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        le=64 * 1024**3,
        description=(
            "Bytes of all replays the proxy holds at once (built, not yet sent). When full, a new replay is "
            "served smaller, down to one event, never refused."
        ),
        json_schema_extra={
            "doc": (
                "Bytes of all replays the proxy holds at once (built and not yet sent; at least "
                "`sse_max_replay_bytes`). When they are full a new replay is served smaller, down to one event, "
                "never refused: past the bound, each further replay holds one event at most."
            )
        },
    )
    replay_retry: int = Field(
        50,
        ge=0,
        le=60_000,
        description="retry (ms) sent at the end of a replay, so the client comes straight back for live events.",
        json_schema_extra={"doc": "`retry` (ms) at the end of a replay response, so the client comes straight back."},
    )
    transcript_bytes: int = Field(
        1024 * 1024,
        ge=0,
        le=1024**3,
        description=(
            "Bytes of each SSE response's events kept on the flow (the most recent, whole events), so the "
            "flow view and saved flows show what was relayed. 0 keeps none."
        ),
        json_schema_extra={
            "doc": (
                "Bytes of each SSE response's events kept on the flow (the most recent, whole events), so the "
                "flow view and saved flows show what was relayed. `0` keeps none."
            )
        },
    )
    transcript_total_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        le=64 * 1024**3,
        description=(
            "Bytes of all open streams' transcripts together; past it, the largest lose their oldest events "
            "first (0: no bound but sse_transcript_bytes each)."
        ),
        json_schema_extra={
            "doc": (
                "Bytes of the transcripts of all open SSE streams together (64 MiB): past it, the largest "
                "transcripts lose their oldest events until all of them hold seven eighths of it. `0`: no bound "
                "but `sse_transcript_bytes` each. (In mitmweb and the console, each open flow also holds a copy "
                "of its transcript while [live](inspecting.md#live-flows), and finished flows keep theirs as "
                "long as the tool keeps the flow.)"
            )
        },
    )
    live_flows: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "Show an open SSE stream's events on its flow as they are relayed, refreshed once a second: "
            "'on', 'off', or 'auto' (on in mitmweb and mitmproxy's console, which show flows; off in "
            "mitmdump)."
        ),
        json_schema_extra={
            "doc": (
                "Show an open SSE stream's events on its flow as they are relayed, refreshed once a second "
                "(only flows whose transcript changed): `on`, `off`, or `auto` (on in mitmweb and mitmproxy's "
                "console, off in mitmdump, which shows no flows). See [live flows](inspecting.md#live-flows)."
            )
        },
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of a Prometheus metrics endpoint (0: none).",
        json_schema_extra={
            "doc": ("Port of a Prometheus metrics endpoint; `0` serves none. See [inspecting](inspecting.md#metrics).")
        },
    )
    metrics_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address the Prometheus endpoint listens on.",
        json_schema_extra={"doc": "Address the metrics endpoint listens on."},
    )
    default_retry: int = Field(
        3000,
        ge=0,
        le=3_600_000,
        description="retry (ms) restored after a replay when the upstream never sent one.",
        json_schema_extra={
            "doc": (
                "`retry` (ms) restored on the client's next stream after a replay, when the upstream never sent one."
            )
        },
    )
    store: str = Field(
        "memory",
        description=(
            "Where history is kept: 'memory' (this proxy only), or a redis:// or rediss:// URL shared by "
            "several proxies (each keeps a local copy in front; writes go behind, lookups ask Redis first)."
        ),
        json_schema_extra={
            "doc": (
                "Where history is kept: `memory` (this proxy only), or a `redis://`, `rediss://` or `unix://` "
                "URL that several proxies share. Each proxy keeps its own copy in front; writes go to Redis "
                "behind the stream, lookups ask Redis first. See [several proxies on one Redis](redis.md)."
            )
        },
    )
    store_timeout: int = Field(
        250,
        ge=1,
        le=60_000,
        description="Milliseconds a lookup waits for Redis before this proxy's own history answers.",
        json_schema_extra={
            "doc": (
                "Milliseconds a lookup waits for Redis before this proxy's own history answers (and Redis is "
                "then left alone until it answers again)."
            )
        },
    )
    store_secret: str = Field(
        "",
        max_length=4096,
        description=(
            "With a Redis store: a secret, the same on every proxy sharing it, that keys the session "
            "digests (so they cannot be checked against guessed session ids or credentials). Memory stores "
            "use a random one."
        ),
        json_schema_extra={
            "doc": (
                "With a Redis store: a secret, the same on every proxy that shares it, keying the digests that "
                "name sessions. Unset, a well-known key is used and a warning says so. A memory store always "
                "uses a random key of its own."
            )
        },
    )
    keep_upstream: bool = Field(
        False,
        description=(
            "Keep mode: the proxy reads SSE upstreams itself, so a reconnecting client gets the replay and "
            "the live stream in one response, the upstream is reconnected while the client's response stays "
            "open, and events keep being recorded while the client is away (see sse_keep_grace)."
        ),
        json_schema_extra={
            "doc": (
                "Keep mode: the proxy reads SSE upstreams itself (GET streams, and POSTs that accept "
                "`text/event-stream`), so a reconnect gets replay and live events in one response, upstream "
                "failures are retried while the client's response stays open, and events are read on while the "
                "client is away. Needs `sse_support_replay=true`. See [keep mode](keep.md)."
            )
        },
    )
    keep_grace: int = Field(
        30,
        ge=0,
        le=86400,
        description="Keep mode: seconds a kept stream is still read after its last client left.",
        json_schema_extra={
            "doc": (
                "Keep mode: seconds a kept stream is still read after its last client left; a client back "
                "within it gets everything."
            )
        },
    )
    keep_max_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        le=1024**3,
        description="Keep mode: bytes of events a kept stream reads with no client before it stops.",
        json_schema_extra={
            "doc": (
                "Keep mode: bytes of events a kept stream reads while no client is attached; past it (or past "
                "`sse_max_event_history` events) it stops, and a returning client resumes from history and then "
                "upstream."
            )
        },
    )
    keep_max_streams: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Keep mode: streams kept at once; further SSE requests are served the usual way.",
        json_schema_extra={"doc": "Keep mode: streams kept at once; further SSE requests are served the usual way."},
    )
    keep_max_queued_bytes: int = Field(
        256 * 1024 * 1024,
        ge=256 * 1024,
        le=64 * 1024**3,
        description=(
            "Keep mode: bytes queued for all clients together; each client's share shrinks as clients come (8 "
            "times sse_max_event_bytes at most, 256 KiB at least), and one past it has its response ended, as too "
            "slow."
        ),
        json_schema_extra={
            "doc": (
                "Keep mode: bytes queued for all clients together (256 MiB), for clients that read slower than "
                "their streams come. Each client may have its share queued: this divided by the number of "
                "clients, 8 times `sse_max_event_bytes` (8 MiB) at most, 256 KiB at least (so past 1,024 clients "
                "the bound is 256 KiB a client). Past its share, a client's response ends between two events with "
                "a comment saying it was too slow, and it resumes from history; what was queued after such an end "
                "is dropped when more clients need the room. See [keep mode](keep.md#hostile-traffic)."
            )
        },
    )
    keep_max_tries: int = Field(
        10,
        ge=1,
        le=1000,
        description="Keep mode: upstream reconnection tries (1 s, 2 s, 4 s ... at most 30 s apart).",
        json_schema_extra={
            "doc": (
                "Keep mode: upstream reconnection tries, 1 s, 2 s, 4 s ... at most 30 s apart, 10% jitter (the "
                "upstream's `retry` replaces the 1 s). After the last, the client's response ends cleanly."
            )
        },
    )
    assign_ids: bool = Field(
        False,
        description=(
            "Keep mode: give events that come without an id one of the proxy's (sse-resume.<stream>.<n>), "
            "so clients of servers without ids can resume. Proxy-made ids are never sent upstream."
        ),
        json_schema_extra={
            "doc": (
                "Keep mode: events without an id get one of the proxy's, `sse-resume.<stream>.<n>`, so clients "
                "of servers without ids can resume. Proxy-made ids are never sent upstream."
            )
        },
    )

    @model_validator(mode="after")
    def _keep_needs_payloads(self) -> Settings:
        if self.keep_upstream and not self.support_replay:
            raise ValueError(
                "sse_keep_upstream needs sse_support_replay=true: events read while the client is away are kept whole"
            )
        if self.max_replay_bytes_in_flight < self.max_replay_bytes:
            raise ValueError("sse_max_replay_bytes_in_flight must be at least sse_max_replay_bytes")
        if self.assign_ids and not self.keep_upstream:
            raise ValueError("sse_assign_ids works in keep mode only: set sse_keep_upstream=true too")
        return self

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        value = value.strip()
        if value == "memory" or value.startswith(("redis://", "rediss://", "unix://")):
            return value
        raise ValueError("must be 'memory' or a redis://, rediss:// or unix:// URL")

    @field_validator("session_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("must be an HTTP header name, such as mcp-session-id")
        return value.lower()

    @field_validator("identity_headers")
    @classmethod
    def _identity_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_patterns(value)

    def limits(self) -> HistoryLimits:
        return HistoryLimits(
            max_events=self.max_event_history,
            ttl=float(self.event_ttl),
            max_sessions=self.max_sessions,
            max_bytes=self.max_history_bytes,
            replay=self.support_replay,
            max_remembered=self.max_remembered_ids,
            compress_from=self.compress_events_from,
        )


def _describe(error: ValidationError, prefix: str) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{prefix}{where}: {message}" if where else message)
    return "; ".join(parts)


class _ClientResilience(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_event_history: int | None = None
    event_ttl: int | None = None
    support_replay: bool | None = None
    dedupe_window: int | None = None


def load_file(path: str | Path) -> dict[str, Any]:
    """Read the ``sse:`` section of a YAML file into option values (names without ``sse_``)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"sse_config: cannot read {path}: {e.strerror or e}") from None
    try:
        doc = YAML(typ="safe").load(text)
    except YAMLError as e:
        raise ConfigError(f"sse_config: {path} is not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict) or not isinstance(doc.get("sse", {}), dict):
        raise ConfigError(f"sse_config: {path} must be a mapping with an 'sse:' section")
    return section_values(doc.get("sse") or {}, "sse_config")


def section_values(section: object, where: str) -> dict[str, Any]:
    """The settings of one ``sse:`` section (already read from YAML), as option values without ``sse_``.

    ``where`` names the section's source in error messages: ``sse_config`` (the file), or ``config.yaml``
    (mitmproxy's own configuration file, whose ``sse:`` block mitmproxy itself hands to nobody).
    """
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: 'sse:' must be a mapping of settings, not {type(section).__name__}")
    section = dict(section)
    values: dict[str, Any] = {}
    resilience = section.pop("client_resilience", None) or {}
    try:
        values.update(_ClientResilience.model_validate(resilience).model_dump(exclude_none=True))
    except ValidationError as e:
        raise ConfigError(_describe(e, f"{where}: sse.client_resilience.")) from None
    unknown = set(section) - set(Settings.model_fields)
    if unknown:
        names = []
        for name in sorted(map(str, unknown)):
            close = difflib.get_close_matches(name, Settings.model_fields, n=1)
            names.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise ConfigError(f"{where}: unknown setting(s) under sse: {', '.join(names)}")
    values.update(section)
    return values


DEFAULT: Final = "default"
BLOCK: Final = "config.yaml sse:"
FILE: Final = "sse_config file"
OPTION: Final = "option"  # --set, ~/.mitmproxy/config.yaml's sse_ keys, or a change at run time


def merge(
    file_values: Mapping[str, Any], option_values: Mapping[str, Any], block_values: Mapping[str, Any] | None = None
) -> Settings:
    """Validate defaults < config.yaml's ``sse:`` block < file values < option values that differ from defaults."""
    return effective(file_values, option_values, block_values)[0]


def effective(
    file_values: Mapping[str, Any], option_values: Mapping[str, Any], block_values: Mapping[str, Any] | None = None
) -> tuple[Settings, dict[str, str]]:
    """As ``merge``, with the source each setting's value came from (``DEFAULT``, ``BLOCK``, ``FILE``, ``OPTION``)."""
    defaults = Settings()
    values: dict[str, Any] = {}
    sources = dict.fromkeys(Settings.model_fields, DEFAULT)
    for layer, prefix, source in (
        (block_values or {}, "config.yaml: sse.", BLOCK),
        (file_values, "sse_config: sse.", FILE),
    ):
        try:
            Settings.model_validate(layer)
        except ValidationError as e:
            raise ConfigError(_describe(e, prefix)) from None
        values.update(layer)
        sources.update(dict.fromkeys(layer, source))
    for name, value in option_values.items():
        if value != getattr(defaults, name):
            values[name] = value
            sources[name] = OPTION
    try:
        return Settings.model_validate(values), sources
    except ValidationError as e:
        raise ConfigError(_describe(e, "sse_")) from None


def shown(settings: Settings) -> dict[str, str]:
    """Every setting as text fit for a log or a command's output: secrets hidden, URL passwords masked."""
    out: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in SECRETS:
            text = "(set)" if value else "(unset)"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple, frozenset, set)):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, str) and "://" in value:
            text = redact_url(value)
        else:
            text = str(value)
        out[name] = text
    return out


SECRETS: Final = frozenset({"store_secret"})

# -- the one table of options ------------------------------------------------------------------------------------
# The model above is it: each field's default, bounds, mitmproxy help (description) and documentation (its "doc")
# make the mitmproxy options (mitmproxy_options) and the table in docs/options.md (options_table; a test fails
# when the two disagree, and `./dev options-table` writes it).

TABLE_START: Final = "<!-- options table: made from sse_resume_core.Settings by `./dev options-table` -->"
TABLE_END: Final = "<!-- end of options table -->"


def _mitmproxy_type(annotation: Any) -> Any:
    """The type mitmproxy knows an option by (it has no Literal or tuple options: those are strings and lists)."""
    if annotation is bool or annotation is int or annotation is str:
        return annotation
    if get_origin(annotation) is Literal:
        return str
    if get_origin(annotation) is tuple:
        return Sequence[str]
    raise TypeError(f"no mitmproxy type for {annotation!r}")


def mitmproxy_options() -> list[tuple[str, Any, Any, str]]:
    """``(option name, mitmproxy type, default, help)`` of every setting, as the addon registers them."""
    options = []
    for name, info in Settings.model_fields.items():
        options.append((f"sse_{name}", _mitmproxy_type(info.annotation), info.default, info.description or ""))
    return options


def _shown_default(value: Any) -> str:
    if value == "":
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def options_table() -> str:
    """The table of docs/options.md, between its markers: every setting, its default and what it does."""
    lines = ["| option | default | meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        shown_default = str(extra.get("default") or _shown_default(info.default))
        lines.append(f"| `sse_{name}` | {shown_default} | {extra.get('doc') or info.description} |")
    lines.append("| `sse_config` | unset | A YAML file with settings under `sse:` (below). |")
    for name, info in FaultSettings.model_fields.items():  # (the fault injection's options, last)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        lines.append(
            f"| `sse_fault_{name}` | {_shown_default(info.default)} | {extra.get('doc') or info.description} |"
        )
    return "\n".join(lines)


def documented_table(text: str) -> str:
    """The options table of a docs/options.md text, between its markers."""
    start = text.index(TABLE_START) + len(TABLE_START)
    return text[start : text.index(TABLE_END, start)].strip("\n")


def write_options_table(path: str) -> None:
    """Put :func:`options_table` between the markers of the file at ``path``."""
    text = Path(path).read_text()
    old = documented_table(text)
    Path(path).write_text(text.replace(old, options_table(), 1))


# -- fault injection: the sse_fault_* options ---------------------------------------------------------------------


class FaultSettings(BaseModel):
    """The fault injection's settings (the ``sse_fault_*`` options, without that prefix), validated.

    Options only: a debugging session's switches, not read from the ``sse:`` file or block. A count or duration
    at 0 is off; ``stall_for`` is the length of each stall that ``stall_after`` starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cut_after: int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description=(
            "Fault injection: cut each SSE stream's client connection after its N-th event, as a network failure "
            "would (the client sees its connection break and reconnects with Last-Event-ID). 0: never."
        ),
        json_schema_extra={
            "doc": (
                "Fault injection: cut each SSE stream's client connection right after its N-th event, as a "
                "network failure would (the client reconnects with `Last-Event-ID`). `0`: never. See [fault "
                "injection](inspecting.md#fault-injection-breaking-streams-on-purpose)."
            )
        },
    )
    cut_every: int = Field(
        0,
        ge=0,
        le=7 * 86400,
        description="Fault injection: cut each SSE stream's client connection S seconds after it began. 0: never.",
        json_schema_extra={
            "doc": "Fault injection: cut each SSE stream's client connection S seconds after its response began. "
            "`0`: never."
        },
    )
    stall_after: int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description=(
            "Fault injection: after every N-th event of an SSE stream, hold the events that follow for "
            "sse_fault_stall_for seconds (they go out with the upstream's first bytes after that). 0: never."
        ),
        json_schema_extra={
            "doc": (
                "Fault injection: after every N-th event of a stream, hold the events that follow for "
                "`sse_fault_stall_for` seconds. `0`: never."
            )
        },
    )
    stall_for: int = Field(
        5,
        ge=1,
        le=3600,
        description="Fault injection: seconds each stall of sse_fault_stall_after holds a stream's events.",
        json_schema_extra={
            "doc": (
                "Fault injection: seconds each stall holds a stream's events (1 to 3600); they go out with the "
                "upstream's first bytes after it."
            )
        },
    )
    repeat_after: int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description=(
            "Fault injection: send every N-th event of an SSE stream twice in a row, to watch the client drop "
            "the copy. 0: never."
        ),
        json_schema_extra={"doc": "Fault injection: send every N-th event of a stream twice in a row. `0`: never."},
    )
    filter: str = Field(
        "",
        description=(
            "Fault injection: the SSE flows that the sse_fault_ schedules apply to, as a mitmproxy filter "
            "expression (such as '~m GET'); all of them when unset."
        ),
        json_schema_extra={
            "doc": (
                "Fault injection: the SSE flows the `sse_fault_` schedules apply to, as a mitmproxy filter "
                "expression (`~m POST`); all when unset."
            )
        },
    )

    @property
    def active(self) -> bool:
        """Whether any fault is scheduled."""
        return bool(self.cut_after or self.cut_every or self.stall_after or self.repeat_after)


def fault_settings(values: Mapping[str, Any]) -> FaultSettings:
    """Validate the fault options' values (names without ``sse_fault_``); a ConfigError names the option."""
    try:
        return FaultSettings.model_validate(values)
    except ValidationError as e:
        raise ConfigError(_describe(e, "sse_fault_")) from None


def fault_mitmproxy_options() -> list[tuple[str, Any, Any, str]]:
    """``(option name, mitmproxy type, default, help)`` of every fault option, as its addon registers them."""
    return [
        (f"sse_fault_{name}", _mitmproxy_type(info.annotation), info.default, info.description or "")
        for name, info in FaultSettings.model_fields.items()
    ]


__all__ += ["FaultSettings", "fault_mitmproxy_options", "fault_settings"]

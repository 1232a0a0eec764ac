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
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sse_resume_core._history import HistoryLimits
from sse_resume_core._identity import check_patterns
from sse_resume_core._logsafe import redact_url

__all__ = ["ConfigError", "Settings", "effective", "load_file", "merge", "section_values", "shown"]

_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP header name (RFC 9110 token)


class ConfigError(ValueError):
    """A setting is invalid; the message names the option and the reason."""


class Settings(BaseModel):
    """Every setting of the addon, validated. Field names are the mitmproxy option names without ``sse_``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_header: str = Field("mcp-session-id", description="request header naming the client's session")
    identity_headers: tuple[str, ...] = Field((), description="header name patterns added to the identity's")
    max_event_history: int = Field(1000, ge=1, le=10_000_000, description="events held per session")
    max_remembered_ids: int = Field(
        100_000, ge=0, le=100_000_000, description="events per session recognised by id and bytes after they go"
    )
    event_ttl: int = Field(300, ge=1, le=7 * 86400, description="seconds an event (and an idle session) is held")
    support_replay: bool = Field(True, description="keep payloads and replay them (false: ids only)")
    dedupe_window: int = Field(100, ge=0, le=100_000, description="ids remembered per connection")
    stale_policy: Literal["forward", "restart"] = Field("forward", description="unknown Last-Event-ID")
    max_event_bytes: int = Field(1024 * 1024, ge=64, le=1024**3, description="largest event parsed and kept")
    max_sessions: int = Field(10_000, ge=1, le=10_000_000, description="sessions held, least recent dropped")
    max_history_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024, description="bytes held across sessions")
    replay_mode: Literal["auto", "response", "inline"] = Field("auto", description="how a hit is served")
    max_replay_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=1024**3, description="bytes of one replay; a larger one is served in parts"
    )
    max_replay_bytes_in_flight: int = Field(
        256 * 1024 * 1024, ge=1024, le=64 * 1024**3, description="bytes of all replays the proxy holds at once"
    )
    replay_retry: int = Field(50, ge=0, le=60_000, description="retry (ms) sent after a replay")
    transcript_bytes: int = Field(1024 * 1024, ge=0, le=1024**3, description="transcript kept per flow")
    transcript_total_bytes: int = Field(
        64 * 1024 * 1024, ge=0, le=64 * 1024**3, description="transcripts of open streams together (0: no bound)"
    )
    live_flows: Literal["auto", "on", "off"] = Field("auto", description="refresh open SSE flows once a second")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus endpoint port (0: off)")
    metrics_host: str = Field("127.0.0.1", min_length=1, description="Prometheus endpoint address")
    default_retry: int = Field(3000, ge=0, le=3_600_000, description="retry (ms) restored when upstream sent none")
    store: str = Field("memory", description="'memory', or a redis:// or rediss:// URL shared by several proxies")
    store_timeout: int = Field(250, ge=1, le=60_000, description="ms a lookup waits for a remote store")
    store_secret: str = Field("", max_length=4096, description="key of session digests shared by proxies")
    keep_upstream: bool = Field(False, description="the proxy reads SSE upstreams itself (keep mode)")
    keep_grace: int = Field(30, ge=0, le=86400, description="seconds a kept stream is read with no client")
    keep_max_bytes: int = Field(16 * 1024 * 1024, ge=1024, le=1024**3, description="bytes read with no client")
    keep_max_streams: int = Field(1000, ge=1, le=1_000_000, description="streams kept at once")
    keep_max_tries: int = Field(10, ge=1, le=1000, description="upstream reconnection tries before giving up")
    assign_ids: bool = Field(False, description="give events without an id one of the proxy's (keep mode)")
    keep_max_queued_bytes: int = Field(
        256 * 1024 * 1024, ge=256 * 1024, le=64 * 1024**3, description="bytes queued for all kept clients together"
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

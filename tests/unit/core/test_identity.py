"""The identity rule: which headers tell users apart, and the key they make with the URL."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_resume_core import ConfigError
from sse_resume_core._config import merge
from sse_resume_core._identity import (
    DEFAULT_IDENTITY_HEADERS,
    MAX_CACHED,
    MAX_PATTERNS,
    IdentityRule,
    check_patterns,
    request_identity,
    session_key,
)

RULE = IdentityRule()
URL = ("https", "api.example.com", 443, "/mcp?stream=1")

# Headers real servers authenticate by, or authenticating gateways name the user in.
CREDENTIALS = [
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "X-API-Key",
    "Api-Key",
    "apikey",
    "X-Auth-Token",
    "X-Auth-Key",
    "X-Goog-Api-Key",
    "X-Goog-IAM-Authorization-Token",
    "PRIVATE-TOKEN",
    "X-Access-Token",
    "X-Amz-Security-Token",
    "X-Vault-Token",
    "X-CSRF-Token",
    "Ocp-Apim-Subscription-Key",
    "X-Functions-Key",
    "X-RapidAPI-Key",
    "X-Client-Secret",
    "X-Session-Id",
    "X-Session-Token",
    "X-Signature",
    "X-JWT-Assertion",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "Remote-User",
    "X-User-Id",
    "mcp-session-id",  # the session header
    # What gateways put in for the user they let through, and more API-key headers (found by an outside attack)
    "X-MS-CLIENT-PRINCIPAL",
    "X-MS-CLIENT-PRINCIPAL-NAME",
    "X-MS-CLIENT-PRINCIPAL-ID",
    "X-Amzn-Oidc-Data",
    "X-Amzn-Oidc-Identity",
    "X-Consumer-Username",
    "X-Consumer-ID",
    "X-Userinfo",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Groups",
    "X-Forwarded-Client-Cert",
    "X-SSL-Client-Cert",
    "Ssl-Client-Cert",
    "X-ARR-ClientCert",
    "X-JFrog-Art-Api",
    "X-IBM-Client-Id",
    "X-Username",
    "X-Userid",
    "X-UID",
    "X-Principal",
    "X-Client-Id",
    "X-Remote-Username",
    "Remote_User",
    "Cookie2",
    "X-Tenant-ID",
    "X-Hasura-Role",
    "DPoP",
    # Found by a later outside attack: identity headers under other words
    "Bearer",
    "X-Sid",
    "Sid",
    "X-Account-Id",
    "X-Customer",
]
# Headers that say nothing of who asks (or change on every reconnect): they must not split one user's requests.
NOT_CREDENTIALS = [
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Cache-Control",
    "Content-Type",
    "Host",
    "Last-Event-ID",
    "MCP-Protocol-Version",
    "Origin",
    "Referer",
    "User-Agent",
    "X-Request-Id",
    "traceparent",
    "Sec-Fetch-Mode",
]


@pytest.mark.parametrize("name", CREDENTIALS)
def test_credential_headers_count_in_any_case(name: str) -> None:
    assert RULE.counts(name) and RULE.counts(name.lower()) and RULE.counts(name.upper())
    assert RULE.counts(name.encode())


@pytest.mark.parametrize("name", NOT_CREDENTIALS)
def test_other_headers_do_not_count(name: str) -> None:
    assert not RULE.counts(name)


def test_last_event_id_never_counts_and_the_session_header_always_does() -> None:
    rule = IdentityRule(["*id*", "last-event-id", "!x-session"], session_header="X-Session")
    assert not rule.counts("Last-Event-ID")
    assert rule.counts("x-session") and rule.counts("X-Request-Id")


def test_patterns_add_headers_and_exclusions_take_them_out() -> None:
    rule = IdentityRule(["X-Shard", "x-zone-*", "!*key*", "!cookie"])
    assert rule.counts("x-shard") and rule.counts("X-Zone-Name") and not rule.counts("x-zones")
    assert not IdentityRule().counts("x-zone-name")  # (the pattern added it)
    assert not rule.counts("x-api-key") and not rule.counts("cookie")
    assert rule.counts("authorization") and rule.counts("x-auth-token")  # the rest of the built-in set stays
    assert rule.patterns == ("x-shard", "x-zone-*", "!*key*", "!cookie")
    assert IdentityRule(["x-?d"]).counts("x-id") and not IdentityRule(["x-?d"]).counts("x-iid")


def test_the_default_set_is_stated_and_valid() -> None:
    assert check_patterns(DEFAULT_IDENTITY_HEADERS) == DEFAULT_IDENTITY_HEADERS
    assert IdentityRule().patterns == ()


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "is not a header name or pattern"),
        ("!", "is not a header name or pattern"),
        ("x api key", "is not a header name or pattern"),
        ("x-[ab]", "is not a header name or pattern"),
        ("x:y", "is not a header name or pattern"),
        ("é", "is not a header name or pattern"),
        ("x" * 257, "longer than 256"),
    ],
)
def test_bad_patterns_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IdentityRule([pattern])
    with pytest.raises(ConfigError, match=f"sse_identity_headers: .*{message}"):
        merge({}, {"identity_headers": [pattern]})


def test_patterns_are_bounded_and_normalised() -> None:
    assert check_patterns([" X-Customer ", "!X-API-*"]) == ("x-customer", "!x-api-*")
    with pytest.raises(ValueError, match=f"at most {MAX_PATTERNS}"):
        check_patterns([f"x-{n}" for n in range(MAX_PATTERNS + 1)])
    with pytest.raises(ValueError, match="not a string"):
        check_patterns([3])  # type: ignore[list-item]
    assert merge({"identity_headers": ["x-from-file"]}, {"identity_headers": ()}).identity_headers == ("x-from-file",)
    assert merge({}, {"identity_headers": ["X-A", "x-b"]}).identity_headers == ("x-a", "x-b")


def key(
    headers: Sequence[tuple[str, str] | tuple[bytes, bytes] | tuple[str, bytes]],
    rule: IdentityRule = RULE,
    secret: bytes | None = None,
) -> str:
    return request_identity(*URL, headers, rule, secret)


ALICE = [("Accept", "text/event-stream"), ("X-API-Key", "alice"), ("Last-Event-ID", "1")]


@pytest.mark.parametrize("name", CREDENTIALS)
def test_another_credential_value_is_another_identity(name: str) -> None:
    assert key([(name, "alice")]) != key([(name, "mallory")])
    assert key([(name, "alice")]) != key([])  # (a missing credential is not an empty one either)
    assert key([(name, "alice")]) != key([(name, "")])


def test_what_does_not_change_the_identity() -> None:
    same: list[list[tuple[str, str] | tuple[bytes, bytes]]] = [
        [("x-api-key", "alice"), ("last-event-id", "7"), ("accept", "*/*")],  # other position, other accept
        [("Last-Event-ID", "1"), ("X-API-KEY", "alice")],  # other order, other case of the name
        [(b"X-API-Key", b"alice")],  # bytes, as mitmproxy's fields are
        [*ALICE, ("User-Agent", "curl/8"), ("X-Request-Id", "r-123")],
    ]
    assert {key(h) for h in same} == {key(ALICE)}


def test_what_changes_the_identity() -> None:
    others: list[list[tuple[str, str] | tuple[str, bytes]]] = [
        [("X-API-Key", "Alice")],  # values are compared as sent
        [("X-API-Key", "alice "), ("X-API-Key", "")],
        [("X-API-Key", "alice"), ("X-API-Key", "alice")],  # each value counts: sent twice is not sent once
        [("X-API-Key", "alice"), ("Cookie", "a=1")],
        [("Api-Key", "alice")],  # the same value under another name
        [("X-API-Key", "alice"), ("mcp-session-id", "s1")],
        [("X-API-Key", "ali"), ("Cookie", "ce")],
        [("X-API-Key", b"alice\xff")],  # bytes that are not UTF-8
        [("X-API-Key", "alice\u00e9")],
    ]
    keys = [key(h) for h in others]
    assert key(ALICE) not in keys and len(set(keys)) == len(keys)
    assert key([("X-API-Key", "alice")], IdentityRule(["!x-api-key"])) == key([])  # excluded: no longer counted


def test_non_ascii_bytes_in_names_and_values() -> None:
    odd = [(b"X-Ap\xc3\xaf-Key", b"\x80\xff"), (b"\xff\xfe", b"v")]
    assert RULE.counts(b"X-Ap\xc3\xaf-Key") and not RULE.counts(b"\xff\xfe")
    assert key(odd) == key(
        [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in odd]
    )
    assert key(odd) != key([(b"X-Ap\xc3\xaf-Key", b"\x80\xfe")])


def test_the_key_is_keyed_and_reveals_nothing() -> None:
    k = key(ALICE)
    assert len(k) == 32 and "alice" not in k
    assert key(ALICE, secret=b"one") == key(ALICE, secret=b"one") != key(ALICE, secret=b"two")
    assert key(ALICE, secret=b"one") != k  # (the process's own secret otherwise)


def test_the_url_is_part_of_the_identity() -> None:
    base = request_identity("https", "api.example.com", 443, "/mcp", ALICE, RULE)
    assert base == request_identity("HTTPS", "API.example.com", 443, "/mcp", ALICE, RULE)
    others = {
        request_identity("http", "api.example.com", 443, "/mcp", ALICE, RULE),
        request_identity("https", "example.com", 443, "/mcp", ALICE, RULE),
        request_identity("https", "api.example.com", 8443, "/mcp", ALICE, RULE),
        request_identity("https", "api.example.com", 443, "/mcp?x=1", ALICE, RULE),
        request_identity("https", "api.example.com", 443, "/MCP", ALICE, RULE),
    }
    assert base not in others and len(others) == 5


_part = st.one_of(st.text(max_size=8), st.binary(max_size=8))


@given(st.lists(_part, max_size=5), st.lists(_part, max_size=5))
def test_different_parts_never_make_one_key(a: list[str | bytes], b: list[str | bytes]) -> None:
    """Parts are length-prefixed: no joining of parts makes another list's input (["a", "b"] is not ["a\\0b"])."""

    def raw(parts: list[str | bytes]) -> list[bytes]:
        return [p.encode("utf-8", "surrogateescape") if isinstance(p, str) else p for p in parts]

    same = raw(a) == raw(b)
    assert (session_key(None, *URL, a) == session_key(None, *URL, b)) == same


def test_joined_parts_are_not_split_parts() -> None:
    assert session_key(None, *URL, ["a", "b"]) != session_key(None, *URL, ["a\x00b"])
    h = [("X-API-Key", "a\x00b")]
    assert key(h) != key([("X-API-Key", "a"), ("X-API-Key", "b")])


def test_invented_header_names_cannot_grow_the_rule() -> None:
    rule = IdentityRule()
    expected = key([("X-API-Key", "alice")], rule)
    for n in range(3 * MAX_CACHED):
        assert rule.credentials([(f"x-invented-{n}", "v"), (f"x-invented-{n}-key", "v")]) == [
            b"%d:x-invented-%d-key=v" % (len(f"x-invented-{n}-key"), n)
        ]
        assert len(rule._cache) <= MAX_CACHED
    assert key([("X-API-Key", "alice")], rule) == expected  # (verdicts after a start-over are the same)

"""Who a request is: the one rule that says which history, and which kept stream, a request may read.

A request's identity is a keyed digest of its upstream URL (scheme, host, port, path and query) and of every
request header that tells users apart:

* the session header (``sse_session_header``, ``mcp-session-id`` by default);
* each header whose name, compared case-insensitively, matches one of the identity patterns: the built-in
  :data:`DEFAULT_IDENTITY_HEADERS` (``cookie``, ``*auth*``, ``*token*``, ``*key*`` ...), plus the patterns of
  ``sse_identity_headers``, minus the headers a ``!pattern`` there matches.

``Last-Event-ID`` never counts: it is a position in a stream, not an identity. Every value of a header counts
(a header sent twice counts twice), as the bytes it came with; the order of the headers does not.

The rule is safe by default: it would rather split one user's requests into two histories (a header that
changes between reconnects, such as a per-request signature, costs that client its replays: its reconnects are
forwarded upstream and told ``miss``) than put two users' requests into one (which would replay one's events to
the other). The history, the replay answered without the upstream and keep mode's attach to a kept stream all
use the one key made here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
from collections.abc import Iterable
from typing import Final

__all__ = [
    "DEFAULT_IDENTITY_HEADERS",
    "IdentityRule",
    "check_patterns",
    "digest",
    "request_identity",
    "session_key",
]

DEFAULT_IDENTITY_HEADERS: Final[tuple[str, ...]] = (
    "cookie",
    "*auth*",  # Authorization, Proxy-Authorization, X-Auth-Token, X-Goog-IAM-Authorization-Token, X-Auth-Key
    "*token*",  # X-Access-Token, PRIVATE-TOKEN, X-Amz-Security-Token, X-CSRF-Token, X-Vault-Token
    "*key*",  # X-API-Key, Api-Key, apikey, X-Goog-Api-Key, Ocp-Apim-Subscription-Key, X-Functions-Key
    "*secret*",  # X-Client-Secret
    "*pass*",  # X-Password, X-Passwd
    "*cred*",  # X-Credentials
    "*session*",  # X-Session-Id, X-Session-Token
    "*signature*",  # X-Signature, Signature, Signature-Input
    "*jwt*",  # X-JWT-Assertion
    "*-user",  # X-Forwarded-User, Remote-User, X-Remote-User (an authenticating gateway's word for the user)
    "*-user-*",  # X-User-Id, X-Auth-Request-User-... (but not User-Agent)
    "*email*",  # X-Forwarded-Email
    # What authenticating gateways in front of a server put in for the user they let through:
    "*username*",  # X-Username, X-Forwarded-Preferred-Username (oauth2-proxy), X-Consumer-Username (Kong)
    "*userid*",  # X-Userid
    "*userinfo*",  # X-Userinfo (Kong's OIDC plugin)
    "*_user",  # Remote_User
    "*-uid",  # X-UID
    "*principal*",  # X-MS-CLIENT-PRINCIPAL, -NAME, -ID (Azure App Service), X-Principal
    "*oidc*",  # X-Amzn-Oidc-Data, X-Amzn-Oidc-Identity (AWS load balancers)
    "*consumer*",  # X-Consumer-ID, X-Consumer-Custom-ID (Kong)
    "*groups*",  # X-Forwarded-Groups (oauth2-proxy)
    "*role*",  # X-Hasura-Role
    "*tenant*",  # X-Tenant-ID
    "*client-id*",  # X-Client-Id, X-IBM-Client-Id (IBM API Connect)
    "*cert*",  # X-Forwarded-Client-Cert (Envoy, Istio), X-SSL-Client-Cert, Ssl-Client-Cert, X-ARR-ClientCert
    "*-api",  # X-JFrog-Art-Api (Artifactory's API key)
    "*bearer*",  # Bearer, X-Bearer (a token under a name of its own)
    "*sid",  # Sid, X-Sid (a session id under a short name)
    "*account*",  # X-Account-Id, X-Account
    "*customer*",  # X-Customer, X-Customer-Id
    "cookie2",
    "dpop",  # a proof of possession bound to the client's key
)
"""Header name patterns that always count (``fnmatch`` globs, matched against the lower-cased name)."""

MAX_PATTERNS: Final = 256
MAX_PATTERN_LENGTH: Final = 256
MAX_CACHED: Final = 1024
"""Header names whose verdict a rule remembers (matching a name costs microseconds; names repeat); then it starts
over, so names invented by a client cannot grow it."""
NEVER: Final = frozenset({"last-event-id"})
"""Headers that never count, whatever a pattern says: a client's position changes with every reconnect."""

# An HTTP header name (RFC 9110 token) with the glob's ``?``; ``*`` is a token character already. A leading ``!``
# makes it an exclusion.
_PATTERN: Final = re.compile(r"^!?[!#$%&'*+\-.^_`|~0-9A-Za-z?]+$")

# Digests are keyed with a secret of this process, so a digest in a log or a key cannot be checked against guessed
# session ids or credentials (and nothing keyed by it outlives the process).
_DIGEST_KEY: Final = secrets.token_bytes(32)


def digest(value: str | bytes, size: int = 12, secret: bytes | None = None) -> str:
    """A short, stable, non-reversible name for a value, for logs and keys (never the value itself).

    Keyed with ``secret``, or with this process's own secret when none is given.
    """
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return hashlib.blake2b(data, digest_size=size, key=secret or _DIGEST_KEY).hexdigest()


def check_patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    """``patterns`` lower-cased and checked: header names or globs (``*``, ``?``), each maybe led by ``!``.

    Raises ValueError, saying which one is wrong and why.
    """
    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ValueError(f"{pattern!r} is not a string")
        p = pattern.strip().lower()
        if len(p) > MAX_PATTERN_LENGTH:
            raise ValueError(f"a pattern is longer than {MAX_PATTERN_LENGTH} characters")
        if not _PATTERN.match(p) or p == "!":
            raise ValueError(
                f"{pattern!r} is not a header name or pattern (letters, digits, -_.!#$%&'+^`|~, * and ?; "
                "a leading ! excludes)"
            )
        out.append(p)
    if len(out) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} patterns")
    return tuple(out)


def _compile(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(parts)) if parts else None


def _bytes(value: str | bytes) -> bytes:
    # As mitmproxy turns header bytes into text (UTF-8, surrogateescape): a str and its bytes give one identity.
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


class IdentityRule:
    """Which request headers tell users apart (see the module's docstring). Its patterns are fixed: build one per
    setting."""

    __slots__ = ("_cache", "_exclude", "_include", "patterns", "session_header")

    def __init__(self, patterns: Iterable[str] = (), session_header: str = "mcp-session-id") -> None:
        """``patterns``: those of ``sse_identity_headers`` (added to the built-in ones; ``!pattern`` excludes).

        Raises ValueError for a pattern :func:`check_patterns` refuses.
        """
        self.patterns = check_patterns(patterns)
        include = [*DEFAULT_IDENTITY_HEADERS, *(p for p in self.patterns if not p.startswith("!"))]
        self._include = _compile(include)
        self._exclude = _compile(p[1:] for p in self.patterns if p.startswith("!"))
        self.session_header = session_header.lower()
        self._cache: dict[bytes, bool] = {}  # lower-cased name -> counts, at most MAX_CACHED

    def counts(self, name: str | bytes) -> bool:
        """True when a header of this name is part of a request's identity (the name in any case)."""
        n = (name.decode("latin-1") if isinstance(name, bytes) else name).lower()
        if n == self.session_header:
            return True
        if n in NEVER or self._include is None or not self._include.match(n):
            return False
        return self._exclude is None or not self._exclude.match(n)

    def credentials(self, headers: Iterable[tuple[str | bytes, str | bytes]]) -> list[bytes]:
        """The headers of ``headers`` (``(name, value)`` pairs, as sent) that count, each as one unambiguous
        ``<length of name>:<lower-cased name>=<value>``, sorted. Runtime complexity: O(headers).
        """
        out = []
        cache = self._cache
        for name, value in headers:
            n = _bytes(name).lower()  # (bytes.lower() changes ASCII letters only, as header names compare)
            counts = cache.get(n)
            if counts is None:
                if len(cache) >= MAX_CACHED:
                    cache.clear()
                counts = cache[n] = self.counts(n)
            if counts:
                out.append(b"%d:%b=%b" % (len(n), n, _bytes(value)))
        out.sort()
        return out


def session_key(
    session_id: str | None,
    scheme: str,
    host: str,
    port: int,
    path: str,
    credentials: Iterable[str | bytes] = (),
    secret: bytes | None = None,
) -> str:
    """The digest that names a history: of a session id (if any), the upstream URL and credentials.

    Each part is length-prefixed, so no two different lists of parts make the same input. Keyed with ``secret``
    (or this process's own): proxies that share a history must share the secret too (a shared store provides
    one). :func:`request_identity` says which parts a request has.
    """
    parts = [session_id or "", scheme.lower(), host.lower(), str(port), path, *credentials]
    data = b"".join(b"%d:%b" % (len(p), p) for p in map(_bytes, parts))
    return digest(data, 16, secret)


def request_identity(
    scheme: str,
    host: str,
    port: int,
    path: str,
    headers: Iterable[tuple[str | bytes, str | bytes]],
    rule: IdentityRule,
    secret: bytes | None = None,
) -> str:
    """The history (and kept streams) a request belongs to: its upstream URL, ``path`` with its query, and the
    headers of ``headers`` that ``rule`` counts. Two requests share one only when all of those are equal.
    """
    return session_key(None, scheme, host, port, path, rule.credentials(headers), secret)

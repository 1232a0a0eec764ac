"""What log lines may say about data: tracebacks without messages, id digests that do not link sessions."""

from __future__ import annotations

import h11

from sse_resume_core._logsafe import id_digest, redact_url, safe_traceback, withheld


def _raise_chained() -> None:
    key, value = "-".join(["SECRET", "KEY"]), "-".join(["SECRET", "VALUE"])  # (not in the source lines shown)
    empty: dict[str, str] = {}
    try:
        empty[key]
    except KeyError as e:
        raise ValueError(value) from e


def test_a_traceback_keeps_frames_and_types_and_withholds_messages() -> None:
    try:
        _raise_chained()
    except ValueError as e:
        text = safe_traceback(e)
    assert "SECRET-VALUE" not in text and "SECRET-KEY" not in text
    assert "KeyError (message withheld: 12 characters" in text
    assert "ValueError (message withheld: 12 characters" in text
    assert "direct cause" in text and "_raise_chained" in text and text.startswith("Traceback")


def test_an_exception_without_a_message_is_named_alone() -> None:
    assert safe_traceback(RuntimeError()) == "RuntimeError"
    assert safe_traceback(h11.RemoteProtocolError("x")).startswith("h11._util.RemoteProtocolError (message withheld")


def test_withheld_text_is_a_size_and_a_digest() -> None:
    # (a text with letters no hex digest has: "abc" itself turned up inside a digest in a CI run, by chance)
    assert withheld("secret").startswith("6 characters, digest ") and "secret" not in withheld("secret")
    assert withheld("secret") == withheld("secret") != withheld("secrets")


def test_id_digests_are_stable_in_a_session_and_unrelated_across_sessions() -> None:
    assert id_digest("session-a", "42") == id_digest("session-a", "42")
    assert id_digest("session-a", "42") != id_digest("session-b", "42")
    assert id_digest("session-a", "42") != id_digest("session-a", "43")


def test_url_passwords_never_reach_logs() -> None:
    assert redact_url("redis://user:hunter2@example:6379/0") == "redis://user:***@example:6379/0"
    assert redact_url("rediss://:hunter2@example/1") == "rediss://:***@example/1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"

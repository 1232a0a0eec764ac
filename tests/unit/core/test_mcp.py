"""The MCP rules (sse_resume_core._mcp): what each protocol version gets, as data. How the shell applies them is
in shell/test_resume.py and shell/test_sessions.py."""

from __future__ import annotations

import pytest

from sse_resume_core._mcp import PROTOCOL_VERSIONS, treatment


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (None, "serve"),
        ("", "serve"),
        ("2024-11-05", "pass"),
        ("2025-03-26", "serve"),
        ("2025-06-18", "serve"),
        ("2025-11-25", "serve"),
        ("2026-01-01", "serve"),  # between known versions: the rule of the one before
        ("2026-07-28", "pass"),
        ("2027-03-01", "pass"),  # a future version inherits the newest rule
        ("2024-01-01", "serve"),
        (" 2026-07-28 ", "pass"),
    ],
)
def test_protocol_versions(version: str | None, expected: str) -> None:
    assert treatment(version) == expected


def test_versions_are_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # A new version is one line in the table: it rules that version and those after it, nothing before.
    monkeypatch.setitem(PROTOCOL_VERSIONS, "2027-01-01", "serve")
    assert (treatment("2027-01-01"), treatment("2027-06-01")) == ("serve", "serve")
    assert (treatment("2026-07-28"), treatment("2026-12-31")) == ("pass", "pass")

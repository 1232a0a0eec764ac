"""An open stream as fault injection sees it (addon/sse_resume_shell/_faultstream.py): what a cut leaves on the
flow, and where the faults' sentence goes in its comment."""

from __future__ import annotations

from fault_harness import EVENTS
from sse_resume_shell._faultstream import _placed, _without_last_events


def test_a_flows_events_after_its_cut_are_taken_off_it() -> None:
    stream = b": hi\n\n" + b"".join(EVENTS[:4]) + b": bye\n\n"
    assert _without_last_events(stream, 1) == b": hi\n\n" + b"".join(EVENTS[:3])
    assert _without_last_events(stream, 0) == b": hi\n\n" + b"".join(EVENTS[:4])
    assert _without_last_events(stream, 4) == _without_last_events(stream, 9) == b""


# -- the comment -----------------------------------------------------------------------------------------------


def test_the_faults_sentence_goes_before_the_resume_addons_and_survives_its_replacement() -> None:
    assert _placed("", "", "F1", "") == "F1"
    assert _placed("user", "", "F1", "") == "user\nF1"
    assert _placed("user\nN1", "", "F1", "N1") == "user\nF1\nN1"
    assert _placed("N1", "", "F1", "N1") == "F1\nN1"
    assert _placed("user\nF1\nN1", "F1", "F2", "N1") == "user\nF2\nN1"  # replaced where it is

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import STARTED_GROUPS, live_processes, upstream


@pytest.fixture(scope="module")
def upstream_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The demo upstream, one per test module, 20 events a second unless a test's query says otherwise."""
    with upstream(tmp_path_factory.mktemp("upstream"), interval=0.05) as port:
        yield port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder starts real processes: marked so that ``-m "not e2e"`` runs the unit tests alone."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A test run leaves no process behind: anything still alive in a group the harness started fails the run."""
    left = live_processes(STARTED_GROUPS)
    if left:
        for group in STARTED_GROUPS:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        print("\nprocesses left behind by the tests:\n  " + "\n  ".join(left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

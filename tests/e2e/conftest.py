from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import STARTED_GROUPS, live_groups, live_processes, upstream


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


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """A test module leaves no process behind: anything it started that is still alive once its tests and
    fixtures are done is killed, and fails the module's last test (checked per module, so per worker too when
    the tests run in several processes)."""
    before = set(STARTED_GROUPS)
    yield
    groups = STARTED_GROUPS - before
    left = live_processes(groups)
    if left:
        for group in live_groups(groups):  # (only groups still holding this run's processes: ids are reused)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        pytest.fail("processes left behind by the tests:\n  " + "\n  ".join(left))

"""The order the test modules run in: the longest first.

``./dev test`` runs the suite in several processes, each taking one whole module at a time (``--dist loadfile``,
in collection order, ``--no-loadscope-reorder``). Were a long module handed out last, one process would run it
alone at the end while the others sat idle; handed out first, the long ones run side by side and the short ones
fill in around them. Needs nothing but pytest (the unit tests run without the end-to-end dependencies).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).parent

# The unit tests' helper modules, shared between their files (tests/unit/*_harness.py): their asserts are rewritten
# as the tests' are.
pytest.register_assert_rewrite("shell_harness", "fault_harness")

# The longest modules, longest first, by their time in a run of the whole suite (``--durations=0``, summed per
# module: mostly the processes they start and the streams they wait on). The others follow, the end-to-end ones
# first, then those with the most tests.
LONGEST = (
    "e2e/test_fault_injection_e2e.py",
    "e2e/test_keep_e2e.py",
    "e2e/test_invariant_e2e.py",
    "e2e/test_redis_writes_e2e.py",
    "e2e/test_migration_e2e.py",
    "e2e/test_live_flows_e2e.py",
    "e2e/test_schedules_e2e.py",
    "e2e/test_options_e2e.py",
    "unit/core/test_resume.py",
    "e2e/test_identity_e2e.py",
    "e2e/test_encoding_e2e.py",
    "e2e/test_replay_memory_e2e.py",
    "e2e/test_mcp_e2e.py",
    "e2e/test_resume_e2e.py",
    "e2e/test_clients_e2e.py",
    "e2e/test_redis_e2e.py",
    "e2e/test_walkthrough_e2e.py",
    "e2e/test_load_e2e.py",
    "unit/core/test_parser.py",
    "e2e/test_attack_e2e.py",
    "e2e/test_keep_queues_e2e.py",
    "e2e/test_faults_e2e.py",
    "e2e/test_install_e2e.py",
    "e2e/test_keep_hostile_e2e.py",
    "unit/core/test_history.py",
    "e2e/test_observe_e2e.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def module(item: pytest.Item) -> str:
        return item.path.relative_to(HERE).as_posix() if HERE in item.path.parents else str(item.path)

    sizes = Counter(module(item) for item in items)
    rank = {name: i for i, name in enumerate(LONGEST)}
    position = {id(item): i for i, item in enumerate(items)}
    # (a stable order: a module's tests stay together and in their own order)
    items.sort(
        key=lambda item: (
            rank.get(module(item), len(rank)),
            not module(item).startswith("e2e/"),
            -sizes[module(item)],
            position[id(item)],
        )
    )

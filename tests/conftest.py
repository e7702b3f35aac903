"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture
def flower_identity() -> Iterator[None]:
    """Flower's task identity for Messages built outside an engine, restored afterwards."""
    # The private slots, since the public getters raise while unset (their normal state).
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, SUPERLINK_NODE_ID
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved

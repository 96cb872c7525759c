"""Readers of what the session's Prefect server recorded, shared by the Prefect test modules
(``from prefect_support import read_task_run``; the fixtures are in this folder's ``conftest.py``)."""

from __future__ import annotations

import asyncio
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import TaskRun


def read_task_run(task_run_id: str) -> TaskRun:
    """The task run with this id, as the Prefect server has it."""
    async def read() -> TaskRun:
        async with get_client() as client:
            return await client.read_task_run(UUID(task_run_id))

    return asyncio.run(read())

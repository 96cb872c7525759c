"""Readers of what the session's Prefect server recorded, shared by the Prefect test modules
(``from prefect_support import read_task_run``; the fixtures are in this folder's ``conftest.py``)."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import TaskRun
from prefect.exceptions import ObjectNotFound

#: How long the server may take to record a task run it has been told about.
RECORDED_WITHIN_S = 30.0


def read_task_run(task_run_id: str) -> TaskRun:
    """The task run with this id, as the Prefect server has it.

    Prefect 3 reports task runs to the server as events, which the server records on its own
    schedule: right after a flow returns, a loaded server may not have a task run yet. The read
    is repeated until the server has it, for at most ``RECORDED_WITHIN_S`` (then it raises)."""
    async def read() -> TaskRun:
        deadline = time.monotonic() + RECORDED_WITHIN_S
        async with get_client() as client:
            while True:
                try:
                    return await client.read_task_run(UUID(task_run_id))
                except ObjectNotFound:
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(0.05)

    return asyncio.run(read())

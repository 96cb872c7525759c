"""Prefect fixtures: every test in this folder runs against the session's Prefect server
(``prefect_server`` in ``tests/conftest.py``, which also points ``PREFECT_HOME`` at a scratch
folder), with readers for what the tracelet tasks published to it (markdown artifacts through
the client, events through the server's event stream).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import Artifact
from prefect.events import Event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter

from tracelet_core import ArtifactStore


class EventLog:
    """Every ``tracelet.*``, ``prefect.asset.*`` and flow-run-scheduled event the server streams."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="tracelet-test-events", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the event stream did not connect within 60 s")
        if self._failure is not None:
            raise RuntimeError("the event stream failed") from self._failure

    def _run(self) -> None:
        async def listen() -> None:
            self._task = asyncio.current_task()
            names = EventNameFilter(prefix=["tracelet.", "prefect.asset.", "prefect.flow-run.Scheduled"])
            event_filter = EventFilter(event=names)
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    self._ready.set()
                    async for event in subscriber:
                        with self._changed:
                            self._events.append(event)
                            self._changed.notify_all()
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # noqa: BLE001 - surfaced to the waiting test
                self._failure = exc
            finally:
                self._ready.set()
                with self._changed:
                    self._changed.notify_all()

        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(listen())
        finally:
            self._loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)

    def wait(self, match: Callable[[Event], bool], count: int = 1, timeout: float = 60) -> list[Event]:
        """The events that ``match``, once there are ``count`` of them (fails after ``timeout``)."""

        def found() -> list[Event]:
            return [e for e in self._events if match(e)]

        with self._changed:
            done = self._changed.wait_for(lambda: len(found()) >= count or self._failure is not None, timeout)
            if self._failure is not None:
                raise RuntimeError("the event stream failed") from self._failure
            assert done, f"only {len(found())} of {count} matching events within {timeout} s: {found()}"
            return found()

    def matching(self, match: Callable[[Event], bool]) -> list[Event]:
        with self._changed:
            return [e for e in self._events if match(e)]


@pytest.fixture(scope="session", autouse=True)
def on_the_prefect_server(prefect_server: None) -> None:
    """Every test here talks to the session's temporary Prefect server."""


@pytest.fixture(scope="session")
def event_log(prefect_server: None) -> Iterator[EventLog]:
    log = EventLog()
    log.start()
    yield log
    log.stop()


@pytest.fixture
def store() -> Iterator[ArtifactStore]:
    """The store tracelet tasks log to by default (``TRACELET_STORE_URI``, set per test)."""
    with ArtifactStore.open() as opened:
        yield opened


@pytest.fixture
def prefect_artifacts() -> Callable[[str], list[Artifact]]:
    """``prefect_artifacts(key)``: the Prefect artifacts with that key, oldest first, read
    through Prefect's client (once this process's publisher has sent what it holds)."""
    from tracelet_prefect._ui import drain

    def read(key: str) -> list[Artifact]:
        assert drain(60), "the markdown artifacts were not published within 60 s"
        async def query() -> list[Artifact]:
            async with get_client() as client:
                return await client.read_artifacts(
                    artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

        return sorted(asyncio.run(query()), key=lambda a: str(a.created))

    return read

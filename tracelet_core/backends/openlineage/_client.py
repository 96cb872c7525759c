"""The OpenLineage client as the export uses it: configured the OpenLineage way, failing fast.

``open_client`` builds the ``openlineage-python`` client from the environment
(``OPENLINEAGE_URL``, ``OPENLINEAGE__TRANSPORT__*``, ``openlineage.yml``) and refuses its
console fallback. An HTTP transport is bounded: no retry starts after the delivery's time
limit, and a refused connection is not retried at all (a lineage server that is down costs one
connection attempt; the event stays in the outbox for ``tracelet sync``).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from openlineage.client import OpenLineageClient
from openlineage.client.transport.http import HttpTransport
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from ..._backends import sdk_errors
from ..._errors import ConfigurationError

if TYPE_CHECKING:
    from types import TracebackType

    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

#: What the client raises when a transport cannot deliver.
CLIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, ValueError)

_client_lock = threading.Lock()


@contextmanager
def _environ_kept(prefix: str = "OPENLINEAGE__") -> Iterator[None]:
    """Undo what the client writes into ``os.environ`` while it is built (it copies
    ``OPENLINEAGE_URL`` into ``OPENLINEAGE__TRANSPORT__TRANSPORTS__*`` variables)."""
    before = {key: value for key, value in os.environ.items() if key.startswith(prefix)}
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(prefix) and k not in before]:
            del os.environ[key]
        os.environ.update(before)


class _ConsoleFallbackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Couldn't find any OpenLineage transport configuration")


@contextmanager
def _no_console_fallback_warning() -> Iterator[None]:
    """Silence the client's warning that it falls back to printing events: tracelet refuses
    that fallback with a ``ConfigurationError`` of its own."""
    client_logger = logging.getLogger("openlineage.client.client")
    quiet = _ConsoleFallbackFilter()
    client_logger.addFilter(quiet)
    try:
        yield
    finally:
        client_logger.removeFilter(quiet)


class _DeadlineRetry(Retry):
    """urllib3's retries, but none that would start after ``deadline`` (``time.monotonic``)."""

    deadline: float = math.inf

    def new(self, **kw: Any) -> _DeadlineRetry:
        retry = super().new(**kw)
        retry.deadline = self.deadline
        return retry

    def increment(self, method: str | None = None, url: str | None = None,
                  response: BaseHTTPResponse | None = None, error: Exception | None = None,
                  _pool: ConnectionPool | None = None,
                  _stacktrace: TracebackType | None = None) -> _DeadlineRetry:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if time.monotonic() + retry.get_backoff_time() >= self.deadline:
            raise MaxRetryError(_pool, url or "", error) from error  # type: ignore[arg-type]
        return retry


def _bound_to(transport: Any, seconds: float | None) -> None:
    """Keep an HTTP transport's requests and retries within ``seconds`` from now (so an
    attempt the outbox gave up on does not deliver later behind its back), and give up on a
    refused connection at once."""
    if not isinstance(transport, HttpTransport) or transport.config.adapter is not None:
        return
    retry = _DeadlineRetry(**{**transport.config.retry, "connect": 0})
    if seconds is not None:
        retry.deadline = time.monotonic() + seconds
        transport.timeout = min(transport.timeout, seconds)
    transport.config.adapter = HTTPAdapter(max_retries=retry)


def open_client(seconds: float | None = None) -> OpenLineageClient:
    """The OpenLineage client configured from the environment (``OPENLINEAGE_URL``,
    ``OPENLINEAGE__TRANSPORT__*``, ``openlineage.yml``); HTTP bounded to ``seconds``.

    Raises ``ConfigurationError`` when no transport is configured (the client would print
    the events to its console instead)."""
    with _client_lock, _environ_kept(), _no_console_fallback_warning(), \
            sdk_errors("openlineage", "configuring the client", CLIENT_ERRORS):
        client = OpenLineageClient()
    if client.transport.kind == "console" and not (client.config.transport or {}).get("type"):
        raise ConfigurationError(
            "no OpenLineage transport is configured: set OPENLINEAGE_URL (e.g. http://localhost:5000 "
            "for Marquez), OPENLINEAGE__TRANSPORT__TYPE=... or write an openlineage.yml")
    _bound_to(client.transport, seconds)
    return client


def send(client: OpenLineageClient, payload: dict[str, Any], what: str) -> None:
    """Send one event, as stored (a JSON object), through the client's transport."""
    with sdk_errors("openlineage", f"emitting {what}", CLIENT_ERRORS):
        client.transport.emit(payload)  # type: ignore[arg-type]  # the transports serialize dicts as is

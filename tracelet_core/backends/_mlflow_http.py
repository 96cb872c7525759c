"""MLflow's HTTP retries and timeout bounded by a delivery's time limit (part of the MLflow backend).

MLflow reads ``MLFLOW_HTTP_REQUEST_*`` from the environment on each request, and its
defaults retry for minutes (7 retries with exponential back-off, 120 s per request); while
tracelet's own calls run, :func:`bounded_http` sets them to one retry, no back-off and a
quarter of the limit per request, and restores them when the last such call ends. Variables
the user set are kept.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DEFAULT_TIMEOUT", "bounded_http"]

DEFAULT_TIMEOUT = 10.0
#: MLflow's HTTP settings tracelet bounds for its own calls (unless the user set them).
_HTTP_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
             "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT")
_http_lock = threading.Lock()
_http_users = 0
_http_saved: dict[str, str | None] = {}


@contextmanager
def bounded_http(timeout: float | None) -> Iterator[None]:
    """MLflow's HTTP retries and timeout bounded by ``timeout`` for the calls inside.

    MLflow reads them from the environment on each request (its defaults retry for minutes:
    7 retries with exponential back-off, 120 s per request), so they are set while tracelet's
    calls run and restored when the last one ends; variables the user set are kept."""
    global _http_users
    limit = DEFAULT_TIMEOUT if timeout is None else timeout
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
              "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(limit / 4)))}
    with _http_lock:
        if _http_users == 0:
            _http_saved.clear()
            for key in _HTTP_ENV:
                if key not in os.environ:
                    _http_saved[key] = None
                    os.environ[key] = wanted[key]
        _http_users += 1
    try:
        yield
    finally:
        with _http_lock:
            _http_users -= 1
            if _http_users == 0:
                for key in _http_saved:
                    os.environ.pop(key, None)
                _http_saved.clear()

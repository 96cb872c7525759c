"""A switch that keeps tracelet's own ``torch.save`` calls out of automagic capture.

It lives apart from ``_automagic`` so the serializers can use it without importing the
capture machinery (which imports the artifact builder, which imports the serializers).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_suppressed: contextvars.ContextVar[bool] = contextvars.ContextVar("tracelet_automagic_off", default=False)


@contextlib.contextmanager
def suppress_capture() -> Iterator[None]:
    """Within this block (this thread or task), ``torch.save`` calls are not captured."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def capture_suppressed() -> bool:
    return _suppressed.get()

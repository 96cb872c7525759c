"""tracelet errors turned into Dagster ``Failure``s, with the tracelet error chained.

A ``Failure`` shows its description and metadata in the Dagster UI and keeps the cause in
``__cause__``. Errors that a retry cannot fix (bad values, unknown refs, corrupt blobs, pickle
refused, bad configuration) fail the step at once, whatever its ``RetryPolicy``; the others
(``StorageError``: a store that kept failing; ``BackendError``) are left to the policy, as are
errors that are not tracelet's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dagster import Failure

from tracelet_core import (
    ArtifactNotFoundError,
    ConfigurationError,
    IntegrityError,
    InvalidArtifactError,
    TraceletError,
    UnsafeDeserializationError,
)

_NOT_RETRYABLE = (ArtifactNotFoundError, ConfigurationError, IntegrityError, InvalidArtifactError,
                  UnsafeDeserializationError)


def tracelet_failure(action: str, error: TraceletError) -> Failure:
    metadata: dict[str, str | list[str]] = {"tracelet/error": type(error).__name__}
    if isinstance(error, IntegrityError) and error.problems:
        metadata["tracelet/problems"] = list(error.problems)
    return Failure(description=f"tracelet could not {action}: {error}", metadata=metadata,
                   allow_retries=not isinstance(error, _NOT_RETRYABLE))


@contextmanager
def failing_step_on_tracelet_error(action: str) -> Iterator[None]:
    """Re-raise a ``TraceletError`` as a ``Failure`` saying what tracelet was doing."""
    try:
        yield
    except TraceletError as error:
        raise tracelet_failure(action, error) from error

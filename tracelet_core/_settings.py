"""``TraceletSettings``: every ``TRACELET_*`` environment variable, read by pydantic-settings.

List settings accept a comma-separated string (``TRACELET_BACKENDS=mlflow,wandb``) or a JSON
list; ``TRACELET_STORAGE_OPTIONS`` is a JSON object handed to fsspec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ._errors import ConfigurationError

DEFAULT_STORE_URI = "~/.tracelet/store"


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not a JSON list: {text!r}") from exc
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class TraceletSettings(BaseSettings):
    """Settings from arguments, then ``TRACELET_*`` environment variables, then defaults."""

    model_config = SettingsConfigDict(env_prefix="TRACELET_", extra="ignore", validate_default=True)

    store_uri: str = DEFAULT_STORE_URI
    catalog_url: str | None = None
    backends: Annotated[list[str], NoDecode] = Field(default_factory=list)
    enable_artifacts: bool = True
    automagic_artifacts: bool = False
    watch_filesystem: bool = False
    artifact_watch_dirs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_pickle: bool = False
    storage_options: dict[str, Any] | None = None
    #: Where verified local copies (``LoggedArtifact.path``) are kept; default inside a local
    #: store, or ``~/.cache/tracelet`` for a remote one.
    cache_dir: str | None = None
    #: Bound of the local cache of remote blobs (least recently used are evicted).
    cache_max_bytes: int = 10 * 1024**3
    #: Seconds between scans of watched folders, and how long a file must stay unchanged.
    watch_interval: float = 1.0
    #: Consecutive scans that must find a watched file unchanged before it is logged.
    watch_stable_checks: int = Field(default=3, ge=1)
    #: Seconds after which a watched file that keeps changing is logged at its first
    #: unchanged scan (instead of after ``watch_stable_checks``); never dropped.
    watch_max_wait: float = Field(default=5.0, ge=0)
    #: Files at least this large reach remote trackers as references to the store.
    reference_threshold_bytes: int = 100 * 1024 * 1024
    #: Seconds one delivery to a tracker may take before it counts as failed (and is retried
    #: by ``tracelet sync``), the SDK's own retries included (``TRACELET_BACKEND_TIMEOUT``).
    backend_timeout: float = 10.0
    #: Emit an OpenLineage event for every committed version (transport from
    #: ``OPENLINEAGE_URL`` / ``OPENLINEAGE__TRANSPORT__*`` / ``openlineage.yml``).
    openlineage: bool = False
    #: ``full``: a version is on disk when ``log`` returns (blobs and manifest flushed in one
    #: batch, SQLite commits with ``synchronous=FULL``). ``none``: nothing is flushed; a
    #: killed process still leaves whole versions or none, a power loss may lose recent ones
    #: (for scratch stores and CI).
    durability: Literal["full", "none"] = "full"

    @field_validator("backends", "artifact_watch_dirs", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("store_uri")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("TRACELET_STORE_URI must not be empty")
        return value

    @field_validator("storage_options", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else None
            except ValueError:
                raise ValueError("TRACELET_STORAGE_OPTIONS is not valid JSON (value not shown)") from None
        if value is not None and not isinstance(value, dict):
            raise ValueError("TRACELET_STORAGE_OPTIONS must be a JSON object")
        return value

    @classmethod
    def load(cls, **overrides: Any) -> TraceletSettings:
        """Read settings, turning validation errors into ``ConfigurationError``."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            # never echo the values: TRACELET_STORAGE_OPTIONS (and URLs) carry credentials
            problems = "; ".join(f"TRACELET_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
                                 for error in exc.errors(include_input=False, include_context=False))
            raise ConfigurationError(f"invalid tracelet settings: {problems}") from None
        except ValueError:
            raise ConfigurationError("invalid tracelet settings (values not shown)") from None

    def resolved_store_uri(self) -> str:
        """The store URI with ``~`` expanded for local paths."""
        if "://" in self.store_uri:
            return self.store_uri
        return str(Path(self.store_uri).expanduser())

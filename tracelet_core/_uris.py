"""URI helpers: credential redaction and cheap metadata lookups for references."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._errors import ConfigurationError, IntegrityError, InvalidArtifactError, StorageError

_SECRET_QUERY_KEYS = re.compile(
    r"(?i)^(x-amz-(signature|credential|security-token)|signature|sig|token|access_token|"
    r"password|secret|api[_-]?key|key)$"
)
#: Filesystems whose ``info`` is a local call or one cheap request; others are not probed.
_PROBED_PROTOCOLS = {"file", "local", "memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


def redact_uri(uri: str) -> str:
    """``uri`` without user info (``user:token@``) or secret-looking query parameters."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not _SECRET_QUERY_KEYS.match(k)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def validate_reference_uri(uri: object) -> str:
    """Return ``uri`` if it is a usable reference: non-empty, no NUL or control characters."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidArtifactError(f"reference URI must be a non-empty string, got {uri!r}")
    if any(ord(ch) < 32 for ch in uri):
        raise InvalidArtifactError(f"reference URI {uri!r} contains a control character")
    return uri


def probe_reference(uri: str, *, strict: bool = False) -> tuple[int | None, str | None]:
    """Size and checksum/etag of the object at ``uri`` when the filesystem knows them cheaply.

    Never reads the object. By default it never raises either (what ``add_reference`` wants:
    unknown protocols, missing SDKs and unreachable stores leave both values ``None``). With
    ``strict`` (checking a reference before a download) only an unknown protocol gives
    ``None``; a missing object is an ``IntegrityError``, a missing SDK or bad URL a
    ``ConfigurationError`` and anything else a ``StorageError``, so a changed reference is
    never fetched unchecked.
    """
    import fsspec  # Deferred for import perf

    protocol = urlsplit(uri).scheme or "file"
    if protocol not in _PROBED_PROTOCOLS:
        return None, None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        info: dict[str, Any] = fs.info(path)
    except FileNotFoundError as exc:
        if not strict:
            return None, None
        raise IntegrityError(f"reference {redact_uri(uri)} no longer exists", [f"{redact_uri(uri)}: missing"]) from exc
    except (ImportError, ValueError) as exc:
        if not strict:
            return None, None
        raise ConfigurationError(f"cannot check reference {redact_uri(uri)}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - an SDK's own errors; mapped, or (not strict) unknown
        if not strict:
            return None, None
        raise StorageError(f"cannot check reference {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc
    if info.get("type") == "directory":
        return None, None
    size = info.get("size")
    checksum = None
    for key in ("ETag", "etag", "md5Hash", "content_md5", "crc32c", "checksum"):
        if info.get(key):
            checksum = f"{key.lower()}:{str(info[key]).strip(chr(34))}"
            break
    if checksum is None and protocol in {"file", "local"} and "mtime" in info:
        checksum = f"mtime:{info['mtime']}"
    return (int(size) if size is not None else None), checksum

"""URI helpers: credential redaction and cheap metadata lookups for references."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._errors import InvalidArtifactError

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


def probe_reference(uri: str) -> tuple[int | None, str | None]:
    """Size and checksum/etag of the object at ``uri`` when the filesystem knows them cheaply.

    Never raises and never reads the object: unknown protocols, missing SDKs and unreachable
    stores leave both values ``None``.
    """
    import fsspec  # Deferred for import perf

    protocol = urlsplit(uri).scheme or "file"
    if protocol not in _PROBED_PROTOCOLS:
        return None, None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        info: dict[str, Any] = fs.info(path)
    except Exception:  # noqa: BLE001 - a reference may point at something we cannot see
        return None, None
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

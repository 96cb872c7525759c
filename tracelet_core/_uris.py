"""URI helpers: credential redaction and cheap metadata lookups for references."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, BinaryIO, cast
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
    size, checksum, _ = describe_reference(uri, strict=strict)
    return size, checksum


def describe_reference(uri: str, *, strict: bool = False) -> tuple[int | None, str | None, str | None]:
    """``probe_reference`` plus the object's version id where the store keeps versions."""
    import fsspec  # Deferred for import perf

    protocol = urlsplit(uri).scheme or "file"
    if protocol not in _PROBED_PROTOCOLS:
        return None, None, None
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        info: dict[str, Any] = fs.info(path)
    except FileNotFoundError as exc:
        if not strict:
            return None, None, None
        raise IntegrityError(f"reference {redact_uri(uri)} no longer exists", [f"{redact_uri(uri)}: missing"]) from exc
    except (ImportError, ValueError) as exc:
        if not strict:
            return None, None, None
        raise ConfigurationError(f"cannot check reference {redact_uri(uri)}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - an SDK's own errors; mapped, or (not strict) unknown
        if not strict:
            return None, None, None
        raise StorageError(f"cannot check reference {redact_uri(uri)}: {type(exc).__name__}: {exc}") from exc
    if info.get("type") == "directory":
        return None, None, None
    size = info.get("size")
    return (int(size) if size is not None else None), _checksum(info, protocol), _version_id(info)


def _checksum(info: dict[str, Any], protocol: str) -> str | None:
    """``etag:...`` (or the store's own checksum) from an fsspec info dict."""
    for key in ("ETag", "etag", "md5Hash", "content_md5", "crc32c", "checksum"):
        if info.get(key):
            return f"{key.lower()}:{str(info[key]).strip(chr(34))}"
    if protocol in {"file", "local"} and "mtime" in info:
        return f"mtime:{info['mtime']}"
    return None


#: Protocols whose object versions ``open_reference`` can read (S3's ``VersionId``).
_VERSIONED_PROTOCOLS = frozenset({"s3", "s3a"})


def open_reference(uri: str, version_id: str | None) -> BinaryIO:
    """The referenced object for reading: the version ``version_id`` recorded where the store
    keeps versions (S3), else what ``uri`` holds now (checked by its size and checksum first).
    A recorded version that is gone is an ``IntegrityError``."""
    import fsspec  # Deferred for import perf

    protocol = urlsplit(uri).scheme or "file"
    if version_id is None or protocol not in _VERSIONED_PROTOCOLS:
        return cast(BinaryIO, fsspec.open(uri, "rb").open())
    fs, path = fsspec.core.url_to_fs(uri, version_aware=True)
    try:
        return cast(BinaryIO, fs.open(path, "rb", version_id=version_id))
    except FileNotFoundError as exc:
        raise IntegrityError(f"version {version_id} of reference {redact_uri(uri)} no longer exists",
                             [f"{redact_uri(uri)}?versionId={version_id}: missing"]) from exc


def versioned(uri: str, version_id: str | None) -> bool:
    """Whether ``open_reference`` reads the recorded version of ``uri`` (not what it holds now)."""
    return version_id is not None and (urlsplit(uri).scheme or "file") in _VERSIONED_PROTOCOLS


def _version_id(info: dict[str, Any]) -> str | None:
    """The object's version (S3 ``VersionId``, GCS ``generation``); ``None`` when unversioned."""
    version = next((str(info[k]) for k in ("VersionId", "generation") if info.get(k)), None)
    return None if version == "null" else version


@dataclass(frozen=True)
class PrefixObject:
    """One object found under a reference prefix."""

    relative: str  # its path below the prefix
    uri: str
    size: int | None
    checksum: str | None
    version_id: str | None


#: Protocols whose listing can report each object's version (``VersionId``, generation).
_VERSIONED_LISTINGS = {"s3": {"version_aware": True}, "s3a": {"version_aware": True}}


def list_prefix(uri: str, max_objects: int) -> list[PrefixObject]:
    """Every object under the prefix ``uri`` (sorted by path), with size, checksum and the
    current version id where the bucket keeps versions; one recursive listing, no reads.

    Raises ``InvalidArtifactError`` beyond ``max_objects`` objects, ``ConfigurationError`` when
    access is refused and ``StorageError`` when the store cannot be reached; a prefix that
    does not exist lists nothing.
    """
    import fsspec  # Deferred for import perf

    protocol = urlsplit(uri).scheme or "file"
    where = redact_uri(uri)
    try:
        fs, root = fsspec.core.url_to_fs(uri, **_VERSIONED_LISTINGS.get(protocol, {}))
        fs.invalidate_cache(root)
        found: dict[str, dict[str, Any]] = fs.find(root, detail=True, withdirs=False)
    except FileNotFoundError:
        return []
    except PermissionError as exc:
        raise ConfigurationError(f"cannot list {where}: access refused ({exc})") from exc
    except ImportError as exc:
        raise ConfigurationError(f"cannot list {where}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - whatever the filesystem raises: the store is not reachable
        raise StorageError(f"cannot list {where}: {type(exc).__name__}: {exc}") from exc
    if len(found) > max_objects:
        raise InvalidArtifactError(f"{where} holds more than {max_objects} objects ({len(found)}); reference "
                                   "a narrower prefix or pass a larger max_objects")
    base = root.rstrip("/") + "/"
    objects = []
    for path in sorted(found):
        info = found[path]
        name = str(info.get("name", path)).partition("?")[0]
        relative = name[len(base):] if name.startswith(base) else posixpath.basename(name)
        size = info.get("size")
        objects.append(PrefixObject(relative=relative, uri=fs.unstrip_protocol(name),
                                    size=int(size) if size is not None else None,
                                    checksum=_checksum(info, protocol), version_id=_version_id(info)))
    return objects

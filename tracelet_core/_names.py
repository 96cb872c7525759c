"""Validation of artifact names, paths inside an artifact, aliases and refs.

Everything a user or a stored manifest hands us as a name or path passes through here before
it touches a filesystem, so traversal (``..``, absolute paths, drive letters, backslashes,
NUL, percent-encoded forms of those) is refused in one place.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from ._errors import InvalidArtifactError

MAX_NAME_LENGTH = 200
MAX_PATH_LENGTH = 1024
MAX_ALIAS_LENGTH = 128
#: The longest file name (one path segment) common filesystems accept, in UTF-8 bytes.
MAX_SEGMENT_BYTES = 255
LATEST = "latest"

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")  # a leading "_" too: Dagster asset keys use it
_VERSION = re.compile(r"v([1-9][0-9]*)")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_FORBIDDEN_PATH_CHARS = ("\\", "\x00", ":")


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid artifact name, else raise ``InvalidArtifactError``."""
    if not isinstance(name, str) or not name:
        raise InvalidArtifactError(f"artifact name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArtifactError(
            f"artifact name is {len(name)} characters long; at most {MAX_NAME_LENGTH} allowed"
        )
    for segment in name.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidArtifactError(
                f"invalid artifact name {name!r}: each '/'-separated segment must match "
                "[A-Za-z0-9_][A-Za-z0-9._-]*"
            )
    return name


def validate_alias(alias: object) -> str:
    """Return ``alias`` if it can be set by a user (not ``latest``, not a version number)."""
    if not isinstance(alias, str) or not _SEGMENT.fullmatch(alias):
        raise InvalidArtifactError(
            f"invalid alias {alias!r}: must match [A-Za-z0-9][A-Za-z0-9._-]*"
        )
    if len(alias) > MAX_ALIAS_LENGTH:
        raise InvalidArtifactError(f"alias {alias!r} is longer than {MAX_ALIAS_LENGTH} characters")
    if alias == LATEST:
        raise InvalidArtifactError("'latest' always points at the newest version; it cannot be set")
    if _VERSION.fullmatch(alias):
        raise InvalidArtifactError(f"alias {alias!r} would shadow a version number")
    return alias


def _decoded_forms(path: str) -> list[str]:
    """The path and every percent-decoding of it (``%252e`` -> ``%2e`` -> ``.``)."""
    forms = [path]
    current = path
    for _ in range(8):
        if not _PERCENT_ESCAPE.search(current):
            break
        current = unquote(current)
        forms.append(current)
    return forms


def validate_artifact_path(path: object) -> str:
    """Return the normalised relative POSIX ``path`` or raise ``InvalidArtifactError``.

    ``.`` segments are dropped; ``..``, empty segments, absolute paths, drive letters,
    backslashes, colons, NUL, control characters and any of those hidden behind
    percent-encoding are refused.
    """
    if not isinstance(path, str) or not path:
        raise InvalidArtifactError(f"artifact path must be a non-empty string, got {path!r}")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidArtifactError(f"artifact path is longer than {MAX_PATH_LENGTH} characters")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: an undecodable file name
        raise InvalidArtifactError(
            f"artifact path {path!r} is not valid Unicode (a file name in a non-UTF-8 encoding?); "
            "rename the file or pass artifact_path"
        ) from exc
    for form in _decoded_forms(path):
        if any(ord(ch) < 32 or ch == "\x7f" for ch in form):
            raise InvalidArtifactError(f"artifact path {path!r} contains a control character")
        bad = next((ch for ch in _FORBIDDEN_PATH_CHARS if ch in form), None)
        if bad is not None:
            raise InvalidArtifactError(
                f"artifact path {path!r} contains {bad!r}; use a relative POSIX path"
            )
        if form.startswith(("/", "~")):
            raise InvalidArtifactError(f"artifact path {path!r} must be relative")
        if ".." in form.split("/"):
            raise InvalidArtifactError(f"artifact path {path!r} escapes the artifact with '..'")
    segments = [segment for segment in path.split("/") if segment != "."]
    if not segments or any(segment == "" for segment in segments):
        raise InvalidArtifactError(f"artifact path {path!r} has an empty segment")
    long = next((segment for segment in segments if len(segment.encode()) > MAX_SEGMENT_BYTES), None)
    if long is not None:
        raise InvalidArtifactError(
            f"artifact path {path!r} has a segment of {len(long.encode())} bytes; a file name holds at most "
            f"{MAX_SEGMENT_BYTES}"
        )
    return "/".join(segments)


def parse_ref(ref: object, version: str | None = None) -> tuple[str, str]:
    """Split ``name:selector`` (or ``name`` plus ``version``) into ``(name, selector)``.

    The selector is ``latest``, ``vN`` or an alias.
    """
    if not isinstance(ref, str) or not ref:
        raise InvalidArtifactError(f"artifact ref must be a non-empty string, got {ref!r}")
    name, sep, selector = ref.partition(":")
    if sep and version not in (None, LATEST, selector):
        raise InvalidArtifactError(f"ref {ref!r} already names a version; got version={version!r}")
    selector = selector if sep else (version or LATEST)
    validate_name(name)
    if selector != LATEST and not _VERSION.fullmatch(selector) and (
            not _SEGMENT.fullmatch(selector) or len(selector) > MAX_ALIAS_LENGTH):
        raise InvalidArtifactError(f"invalid version or alias {selector!r} in ref {ref!r}")
    return name, selector


def version_number(selector: str) -> int | None:
    """``"v3"`` -> 3; anything else (``latest``, an alias) -> None."""
    match = _VERSION.fullmatch(selector)
    return int(match.group(1)) if match else None


def format_version(number: int) -> str:
    return f"v{number}"

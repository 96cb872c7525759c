"""The JSON form of a ``LoggedArtifact`` (Prefect's JSON result serializer, pydantic fields).

Reading a version back from its JSON form reopens its store by URI (``ArtifactStore.shared``),
so the form lives above both ``_logged`` and ``_store``; importing ``tracelet_core`` attaches it
to ``LoggedArtifact`` once (pydantic looks for ``__get_pydantic_core_schema__`` and
``__pydantic_serializer__`` on the class).
"""

from __future__ import annotations

from typing import Any

from ._errors import IntegrityError, InvalidArtifactError
from ._logged import LoggedArtifact
from ._store import ArtifactStore

#: ``"format"`` of a version's JSON form; a reader refuses any other.
JSON_FORM = "tracelet.logged/1"


def logged_to_json(logged: LoggedArtifact) -> dict[str, Any]:
    """A version as JSON: its ref and digest, and how to reopen its store (the store URI, and
    the catalog URL only where it holds no password: ``ArtifactStore.reopen_args``)."""
    uri, catalog_url = logged.store.reopen_args()
    return {"format": JSON_FORM, "ref": logged.ref, "digest": logged.digest,
            "store": {"uri": uri, "catalog_url": catalog_url}}


def logged_from_json(data: Any) -> LoggedArtifact:
    """The version a JSON form names, read from its store (reopened in this process, once per
    process); ``IntegrityError`` if that version's digest is not the one recorded."""
    if isinstance(data, LoggedArtifact):
        return data
    try:
        if data["format"] != JSON_FORM:
            raise InvalidArtifactError(f"unknown LoggedArtifact JSON format {data['format']!r}")
        ref, digest, store = str(data["ref"]), str(data["digest"]), data["store"]
        uri, catalog_url = store["uri"], store.get("catalog_url")
    except (KeyError, TypeError) as exc:
        raise InvalidArtifactError(f"not the JSON form of a LoggedArtifact: {data!r}") from exc
    logged = ArtifactStore.shared(uri, catalog_url).get(ref)
    if logged.digest != digest:
        raise IntegrityError(f"{ref} in {uri} has digest {logged.digest}, not {digest} as recorded",
                             [f"{ref}: digest {logged.digest} != {digest}"])
    return logged


def _pydantic_core_schema(cls: type[LoggedArtifact], source: Any, handler: Any) -> Any:
    """Validate from a ``LoggedArtifact`` or its JSON form; serialize to the JSON form."""
    from pydantic_core import core_schema

    return core_schema.no_info_plain_validator_function(
        logged_from_json,
        serialization=core_schema.plain_serializer_function_ser_schema(logged_to_json),
    )


def attach_json_form() -> None:
    """Give ``LoggedArtifact`` its JSON form (idempotent; ``tracelet_core`` calls it once)."""
    # ``__get_pydantic_core_schema__`` serves pydantic models and ``TypeAdapter``s that declare a
    # ``LoggedArtifact`` field; ``__pydantic_serializer__`` lets ``pydantic_core.to_jsonable_python``
    # (what Prefect's JSON serializer calls for objects it does not know) find the same form.
    from pydantic_core import SchemaSerializer

    LoggedArtifact.__get_pydantic_core_schema__ = classmethod(_pydantic_core_schema)  # type: ignore[attr-defined]
    LoggedArtifact.__pydantic_serializer__ = SchemaSerializer(  # type: ignore[attr-defined]
        _pydantic_core_schema(LoggedArtifact, LoggedArtifact, None))


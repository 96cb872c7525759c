"""``VersionDiff``: what changed between two versions (entries, labels, lineage, content).

``diff_versions(a, b)`` compares the catalog records of two versions: entries by digest
(files and objects by path, references by name), metadata by dotted key path, tags and
aliases, inputs, the producer (its provenance included), and, for each changed entry whose
format it reads, its content (``_diff_content``: tables, JSON/YAML objects, tensors, text).
Nothing is unpickled unless ``allow_pickle`` allows it; a pickled entry is compared by digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._diff_content import content_diff, flatten, same_value

if TYPE_CHECKING:
    from ._logged import LoggedArtifact


@dataclass(frozen=True)
class VersionDiff:
    """The difference between version ``before`` and version ``after`` (refs)."""

    before: str
    after: str
    #: Equal version digests: the same entries with the same bytes.
    identical: bool
    files: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, list[Any]] = field(default_factory=dict)
    tags: dict[str, list[bool]] = field(default_factory=dict)
    aliases: dict[str, list[bool]] = field(default_factory=dict)
    inputs: dict[str, list[str]] = field(default_factory=dict)
    producer: list[dict[str, Any] | None] | None = None
    content: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form: ``files``, ``metadata``, ``tags``, ``aliases``, ``inputs``,
        ``producer`` and ``content``."""
        return {"files": self.files, "metadata": self.metadata, "tags": self.tags,
                "aliases": self.aliases, "inputs": self.inputs, "producer": self.producer,
                "content": self.content}


def _entries(version: LoggedArtifact) -> dict[str, dict[str, Any]]:
    """Each entry of ``version`` by its key: path for files and objects, name for references."""
    found: dict[str, dict[str, Any]] = {}
    for data in version._record.entries:
        key = data["name"] if data.get("kind") == "reference" else data["path"]
        found[str(key)] = data
    return found


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    fields: tuple[str, ...] = ("kind", "digest", "serializer")
    if a.get("kind") == "reference" or b.get("kind") == "reference":
        fields = ("kind", "uri", "size", "checksum", "version_id")
    return all(a.get(f) == b.get(f) for f in fields)


def _flag_diff(before: list[str], after: list[str]) -> dict[str, list[bool]]:
    """``{label: [on before, on after]}`` for labels on one version only."""
    return {label: [label in before, label in after]
            for label in sorted(set(before) ^ set(after))}


def diff_versions(a: LoggedArtifact, b: LoggedArtifact, *, content: bool = True,
                  allow_pickle: bool = False) -> VersionDiff:
    """Compare version ``a`` (before) with ``b`` (after); see ``VersionDiff``."""
    before, after = _entries(a), _entries(b)
    changed: list[dict[str, Any]] = []
    unchanged = 0
    for key in sorted(set(before) & set(after)):
        if _same(before[key], after[key]):
            unchanged += 1
        else:
            changed.append({"path": key, "size_before": before[key].get("size"),
                            "size_after": after[key].get("size")})
    files = {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after)),
             "changed": changed, "unchanged": unchanged}
    meta_a, meta_b = flatten(a.metadata), flatten(b.metadata)
    metadata = {key: [meta_a.get(key), meta_b.get(key)] for key in sorted(set(meta_a) | set(meta_b))
                if (key in meta_a) != (key in meta_b) or not same_value(meta_a[key], meta_b[key])}
    producers = [p.to_dict() if p is not None else None for p in (a.producer, b.producer)]
    contents: dict[str, dict[str, Any]] = {}
    if content and a.digest != b.digest:
        for item in changed:
            key = item["path"]
            found = content_diff(a, before[key], b, after[key], allow_pickle=allow_pickle)
            if found is not None:
                contents[_content_key(before[key])] = found
    return VersionDiff(
        before=a.ref, after=b.ref, identical=a.digest == b.digest, files=files, metadata=metadata,
        tags=_flag_diff(a.tags, b.tags), aliases=_flag_diff(a.aliases, b.aliases),
        inputs={"added": sorted(set(b.inputs) - set(a.inputs)), "removed": sorted(set(a.inputs) - set(b.inputs))},
        producer=producers if producers[0] != producers[1] else None,
        content=contents,
    )


def _content_key(entry: dict[str, Any]) -> str:
    """Content diffs are keyed by a file's path and an object's name."""
    return str(entry["name"] if entry.get("kind") in ("object", "reference") else entry["path"])

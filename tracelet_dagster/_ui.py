"""What the Dagster UI shows of tracelet beyond the version itself: links and who read what.

- ``tracelet/inputs/<ref>`` on a materialization: a link (``MetadataValue.asset``) to the asset
  each input version is, labelled with the ref, so the UI shows the exact upstream version and
  opens its asset; ``tracelet/inputs`` keeps the full list.
- ``tracelet/lineage``: the version's HTML lineage page (``tracelet lineage --format html``),
  written under the IO manager's ``lineage_pages`` folder and linked as a path (or, with
  ``lineage_url``, as the URL that folder is served at); without a folder, the command that
  draws it.
- The observation a read adds says which step of which run read the version
  (``tracelet/read_by``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import AssetKey, MetadataValue

from tracelet_core import ArtifactNotFoundError, LoggedArtifact

from . import _keys

ORCHESTRATOR = "dagster"
ESCAPED_SEGMENT = "_-"  # prefix of an asset key segment that is not a tracelet name segment
MAX_INPUT_LINKS = 25  # more inputs than this (a read of many partitions) stay in tracelet/inputs only


def asset_key_path(name: str) -> list[str]:
    """The asset key path of an artifact name (``asset_artifact_name`` reversed)."""
    return [bytes.fromhex(s[len(ESCAPED_SEGMENT):]).decode("utf-8") if s.startswith(ESCAPED_SEGMENT) else s
            for s in name.split("/")]


def upstream_asset(version: LoggedArtifact) -> AssetKey | None:
    """The Dagster asset a version is: its recorded asset key, or, for a version logged outside
    Dagster, the key ``tracelet_source_asset`` gives its name; None for op outputs."""
    recorded = version.metadata.get(_keys.ASSET_KEY)
    if isinstance(recorded, list) and recorded:
        return AssetKey([str(part) for part in recorded])
    if version.producer is None or version.producer.orchestrator != ORCHESTRATOR:
        return AssetKey(asset_key_path(version.name))
    return None


def input_links(logged: LoggedArtifact) -> dict[str, Any]:
    """``tracelet/inputs/<ref>``: a link to the upstream asset of each input version (the UI
    shows the ref, with its version, and opens the asset)."""
    links: dict[str, Any] = {}
    for ref in logged.inputs[:MAX_INPUT_LINKS]:
        try:
            key = upstream_asset(logged.store.get(ref))
        except ArtifactNotFoundError:
            continue
        if key is not None:
            links[_keys.INPUT_LINK + ref] = MetadataValue.asset(key)
    return links


def lineage_command(logged: LoggedArtifact) -> str:
    return f"tracelet lineage {logged.ref} --store {logged.store.uri} --format html -o lineage.html"


def lineage_link(logged: LoggedArtifact, pages: str | None, url: str | None) -> dict[str, Any]:
    """``tracelet/lineage``: the page written under ``pages`` (linked by ``url`` when given), or
    the command that draws it. A page that cannot be written is left out, never failing a step."""
    if pages is None:
        return {_keys.LINEAGE: MetadataValue.text(lineage_command(logged))}
    from tracelet_core._lineage_html import render_html  # Deferred: only when pages are written

    relative = f"{logged.name}/{logged.version}.html"
    page = Path(pages).expanduser() / relative
    try:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(render_html(logged.store.lineage(logged)), encoding="utf-8")
    except OSError:
        return {_keys.LINEAGE: MetadataValue.text(lineage_command(logged))}
    if url:
        return {_keys.LINEAGE: MetadataValue.url(f"{url.rstrip('/')}/{relative}")}
    return {_keys.LINEAGE: MetadataValue.path(str(page))}


def read_metadata(version: LoggedArtifact, run_id: str | None, step_key: str | None) -> dict[str, Any]:
    """The observation of one read: the version and the step (and run) that read it."""
    metadata: dict[str, Any] = {_keys.REF: version.ref, _keys.DIGEST: version.digest}
    if step_key is not None:
        metadata[_keys.READ_BY] = MetadataValue.text(f"{step_key} (run {run_id})" if run_id else step_key)
    return metadata

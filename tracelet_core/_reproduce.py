"""``ReproduceReport``: a version run again on the inputs it recorded, and what came out.

The orchestrator adapters (``tracelet_dagster.reproduce``, ``tracelet_prefect.reproduce``) rerun
the producing step; this module holds what they share: the pins a rerun loads
(``recorded_pins``: each recorded input's name and version number), the original given back
for identical content (``identical_original``), the check that a version's
producer is one the adapter can rerun (``NotReproducibleError`` otherwise, naming the git
commit and inputs recorded, so the run can be repeated by hand), and the report comparing the
reproduced version with the original (``VersionDiff`` when their content differs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._catalog import entries_digest
from ._errors import NotReproducibleError

if TYPE_CHECKING:
    from ._artifact import TraceletArtifact
    from ._diff import VersionDiff
    from ._logged import LoggedArtifact
    from ._store import ArtifactStore


@dataclass(frozen=True)
class ReproduceReport:
    """The outcome of running the producer of ``original`` again on its recorded inputs."""

    #: the ref that was reproduced (``name:vN``)
    original: str
    #: the version the rerun logged; identical content gives the original version back (``created=False``)
    reproduced: LoggedArtifact
    #: equal digests: the same entries with the same bytes
    identical: bool
    #: what changed from the original to the reproduced version (``None`` when identical)
    diff: VersionDiff | None
    #: the orchestrator run that reproduced it (the Dagster run id, the Prefect flow run id)
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form (``tracelet reproduce --json``)."""
        return {"original": self.original, "reproduced": self.reproduced.ref, "created": self.reproduced.created,
                "identical": self.identical, "diff": self.diff.to_dict() if self.diff is not None else None,
                "run_id": self.run_id}


def reproduce_report(original: LoggedArtifact, reproduced: LoggedArtifact, run_id: str) -> ReproduceReport:
    """Compare ``reproduced`` with ``original`` (a diff, content included, when they differ)."""
    identical = reproduced.digest == original.digest
    diff = None if identical else original.store.diff(original, reproduced)
    return ReproduceReport(original=original.ref, reproduced=reproduced, identical=identical, diff=diff,
                           run_id=run_id)


def identical_original(store: ArtifactStore, artifact: TraceletArtifact, original_ref: str | None
                       ) -> LoggedArtifact | None:
    """In a rerun of ``original_ref``: the original version when ``artifact`` holds exactly its
    content (then nothing is logged: the rerun gives the original back, ``created=False``), else
    ``None``. The store's own dedup compares with the newest version only, and the original may
    no longer be the newest. Its blobs are staged (hashed and stored, content-addressed) to
    know; a log that follows finds them stored."""
    if original_ref is None:
        return None
    original = store.get(original_ref)
    if artifact.name != original.name:
        return None
    rows, _reused = store._stage_blobs(artifact)
    return original if entries_digest(rows) == original.digest else None


def recorded_pins(version: LoggedArtifact) -> dict[str, str]:
    """``{input name: "vN"}`` for each input ``version`` recorded; one name read at two versions
    (several partitions of one upstream) cannot be pinned by name and is refused."""
    pins: dict[str, str] = {}
    for ref in version.inputs:
        name, _, selector = ref.rpartition(":")
        if pins.get(name, selector) != selector:
            raise NotReproducibleError(
                f"{version.ref} read {name} at several versions ({name}:{pins[name]}, {ref}); a rerun pins one "
                "version per name, so it cannot load them all")
        pins[name] = selector
    return pins


def git_summary(extra: dict[str, Any]) -> str | None:
    """``git commit <sha> on <branch> (with uncommitted changes)`` from a producer's provenance
    (``RunInfo.extra``), or ``None`` when no commit was recorded."""
    git = extra.get("git")
    if not isinstance(git, dict) or not git.get("commit"):
        return None
    code = f"git commit {git['commit']}"
    if git.get("branch"):
        code += f" on {git['branch']}"
    return code + (" (with uncommitted changes)" if git.get("dirty") else "")


def how_it_was_made(version: LoggedArtifact) -> str:
    """The git commit and the inputs ``version`` recorded, for a rerun by hand."""
    producer = version.producer
    code = (git_summary(producer.extra) if producer is not None else None) or "no git commit recorded"
    inputs = ", ".join(version.inputs) or "none"
    return f"{code}; inputs: {inputs}"


def require_producer(version: LoggedArtifact, orchestrator: str, how: str) -> None:
    """Raise ``NotReproducibleError`` unless ``orchestrator`` produced ``version``; ``how`` says
    what reruns such versions (``tracelet_dagster.reproduce``...)."""
    producer = version.producer
    if producer is not None and producer.orchestrator == orchestrator:
        return
    made_by = "no producer" if producer is None else (
        f"an Experiment ({producer.name or producer.run_id})" if producer.orchestrator == "tracelet"
        else f"a {producer.orchestrator} run")
    raise NotReproducibleError(
        f"{version.ref} was made by {made_by}, which {how} cannot run again; it was made from "
        f"{how_it_was_made(version)}")

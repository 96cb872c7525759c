"""tracelet for Dagster: an IO manager, a resource, source assets and sensors.

- ``TraceletIOManager``: ``@asset(io_manager_key="tracelet")`` outputs become versions (one per
  output, per partition), inputs load the exact versions recorded as their lineage.
- ``TraceletResource``: the core API (``log``, ``get``, ``experiment``) inside ops and assets,
  with the Dagster run, step and partition filled in.
- ``tracelet_source_asset(name)``: an artifact logged outside Dagster as an observable source
  asset whose data version is its latest digest.
- ``tracelet_sensor(name, alias=None, job=...)``: a run per new version (or alias move).
- ``reproduce(ref, definitions)``: the step that produced a version, run again on the input
  versions it recorded; a ``ReproduceReport`` says whether the result is identical.

Importing this package imports no Dagster: the names above load on first use, so
``import tracelet_dagster`` stays as light as ``import tracelet_core``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tracelet_core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._io_manager import TraceletIOManager
    from ._reproduce import reproduce
    from ._resource import TraceletResource
    from ._sensors import tracelet_sensor, tracelet_source_asset

__all__ = ["TraceletIOManager", "TraceletResource", "tracelet_sensor", "tracelet_source_asset", "reproduce"]

_EXPORTS = {
    "TraceletIOManager": "._io_manager",
    "TraceletResource": "._resource",
    "tracelet_sensor": "._sensors",
    "tracelet_source_asset": "._sensors",
    "reproduce": "._reproduce",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

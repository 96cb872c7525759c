"""The ``tracelet`` command line: list, inspect, fetch, trace, alias, verify and clean a store.

Every command opens the store lazily from ``--store`` / ``--catalog`` (default
``TRACELET_STORE_URI`` / ``TRACELET_CATALOG_URL``, read through ``TraceletSettings``).
Results go to stdout: readable tables and trees, or, with ``--json``, exactly one JSON
document and nothing else (progress bars are switched off then). Bad input (any
``TraceletError``, a missing path, a catalog that cannot be reached) ends a command with exit
code 1 and a single ``error: ...`` line on stderr, never a traceback; typer's own usage
errors keep exit code 2.

Extending it: a command that works on a store is a function decorated with
``@store_command(name)`` (it gets ``--store`` / ``--catalog`` before or after the command,
and only ``log`` creates a store that is not there); it takes ``ctx: typer.Context``
first and opens the store with ``open_store(ctx, as_json=...)``. A lineage output format is one
entry in ``LINEAGE_FORMATS``.

This module is the only one that imports typer and rich at import time; ``tracelet_core``
does not import it.
"""

from . import (  # noqa: F401 - importing them registers their commands on ``app``
    _diff,
    _lifecycle,
    _manage,
    _quarantine,
    _read,
    _reproduce,
)
from ._app import app, main

__all__ = ["app", "main"]

"""The metadata keys and run tags tracelet_dagster reads and writes, in one place.

Definition metadata (``@asset(metadata=...)``, ``Output(metadata=...)``) steers logging;
``AssetIn(metadata=...)`` steers loading; output metadata reports what was logged; version
metadata (stored with each tracelet version) says how to read the value back.
"""

from __future__ import annotations

# -- read from asset / output definitions ----------------------------------------------------
TYPE = "tracelet/type"  # artifact type of the logged version (default: inferred from the value)
ALIASES = "tracelet/aliases"  # aliases to move to the logged version (list or comma-separated)
SERIALIZER = "tracelet/serializer"  # serializer for plain objects (default: the IO manager's)
DESCRIPTION = "tracelet/description"  # version description (default: the asset's description)

# -- read from AssetIn / In metadata ---------------------------------------------------------
PIN = "tracelet/version"  # load this version or alias instead of the latest
ENTRY = "tracelet/entry"  # load this object or file of a version logged outside Dagster
ALLOW_MISSING_PARTITIONS = "allow_missing_partitions"  # same meaning as for UPathIOManager

# -- run tags ----------------------------------------------------------------------------------
PINS_TAG = "tracelet/pins"  # comma-separated refs the run loads instead of the latest ("raw:v3")
REPRODUCE_TAG = "tracelet/reproduce"  # the ref a run reproduces: it logs as usual but moves no alias

# -- reported as output metadata (shown in the Dagster UI) -----------------------------------------
REF = "tracelet/ref"
REFS = "tracelet/refs"  # {partition: ref} when one step logged several partitions
VERSION = "tracelet/version"
DIGEST = "tracelet/digest"
URI = "tracelet/uri"
STORE = "tracelet/store"
SIZE = "tracelet/size_bytes"
SERIALIZER_USED = "tracelet/serializer"
INPUTS = "tracelet/inputs"
NEW_VERSION = "tracelet/new_version"
PREVIEW = "tracelet/preview"
BACKENDS = "tracelet/backends"
MAPPING_KEY = "tracelet/mapping_key"
GIT_COMMIT = "tracelet/git_commit"  # provenance of the producing process
GIT_DIRTY = "tracelet/git_dirty"
PYTHON = "tracelet/python"

# -- stored in version metadata -----------------------------------------------------------------
PARTITION = "tracelet/partition"  # the Dagster partition key, intact (multi-partitions too)
PARTITION_DIMENSIONS = "tracelet/partition_dimensions"  # {dimension: key} for multi-partitions
VALUE = "tracelet/value"  # how the output value is stored: {"kind": ..., "entry": ...}
ASSET_KEY = "dagster/asset_key"

# -- Dagster's own tags --------------------------------------------------------------------------
DATA_VERSION_TAG = "dagster/data_version"  # an observation's data version (tracelet: the digest)

# -- the Dagster UI (links and who read what) ------------------------------------------------------
INPUT_LINK = "tracelet/inputs/"  # + an input's ref (``orders:v1``): a link to the upstream asset
LINEAGE = "tracelet/lineage"  # the version's HTML lineage page (a path or URL), or the command drawing it
READ_BY = "tracelet/read_by"  # on a read's observation: the step (and run) that read the version

# -- read from In metadata (ops loading through an input manager) --------------------------------
NAME = "tracelet/name"  # the artifact an op input with no upstream reads (In(input_manager_key=...))

# -- lifecycle -------------------------------------------------------------------------------------
QUARANTINED = "tracelet/quarantined"  # on a quarantined version: why, since when, and its source

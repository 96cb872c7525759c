"""tracelet for Dagster: an IO manager, a resource, source assets and sensors.

The adapter (``TraceletIOManager``, ``TraceletResource``, ``tracelet_source_asset``,
``tracelet_sensor``) arrives with the Dagster issue; this package holds its place in the
distribution.
"""

__all__: list[str] = []

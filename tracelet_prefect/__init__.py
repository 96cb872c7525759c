"""tracelet for Prefect: tasks whose return values become versioned artifacts.

The adapter (``tracelet_task``, ``log_artifact``, ``load_artifact``) arrives with the Prefect
issue; this package holds its place in the distribution.
"""

__all__: list[str] = []

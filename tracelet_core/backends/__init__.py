"""Tracker backends: ``mlflow``, ``wandb``, ``clearml`` and ``aim``.

Each module imports its tracker's SDK, so import one only when you use it (the registry in
``tracelet_core._backends`` does that lazily for names passed to ``Experiment(backend=...)``).
"""

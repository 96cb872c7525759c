"""tracelet's benchmarks: ``python -m benchmarks`` runs every ``bench_*.py`` module's cases
(see ``benchmarks/_runner.py`` for the hook and ``benchmarks/README.md`` for the table)."""

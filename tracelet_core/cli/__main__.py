"""``python -m tracelet_core.cli``: the ``tracelet`` command line."""

from . import main

main()

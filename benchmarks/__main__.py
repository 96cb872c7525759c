"""``python -m benchmarks [--quick]``: the whole performance table in one run."""

import sys

from ._runner import main

sys.exit(main())

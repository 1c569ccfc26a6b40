"""``python -m benchmarks.sweep``: see ``run.py``."""

import sys

from benchmarks.sweep.run import main

sys.exit(main())

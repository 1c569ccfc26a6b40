"""``python -m benchmarks.zoo``: see ``run.py``."""

import sys

from benchmarks.zoo.run import main

sys.exit(main())

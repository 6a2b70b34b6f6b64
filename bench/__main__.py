"""``python -m bench``: the side-by-side benchmark (see bench/cli.py)."""

import sys

from bench.cli import main

sys.exit(main())

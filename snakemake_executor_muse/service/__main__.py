"""``python -m snakemake_executor_muse.service serve ...``: the same as ``muse``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

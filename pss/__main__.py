"""``python -m pss``: the ``pss`` command line, so that ``torchrun --nproc-per-node N -m pss train ...`` works."""
from __future__ import annotations

import sys

from pss.cli import main

if __name__ == "__main__":
    sys.exit(main())

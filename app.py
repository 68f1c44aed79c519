"""`python app.py`: serve the pss workbench on the embedded demo workspace (./pss-workspace, generated on first run).

Same as `pss-app` / `python -m pss_app`; any of its options may be given, e.g. `python app.py --port 7861`.
"""
from __future__ import annotations

import sys

from pss_app.__main__ import main

if __name__ == "__main__":
    sys.exit(main())

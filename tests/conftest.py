"""Root of the test suite: puts ``tests/`` on ``sys.path`` so every folder imports the shared helpers as
``support`` (``tests/support.py``).

tests/ has no ``__init__.py``: pytest's default ("prepend") import mode puts each test file's own folder on the
path, which is how ``tests/app`` finds ``inspect_support``; ``tests/`` itself would be on it for ``tests/app/*.py``
only when a file of ``tests/`` happened to be collected first, so it is added here, before any test module loads.
"""
from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

"""atheris harness: Range / If-Range / If-None-Match, the playback query and filter.

Targets and seeds: ``tests/fuzz/families/ranges.py``.  Run through ``run.py`` (``make fuzz``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.harness import main

if __name__ == "__main__":
    main("ranges")

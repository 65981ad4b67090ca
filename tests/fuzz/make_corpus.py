"""Build the seed corpus of every fuzz family: ``tests/fuzz/corpus/<family>/<sha1>``.

Each file is one seed of one target, prefixed with the target's selector byte
(``core.corpus``), made from the real inputs (``tests/media``, ``media/demo``,
``tests/golden``, valid licence bodies).  The folder is rebuilt from scratch;
what the fuzzers add goes to ``tests/fuzz/work/<family>/`` instead.

    python tests/fuzz/make_corpus.py [family …]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.fuzz.core import corpus  # noqa: E402
from tests.fuzz.families import NAMES, family  # noqa: E402

CORPUS = HERE / "corpus"


def build(name: str, root: Path = CORPUS) -> int:
    """Write family ``name``'s seeds under ``root``; returns how many files."""
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    entries = dict.fromkeys(corpus(family(name)))
    for entry in entries:
        (folder / hashlib.sha1(entry).hexdigest()).write_bytes(entry)
    return len(entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"families (default: all of {', '.join(NAMES)})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NAMES))
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}")
    for name in args.names or NAMES:
        print(f"{name}: {build(name)} seeds in {CORPUS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

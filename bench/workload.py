"""An in-process workload to profile with py-spy: a cipher or a protection loop for N seconds.

    .venv/bin/python bench/workload.py aes128|cbcs|cenc [--seconds 4]

``aes128`` runs ``encrypt_segment`` and ``cbcs``/``cenc`` run
``protect_fragment`` over every video segment of the dense asset, round and
round, single-threaded, until the time is up; it prints ``ready`` once its
imports and reads are done, so a profiler attached then sees only the loop.
Nothing is measured here: ``run.py`` points ``py-spy record --pid`` at it when
a cipher or packaging target is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from assets import DENSE_RUNG, make_dense

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from origin.container.init_segment import parse_init  # noqa: E402
from origin.crypto.aes128 import encrypt_segment  # noqa: E402
from origin.crypto.key import ContentKey  # noqa: E402
from origin.crypto.subsample import CommonScheme  # noqa: E402
from origin.packaging.segments import protect_fragment  # noqa: E402

KID = bytes.fromhex("00112233445566778899aabbccddeeff")
KEY = bytes.fromhex("ffeeddccbbaa99887766554433221100")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a workload for py-spy")
    parser.add_argument("name", choices=("aes128", "cbcs", "cenc"))
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    folder = make_dense().folder / DENSE_RUNG.folder
    segments = [(p.name, p.read_bytes()) for p in sorted(folder.glob("seg-*.m4s"))]
    info = parse_init((folder / "init.mp4").read_bytes())
    key = ContentKey(KID, KEY)
    print("ready", flush=True)  # imports and reads are done: a profiler may attach now
    deadline = time.monotonic() + args.seconds
    rounds = 0
    while time.monotonic() < deadline:
        for name, data in segments:
            if args.name == "aes128":
                encrypt_segment(KEY, KID, data)
            else:
                protect_fragment(data, info, CommonScheme(args.name), key, name)
        rounds += 1
    print(f"{args.name}: {rounds} rounds over {len(segments)} segments")
    return 0


if __name__ == "__main__":
    sys.exit(main())

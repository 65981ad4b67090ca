"""The atheris side of a fuzz family: instrument ``origin``, feed libFuzzer's inputs to the targets.

Each ``fuzz_<family>.py`` calls :func:`main` with its family's name; libFuzzer's
own flags (``-max_total_time``, ``-timeout``, corpus directories, …) pass through
``sys.argv``.  An input whose target raises anything but its typed errors is a
crash: libFuzzer stops and writes it to ``-artifact_prefix``.  ``run.py`` runs
the harnesses and collects what they did.

Mutation: libFuzzer's own mutators four times in five; otherwise
``core.mutate`` aimed at the target's structure starts (length fields, splices,
repetition into deep nesting), which byte-level mutation rarely builds.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(name: str) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import atheris

    from tests.fuzz.core import KINDS, mutate, pick
    from tests.fuzz.families import family

    with atheris.instrument_imports(include=["origin"]):
        targets = family(name)  # imports the family's origin modules, instrumented
    for target in targets:  # build every seed (and cache) before the clock starts
        target.seeds()

    def test_one_input(data: bytes) -> None:
        target, payload = pick(targets, data)
        target.exercise(payload)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.8 or not data:
            out: bytes = atheris.Mutate(data, max_size)
            return out
        target, payload = pick(targets, data)
        ops = [(rng.randrange(len(KINDS)), rng.getrandbits(17), rng.randrange(24),
                rng.getrandbits(32), rng.getrandbits(10)) for _ in range(rng.randint(1, 3))]
        mutated = mutate(payload, ops, anchors=target.anchors(payload), others=target.seeds())
        return (data[:1] + mutated)[:max_size]

    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()

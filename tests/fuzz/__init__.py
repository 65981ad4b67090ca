"""Fuzzing every parser of outside input: the shared targets and seeds, and atheris harnesses.

``targets`` names each parser entry point with the typed errors it may raise
and builds its seeds from the real inputs (``tests/media``, ``media/demo``,
``tests/golden``, valid licence bodies).  ``tests/test_fuzz_*.py`` run the
targets under hypothesis in ``make test``; ``fuzz_*.py`` here run them under
atheris for long runs (``run.py``, ``make fuzz``).  pytest collects nothing
from this folder: no file is named ``test_*.py``.
"""

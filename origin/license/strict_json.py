"""Strict JSON: what the licence module reads from clients, tokens and admins.

Pure: text in, values out; no I/O.  Callers map the one failure, ``ValueError``,
to their own typed error and message (``MalformedLicenseRequest``,
``MalformedSpcRequest``, ``TokenRejected``, the admin API's ``BadRequest``).

Rules (RFC 8259 §4 leaves the first two to the reader; here they are refused):

- an object that names a member twice is refused, so no reader can see a
  different value than the check did;
- ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON and are refused;
- bytes must be UTF-8 (no byte-order mark, no UTF-16/32 guessing);
- nesting deep enough to exhaust the parser's recursion is refused, not raised
  as a ``RecursionError``.

The ``ValueError``'s message is short (such as ``not UTF-8``, ``not JSON``, ``duplicate member``,
``not a JSON constant``, ``nested too deeply``) and never repeats the input.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn


def load_json(text: str | bytes) -> Any:
    """The JSON value of ``text`` (bytes: UTF-8) under the module rules; ``ValueError`` else."""
    try:
        source = text.decode("utf-8") if isinstance(text, bytes) else text
        return json.loads(
            source, object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except json.JSONDecodeError:
        raise ValueError("not JSON") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")
    return result


def _reject_constant(name: str) -> NoReturn:
    raise ValueError("not a JSON constant")

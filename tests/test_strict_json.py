"""``origin.license.strict_json``: one strict JSON reader for the licence module, and the
callers that map its ``ValueError`` to their own typed error and message."""

from __future__ import annotations

import pytest

from origin.license.clearkey import MalformedLicenseRequest, parse_license_request
from origin.license.fairplay import JSON_TYPE, MalformedSpcRequest, parse_spc_request
from origin.license.strict_json import load_json


@pytest.mark.parametrize(("text", "value"), [
    ('{"a": 1, "b": [true, null, 1.5, "é"]}', {"a": 1, "b": [True, None, 1.5, "é"]}),
    (b'{"a": {"a": 1}}', {"a": {"a": 1}}),  # the same name in two objects is fine
    (b"[1, 2]", [1, 2]),
    ('"text"', "text"),
], ids=["str", "nested same name", "array", "string"])
def test_strict_json_reads_json(text: str | bytes, value: object) -> None:
    assert load_json(text) == value


@pytest.mark.parametrize(("text", "reason"), [
    ('{"a": 1, "a": 2}', "duplicate member"),
    (b'{"x": {"a": 1, "a": 1}}', "duplicate member"),
    (b'{"a": NaN}', "not a JSON constant"),
    (b"[Infinity]", "not a JSON constant"),
    ("-Infinity", "not a JSON constant"),
    (b'{"a": "\xff"}', "not UTF-8"),
    ('{"a": 1}'.encode("utf-16"), "not UTF-8"),
    (b'\xef\xbb\xbf{"a": 1}', "not JSON"),
    (b'{"a": 1} x', "not JSON"),
    (b"", "not JSON"),
    (b"[" * 200_000, "nested too deeply"),
], ids=["duplicate", "nested duplicate", "NaN", "Infinity", "-Infinity", "bad utf-8",
        "utf-16", "utf-8 bom", "trailing data", "empty", "deep"])
def test_strict_json_refuses_with_a_short_reason(text: str | bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$") as caught:
        load_json(text)
    assert not isinstance(caught.value, RecursionError | UnicodeDecodeError)


@pytest.mark.parametrize("body", [
    b'{"kids": ["AAAAAAAAAAAAAAAAAAAAAA"], "kids": ["AAAAAAAAAAAAAAAAAAAAAA"]}',
    b'{"kids": ["AAAAAAAAAAAAAAAAAAAAAA"], "n": NaN}',
    b"[" * 60_000,
], ids=["duplicate", "NaN", "deep"])
def test_callers_keep_their_own_errors(body: bytes) -> None:
    with pytest.raises(MalformedLicenseRequest, match=r"^licence request is not JSON$"):
        parse_license_request(body)
    spc_body = body.replace(b'"kids": ["AAAAAAAAAAAAAAAAAAAAAA"]', b'"spc": "AAAA"')
    with pytest.raises(MalformedSpcRequest, match=r"^SPC request is not JSON$"):
        parse_spc_request(spc_body, JSON_TYPE)


def test_callers_accept_strict_json() -> None:
    assert len(parse_license_request(b'{"kids": ["AAAAAAAAAAAAAAAAAAAAAA"]}').kids) == 1
    assert parse_spc_request(b'{"spc": "AAAA"}', JSON_TYPE).spc == bytes(3)

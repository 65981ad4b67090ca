"""The audit log of licence decisions: one JSON line per decision, on ``origin.audit``.

Rules:

- Every decision ``origin.license.request_authorization.authorize`` makes — granted,
  refused (401/403) or failed (503: token checks not configured; 500) — goes through
  ``DecisionRecorder.record``, which counts it (``origin.license.metrics``) and writes
  one line on the ``origin.audit`` logger.  Nothing else writes either.  A request
  stopped before the policy was asked is not a decision and writes no line: a
  malformed request (400, 413), an unknown key id (404: there is no asset, hence no
  policy, to decide with — the access log has the 404).
- A line is a JSON object (``DecisionRecord.to_json``): ``time`` (UTC, ISO 8601, ms),
  ``client``, ``key_system``, ``assets``, ``kids`` (hex: a key id is not a secret),
  ``license_type``, ``result`` (``granted``/``refused``/``error``), ``reason`` (the
  short fixed text of the decision or of the refusal), ``subject`` (the ``sub`` of a
  token that verified), ``token_hash``, ``request_id``.  Never a key, a token, a query
  string or any other header.
- ``token_hash`` is the first 16 hex digits of SHA-256 over the token id — its
  ``jti``, else the SHA-256 hex of the whole token, as ``origin.license.token`` defines
  it; the keystore's replay counter keys on the same digest.  A token that did not
  verify is hashed the same way as one without ``jti``, so repeated bad tokens can be
  told apart without ever being written.
- ``client``: the origin's licence proxy sends the player's address in
  ``X-Forwarded-For``.  The licence module believes it only because it listens on a
  private socket (the co-hosted module's 0600 Unix socket, or loopback TCP): the
  header counts only when the peer is a Unix socket or a loopback address, and then
  only its last address (the one the proxy wrote after anything a player sent).
  Otherwise the peer's own address.
- ``request_id``: an ``X-Request-Id`` header of 1–128 characters ``[A-Za-z0-9._:-]``
  (set by a CDN or load balancer in front of the origin), else null.
- ``--audit-log FILE`` (``origin serve``, ``origin license serve``):
  ``attach_audit_file`` adds a handler writing the bare JSON lines to FILE, opened
  append-only and created mode 0600 (an existing file is narrowed to 0600), flushed
  after every line; the ``origin.audit`` logger is then at INFO whatever the log
  level.  Lines also propagate to the process log.
- ``record`` writes the line where the decision was made, before the response
  leaves: on the event loop for ``open`` policies (one buffered line, like the access
  log's), else in the executor job that decided.  The JSON is built only when the
  ``origin.audit`` logger would emit it; the decision is counted either way.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from origin.license.metrics import DecisionResult, LicenseMetrics
from origin.license.policy import KeyRequest
from origin.license.token import VerifiedToken

AUDIT_LOGGER = "origin.audit"
AUDIT_FILE_MODE = 0o600
TOKEN_HASH_DIGITS = 16
FORWARDED_FOR = "X-Forwarded-For"
REQUEST_ID = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class Requester:
    """Who sent a licence request, as far as the licence module can tell (module rules)."""

    client: str | None
    request_id: str | None


@dataclass(frozen=True)
class DecisionRecord:
    """One audit line (module rules).  Holds no secret, so its repr is safe."""

    time: str
    client: str | None
    key_system: str
    assets: tuple[str, ...]
    kids: tuple[str, ...]
    license_type: str | None
    result: DecisionResult
    reason: str
    subject: str | None
    token_hash: str | None
    request_id: str | None

    def to_json(self) -> str:
        """The record as one line of compact JSON (no newline in it, whatever it holds)."""
        return _ENCODER.encode({
            "time": self.time, "client": self.client, "key_system": self.key_system,
            "assets": list(self.assets), "kids": list(self.kids),
            "license_type": self.license_type, "result": self.result.value,
            "reason": self.reason, "subject": self.subject, "token_hash": self.token_hash,
            "request_id": self.request_id,
        })


def requester_of(request: web.Request) -> Requester:
    """The client address and request id of ``request`` (module rules)."""
    client = request.remote or None
    if _private_peer(request):
        forwarded = request.headers.getall(FORWARDED_FOR, [])
        last = forwarded[-1].rsplit(",", 1)[-1].strip() if forwarded else ""
        if _address(last) is not None:
            client = last
    request_id = request.headers.get(REQUEST_ID)
    if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
        request_id = None
    return Requester(client, request_id)


def _private_peer(request: web.Request) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        return True
    address = _address(request.remote or "")
    return address is not None and address.is_loopback


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def token_hash(token: VerifiedToken | None, presented: str | None) -> str | None:
    """The audit line's ``token_hash`` (module rules); ``None`` when no token came."""
    if token is not None:
        token_id = token.token_id
    elif presented is not None:
        token_id = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).hexdigest()
    else:
        return None
    digest = hashlib.sha256(token_id.encode("utf-8", "surrogateescape")).hexdigest()
    return digest[:TOKEN_HASH_DIGITS]


def describe_decision(
    requests: Sequence[KeyRequest],
    requester: Requester,
    result: DecisionResult,
    reason: str,
    token: VerifiedToken | None,
    *,
    now: datetime.datetime | None = None,
) -> DecisionRecord:
    """The record of one decision over ``requests`` (which share one token)."""
    moment = now if now is not None else datetime.datetime.now(datetime.UTC)
    first = requests[0] if requests else None
    return DecisionRecord(
        time=moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds"),
        client=requester.client,
        key_system=first.key_system.value if first is not None else "none",
        assets=tuple(dict.fromkeys(r.asset for r in requests)),
        kids=tuple(dict.fromkeys(r.kid.hex() for r in requests)),
        license_type=first.license_type.value if first is not None else None,
        result=result,
        reason=reason,
        subject=token.subject if token is not None else None,
        token_hash=token_hash(token, first.token if first is not None else None),
        request_id=requester.request_id,
    )


class DecisionRecorder:
    """Records licence decisions: the decision counter and the audit line, together."""

    def __init__(self, metrics: LicenseMetrics, logger: logging.Logger | None = None) -> None:
        self._metrics = metrics
        self._log = logger if logger is not None else logging.getLogger(AUDIT_LOGGER)

    def __repr__(self) -> str:
        return "DecisionRecorder()"

    def record(self, record: DecisionRecord) -> None:
        """Count the decision and write its audit line.  Blocking (the audit file)."""
        self._metrics.count_decision(record.key_system, record.result, record.reason)
        if self._log.isEnabledFor(logging.INFO):  # the line is made only to be written
            self._log.info("%s", record.to_json())


class _AuditLineFormatter(logging.Formatter):
    """The bare message: the audit file holds nothing but JSON lines."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def open_audit_file(path: Path) -> int:
    """Open ``path`` for appending, created 0600 (an existing file narrowed to 0600);
    the file descriptor.  ``OSError`` if it cannot be.  Blocking."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, AUDIT_FILE_MODE)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if stat.S_IMODE(info.st_mode) != AUDIT_FILE_MODE:
            os.fchmod(fd, AUDIT_FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def attach_audit_file(path: Path) -> logging.Handler:
    """Write the ``origin.audit`` lines to ``path`` too (module rules); the handler, for
    ``detach_audit_file``.  ``OSError`` if the file cannot be opened.  Blocking."""
    stream = os.fdopen(open_audit_file(path), "a", encoding="utf-8", buffering=1)
    handler = logging.StreamHandler(stream)  # flushes after every record
    handler.setFormatter(_AuditLineFormatter())
    handler.setLevel(logging.INFO)
    logger = logging.getLogger(AUDIT_LOGGER)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler


def detach_audit_file(handler: logging.Handler) -> None:
    """Stop writing to the file ``attach_audit_file`` opened, and close it."""
    logging.getLogger(AUDIT_LOGGER).removeHandler(handler)
    handler.flush()
    if isinstance(handler, logging.StreamHandler):
        handler.stream.close()
    handler.close()

"""Authorising a licence route's request: the player's token, the key lookup, the decision.

Rules, for every licence route (AES-128 key, ClearKey, FairPlay, Widevine, PlayReady):

- the player's token is ``presented_token`` of the request's headers and query
  (``origin.license.authorization``);
- ``authorize`` runs the app's ``Authorizer`` and records the decision
  (``DecisionRecorder``: counted and written to the audit log) in one executor job,
  before the response leaves; a refusal raises 401/403/503 after it is recorded;
- ``authorize_kids`` is the whole step for a request naming several kids (ClearKey,
  Widevine, PlayReady), in this order: every kid is looked up (one executor job); one
  unknown kid → 404 "unknown key id" and nothing is decided or recorded; then every
  kid is authorised as one request — all or nothing.

Every keystore and audit call blocks and runs in the default executor (``run_blocking``).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from origin.errors import Forbidden, NotFound, OriginError, Unauthorized
from origin.license.app_state import AUTHORIZER_KEY, DECISIONS_KEY, KEYSTORE_KEY, run_blocking
from origin.license.audit import DecisionRecorder, Requester, describe_decision, requester_of
from origin.license.authorization import Authorizer, presented_token
from origin.license.keystore import Keystore, StoredKey
from origin.license.metrics import DecisionResult
from origin.license.policy import Decision, KeyRequest, KeySystem, LicenseType


def player_token(request: web.Request) -> str | None:
    """The token the player presented (``origin.license.authorization.presented_token``)."""
    return presented_token(request.headers, request.query)


async def authorize_kids(request: web.Request, kids: Sequence[bytes], key_system: KeySystem,
                         license_type: LicenseType) -> list[StoredKey]:
    """Look every kid up, 404 if one is unknown, then authorise them all (module rules);
    the stored keys, in the order of ``kids``."""
    found = await run_blocking(_get_keys, request.app[KEYSTORE_KEY], kids)
    if any(stored is None for stored in found):
        raise NotFound("unknown key id")
    keys = [stored for stored in found if stored is not None]
    token = player_token(request)
    await authorize(
        request,
        [KeyRequest(s.key.kid, s.record.asset, key_system, token, license_type) for s in keys],
    )
    return keys


async def authorize(request: web.Request, key_requests: list[KeyRequest]) -> Decision:
    """Run the ``Authorizer`` (in the executor); raises 401/403/503, else the decision.

    Every decision is recorded once, in the same executor job (``DecisionRecorder``):
    counted (``origin.license.metrics``) and written to the audit log
    (``origin.license.audit``) with its short fixed reason, before the response leaves.
    """
    return await run_blocking(
        _decide_and_record,
        request.app[AUTHORIZER_KEY],
        request.app[DECISIONS_KEY],
        key_requests,
        requester_of(request),
    )


def _get_keys(keystore: Keystore, kids: Sequence[bytes]) -> list[StoredKey | None]:
    """Look several keys up in one executor job."""
    return [keystore.get(kid) for kid in kids]


def _decide_and_record(authorizer: Authorizer, recorder: DecisionRecorder,
                       key_requests: list[KeyRequest], requester: Requester) -> Decision:
    """Decide and record the decision (blocking: SQLite, the audit file)."""
    try:
        verdict = authorizer.settle(key_requests)
    except OriginError as exc:
        recorder.record(describe_decision(key_requests, requester, DecisionResult.ERROR,
                                          exc.detail, None))
        raise
    except Exception:
        recorder.record(describe_decision(key_requests, requester, DecisionResult.ERROR,
                                          OriginError.reason, None))
        raise
    if verdict.refusal is not None:
        refused = isinstance(verdict.refusal, (Unauthorized, Forbidden))
        result = DecisionResult.REFUSED if refused else DecisionResult.ERROR
        recorder.record(describe_decision(key_requests, requester, result,
                                          verdict.refusal.detail, verdict.token))
        raise verdict.refusal
    decision = verdict.outcome()
    recorder.record(describe_decision(key_requests, requester, DecisionResult.GRANTED,
                                      decision.reason, verdict.token))
    return decision

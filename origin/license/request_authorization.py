"""Authorising a licence route's request: the player's token, the key lookup, the decision.

Rules, for every licence route (AES-128 key, ClearKey, FairPlay, Widevine, PlayReady):

- the player's token is ``presented_token`` of the request's headers and query
  (``origin.license.authorization``);
- keys and policies are read through the app's ``KeyCache`` (``origin.license.key_cache``:
  from memory while the keystore is unchanged, else in the executor);
- ``authorize`` runs the app's ``Authorizer`` and records the decision
  (``DecisionRecorder``: counted and written to the audit log) before the response
  leaves; a refusal raises 401/403/503 after it is recorded.  When every policy is
  held by the cache and ``open``, that is done on the loop (nothing in it blocks but
  the audit line's write, as the access log's); otherwise in one executor job, which
  also reads the policies the cache did not hold (token checks, the replay counter,
  SQLite: one executor hop, as before the cache).  A policy that cannot be read is
  recorded as an ``error`` decision, as a failure inside the ``Authorizer`` is;
- ``authorize_kids`` is the whole step for a request naming several kids (ClearKey,
  Widevine, PlayReady), in this order: every kid is looked up; one unknown kid → 404
  "unknown key id" and nothing is decided or recorded; then every kid is authorised as
  one request — all or nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web

from origin.errors import Forbidden, NotFound, OriginError, Unauthorized
from origin.license.app_state import (
    AUTHORIZER_KEY,
    DECISIONS_KEY,
    KEY_CACHE_KEY,
    KEYSTORE_KEY,
    run_blocking,
)
from origin.license.audit import DecisionRecorder, Requester, describe_decision, requester_of
from origin.license.authorization import Authorizer, Verdict, presented_token
from origin.license.keystore import Keystore, StoredKey
from origin.license.metrics import DecisionResult
from origin.license.policy import ContentKeyPolicy, Decision, KeyRequest, KeySystem, LicenseType


def player_token(request: web.Request) -> str | None:
    """The token the player presented (``origin.license.authorization.presented_token``)."""
    return presented_token(request.headers, request.query)


async def stored_key(request: web.Request, kid: bytes) -> StoredKey | None:
    """The stored key with this id, if any (through the app's ``KeyCache``)."""
    return await request.app[KEY_CACHE_KEY].get(kid)


async def authorize_kids(request: web.Request, kids: Sequence[bytes], key_system: KeySystem,
                         license_type: LicenseType) -> list[StoredKey]:
    """Look every kid up, 404 if one is unknown, then authorise them all (module rules);
    the stored keys, in the order of ``kids``."""
    found = await request.app[KEY_CACHE_KEY].get_many(kids)
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
    """Run the ``Authorizer``; raises 401/403/503, else the decision (module rules).

    Every decision is recorded once (``DecisionRecorder``): counted
    (``origin.license.metrics``) and written to the audit log (``origin.license.audit``)
    with its short fixed reason, before the response leaves.
    """
    app = request.app
    authorizer, recorder, cache = app[AUTHORIZER_KEY], app[DECISIONS_KEY], app[KEY_CACHE_KEY]
    requester = requester_of(request)
    policies = cache.held_policies(r.asset for r in key_requests)
    if policies is not None and not authorizer.needs_executor(policies):
        return _settle_and_record(authorizer, recorder, key_requests, requester,
                                  policies).outcome()
    epoch = cache.epoch
    verdict, read = await run_blocking(
        _read_settle_and_record, authorizer, app[KEYSTORE_KEY], recorder, key_requests,
        requester, policies,
    )
    if policies is None:
        cache.keep_policies(read, epoch)
    return verdict.outcome()


def _read_settle_and_record(
    authorizer: Authorizer, keystore: Keystore, recorder: DecisionRecorder,
    key_requests: list[KeyRequest], requester: Requester,
    policies: Mapping[str, ContentKeyPolicy] | None,
) -> tuple[Verdict, Mapping[str, ContentKeyPolicy]]:
    """The policies (read from the keystore unless given), then the recorded verdict
    under them; both (blocking: SQLite, the audit file)."""
    if policies is None:
        try:
            policies = {r.asset: keystore.policy(r.asset) for r in key_requests}
        except Exception as exc:
            _record_failure(recorder, key_requests, requester, exc)
            raise
    return _settle_and_record(authorizer, recorder, key_requests, requester, policies), policies


def _settle_and_record(authorizer: Authorizer, recorder: DecisionRecorder,
                       key_requests: list[KeyRequest], requester: Requester,
                       policies: Mapping[str, ContentKeyPolicy]) -> Verdict:
    """Decide and record the decision; the verdict, its refusal not raised yet (may
    block: SQLite, the audit file)."""
    try:
        verdict = authorizer.settle(key_requests, policies)
    except Exception as exc:
        _record_failure(recorder, key_requests, requester, exc)
        raise
    if verdict.refusal is not None:
        refused = isinstance(verdict.refusal, (Unauthorized, Forbidden))
        result = DecisionResult.REFUSED if refused else DecisionResult.ERROR
        recorder.record(describe_decision(key_requests, requester, result,
                                          verdict.refusal.detail, verdict.token))
    else:
        decision = verdict.outcome()
        recorder.record(describe_decision(key_requests, requester, DecisionResult.GRANTED,
                                          decision.reason, verdict.token))
    return verdict


def _record_failure(recorder: DecisionRecorder, key_requests: list[KeyRequest],
                    requester: Requester, exc: Exception) -> None:
    """Record a decision that could not be made: its typed reason, else the generic one."""
    reason = exc.detail if isinstance(exc, OriginError) else OriginError.reason
    recorder.record(describe_decision(key_requests, requester, DecisionResult.ERROR,
                                      reason, None))

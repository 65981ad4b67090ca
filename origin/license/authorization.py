"""Authorisation of key and licence requests: token, policy, replay counter — in that order.

Rules:

- Every licence route (AES-128 key, ClearKey, FairPlay, Widevine, PlayReady)
  calls ``Authorizer.authorize`` before any key byte is read for the reply or
  any request leaves for a KSM or an upstream licence server.
- Only assets whose policy is ``token`` look at the token.  No token → 401;
  a token that does not verify (signature, algorithm, exp/nbf, aud, iss,
  shape) → 401; a valid token that does not cover the request (asset, kid,
  offline) → 403; a token past its ``max_uses`` → 403.  The use is counted
  only once everything else passed, once per licence request.
- A token policy with no token verification configured → 503: a
  misconfiguration must not open the door.
- Where the token comes from (``presented_token``): ``Authorization: Bearer``,
  else the ``token`` query parameter, else the Kaltura SDK's ``ks`` query
  parameter, else the ``user_token`` inside its base64 JSON ``custom_data``.

- ``settle`` is ``authorize`` without the raise: it returns a ``Verdict`` (the
  decision or the refusal, and the token that verified), so the caller can record
  who was refused and why (``origin.license.audit``) before raising.
- The policies come from the keystore, or from the caller (``policies``: as the
  keystore holds them now, ``origin.license.key_cache``).  With every policy ``open``
  and the policies given, ``settle`` neither checks a token nor touches SQLite: it
  does not block (``needs_executor`` is false).

Otherwise ``authorize`` and ``settle`` block (SQLite: policies, the replay counter;
token verification) and run in the executor.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from origin.errors import DependencyUnavailable, Forbidden, OriginError, Unauthorized
from origin.license.keystore import Keystore
from origin.license.policy import (
    ContentKeyPolicy,
    Decision,
    KeyRequest,
    PolicyDecisionPoint,
    Restriction,
)
from origin.license.strict_json import load_json
from origin.license.token import TokenRejected, VerifiedToken

REALM = "origin-license"
MAX_CUSTOM_DATA_CHARS = 8192


class TokenVerifier(Protocol):
    def verify(self, token: str, *, now: float) -> VerifiedToken: ...


class TokenVerifierBox:
    """The app's token verifier, filled in when the app starts (``None``: not configured)."""

    def __init__(self) -> None:
        self.verifier: TokenVerifier | None = None

    def verify(self, token: str, *, now: float) -> VerifiedToken:
        if self.verifier is None:
            raise DependencyUnavailable("token verification is not configured")
        return self.verifier.verify(token, now=now)

    @property
    def configured(self) -> bool:
        return self.verifier is not None


@dataclass(frozen=True)
class Verdict:
    """What ``Authorizer.settle`` found: the decision, or the refusal to raise for it
    (``Unauthorized``/``Forbidden``, or ``DependencyUnavailable`` when it could not
    decide), and the token, when one verified."""

    decision: Decision | None
    refusal: OriginError | None = None
    token: VerifiedToken | None = None

    def outcome(self) -> Decision:
        """The decision, or raise the refusal."""
        if self.refusal is not None:
            raise self.refusal
        if self.decision is None:
            raise Forbidden("no decision")
        return self.decision


class Authorizer:
    """Decides licence requests against stored policies.  Blocking; thread-safe."""

    def __init__(
        self,
        keystore: Keystore,
        verifier: TokenVerifierBox,
        *,
        pdp: PolicyDecisionPoint | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keystore = keystore
        self._verifier = verifier
        self._pdp = pdp if pdp is not None else PolicyDecisionPoint()
        self._clock = clock

    def policy(self, asset: str) -> ContentKeyPolicy:
        return self._keystore.policy(asset)

    def authorize(self, requests: Sequence[KeyRequest],
                  policies: Mapping[str, ContentKeyPolicy] | None = None) -> Decision:
        """Allow every request or raise ``Unauthorized``/``Forbidden``.  All share one token.

        Returns the (combined) decision: the shortest durations of the policies met.
        """
        return self.settle(requests, policies).outcome()

    def settle(self, requests: Sequence[KeyRequest],
               policies: Mapping[str, ContentKeyPolicy] | None = None) -> Verdict:
        """Decide like ``authorize``, but hand the refusal back instead of raising it,
        with the token that verified (for the audit log).  Other errors (the keystore)
        still raise.  ``policies``: every request's asset's policy, if the caller has
        them (module rules); else they are read from the keystore."""
        if not requests:
            return Verdict(None, Forbidden("no key requested"))
        now = self._clock()
        if policies is None:
            policies = {r.asset: self._keystore.policy(r.asset) for r in requests}
        verified: VerifiedToken | None = None
        if any(p.restriction is Restriction.TOKEN for p in policies.values()):
            try:
                verified = self._verify(requests[0].token, now)
            except (Unauthorized, DependencyUnavailable) as exc:
                return Verdict(None, exc)
        try:
            return Verdict(self._decide(requests, policies, verified, now), None, verified)
        except Forbidden as exc:
            return Verdict(None, exc, verified)

    def _decide(self, requests: Sequence[KeyRequest], policies: Mapping[str, ContentKeyPolicy],
                verified: VerifiedToken | None, now: float) -> Decision:
        decisions = []
        for request in requests:
            entitlement = verified.entitlement if verified is not None else None
            decision = self._pdp.decide(request, policies[request.asset], entitlement)
            if not decision.allowed:
                raise Forbidden(decision.reason)
            decisions.append(decision)
        if verified is not None and verified.max_uses is not None:
            uses = self._keystore.count_token_use(verified.token_id, verified.expires_at,
                                                  int(now))
            if uses > verified.max_uses:
                raise Forbidden("token use limit reached")
        return Decision(
            True,
            decisions[0].reason,
            decisions[0].license_type,
            _shortest(d.license_duration_s for d in decisions),
            _shortest(d.rental_duration_s for d in decisions),
        )

    @staticmethod
    def needs_executor(policies: Mapping[str, ContentKeyPolicy]) -> bool:
        """Whether ``settle`` under these policies may block (a token is checked, a use
        may be counted in SQLite); false when every policy is ``open``."""
        return any(p.restriction is not Restriction.OPEN for p in policies.values())

    def _verify(self, token: str | None, now: float) -> VerifiedToken:
        if token is None:
            raise Unauthorized("a token is required", realm=REALM)
        if not self._verifier.configured:
            raise DependencyUnavailable("token verification is not configured")
        try:
            return self._verifier.verify(token, now=now)
        except TokenRejected as exc:
            raise Unauthorized(exc.reason, realm=REALM) from None


def _shortest(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def presented_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The token a player presented, from the first source that has one (module rules)."""
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for name in ("token", "ks"):
        if query.get(name):
            return query[name]
    custom = query.get("custom_data")
    if custom and len(custom) <= MAX_CUSTOM_DATA_CHARS:
        return _kaltura_user_token(custom)
    return None


def _kaltura_user_token(custom_data: str) -> str | None:
    """``user_token`` of Kaltura's ``custom_data`` (base64 or base64url JSON), if any."""
    padded = custom_data + "=" * (-len(custom_data) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        data = load_json(raw)
    except (binascii.Error, ValueError):
        return None
    token = data.get("user_token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and token else None

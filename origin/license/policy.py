"""Content key policies and the policy decision point.

Rules (the Azure Media Services / Kaltura model, SPECS §4, §6):

- Every asset has one *content key policy*; an asset without a stored policy
  gets ``DEFAULT_POLICY``: open, streaming only, no durations.
- Restriction ``open``: any caller may get the asset's keys.  Restriction
  ``token``: the caller must present a valid JWT (``origin.license.token``)
  bound to the asset and/or the key id.
- Licence rules: a *streaming* licence is always allowed when the restriction
  is met; a *persistent* (offline) licence only when the policy says
  ``persistent`` and, under a token restriction, the token carries the
  offline entitlement.
- Durations travel with the grant to whatever builds the licence (a FairPlay
  KSM lease, an upstream licence server): ``license_duration_s`` bounds
  playback once started, ``rental_duration_s`` bounds how long a persistent
  licence may be kept.

``decide`` is pure: no I/O, no clock.  Token verification and the replay
counter live in ``origin.license.authorization``, which calls it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from origin.errors import BadRequest

MAX_DURATION_S = 10 * 365 * 24 * 3600


class KeySystem(enum.Enum):
    """How the key reaches the player."""

    AES128 = "aes128"
    CLEARKEY = "clearkey"
    FAIRPLAY = "fairplay"
    WIDEVINE = "widevine"
    PLAYREADY = "playready"


class Restriction(enum.Enum):
    OPEN = "open"
    TOKEN = "token"  # noqa: S105 - a restriction kind, not a secret


class LicenseType(enum.Enum):
    STREAMING = "streaming"
    PERSISTENT = "persistent"


@dataclass(frozen=True)
class ContentKeyPolicy:
    """Who may get an asset's keys, and for what kind of licence."""

    restriction: Restriction = Restriction.OPEN
    persistent: bool = False  # persistent (offline) licences allowed
    license_duration_s: int | None = None
    rental_duration_s: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "restriction": self.restriction.value,
            "persistent": self.persistent,
            "license_duration_s": self.license_duration_s,
            "rental_duration_s": self.rental_duration_s,
        }


DEFAULT_POLICY = ContentKeyPolicy()


def parse_policy(data: Mapping[str, Any]) -> ContentKeyPolicy:
    """A policy from its JSON form (admin API, CLI); ``BadRequest`` names the bad field."""
    if not isinstance(data, Mapping):
        raise BadRequest("policy must be a JSON object")
    unknown = set(data) - {"restriction", "persistent", "license_duration_s",
                           "rental_duration_s"}
    if unknown:
        raise BadRequest(f"unknown policy field {sorted(unknown)[0]!r}")
    restriction_text = data.get("restriction", Restriction.OPEN.value)
    try:
        restriction = Restriction(restriction_text)
    except ValueError:
        raise BadRequest("restriction must be 'open' or 'token'") from None
    persistent = data.get("persistent", False)
    if not isinstance(persistent, bool):
        raise BadRequest("persistent must be true or false")
    return ContentKeyPolicy(
        restriction=restriction,
        persistent=persistent,
        license_duration_s=_duration(data, "license_duration_s"),
        rental_duration_s=_duration(data, "rental_duration_s"),
    )


def _duration(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_DURATION_S:
        raise BadRequest(f"{name} must be a whole number of seconds, 1 to {MAX_DURATION_S}")
    return value


@dataclass(frozen=True)
class KeyRequest:
    """A player's request for one key, with the token it presented (never in reprs)."""

    kid: bytes
    asset: str
    key_system: KeySystem
    token: str | None = field(default=None, repr=False)
    license_type: LicenseType = LicenseType.STREAMING


@dataclass(frozen=True)
class Entitlement:
    """What a verified token grants (filled from its claims; ``None`` = not restricted)."""

    assets: frozenset[str] | None
    kids: frozenset[bytes] | None
    offline: bool


@dataclass(frozen=True)
class Decision:
    """The answer of the policy: allowed or not, with a short reason safe to show a client."""

    allowed: bool
    reason: str
    license_type: LicenseType = LicenseType.STREAMING
    license_duration_s: int | None = None
    rental_duration_s: int | None = None


class PolicyDecisionPoint:
    """Decides whether a key request may be served.  Pure and cheap; no I/O."""

    def decide(
        self,
        request: KeyRequest,
        policy: ContentKeyPolicy = DEFAULT_POLICY,
        entitlement: Entitlement | None = None,
    ) -> Decision:
        """Apply ``policy`` to ``request``; ``entitlement`` is the verified token's, if any.

        The caller has already refused a token restriction without a valid token
        (401); here a missing entitlement under ``token`` is a refusal too.
        """
        persistent = request.license_type is LicenseType.PERSISTENT
        if policy.restriction is Restriction.TOKEN:
            if entitlement is None:
                return Decision(False, "a token is required")
            if entitlement.assets is not None and request.asset not in entitlement.assets:
                return Decision(False, "token is not valid for this asset")
            if entitlement.kids is not None and request.kid not in entitlement.kids:
                return Decision(False, "token is not valid for this key")
            if persistent and not entitlement.offline:
                return Decision(False, "token does not allow offline playback")
        if persistent and not policy.persistent:
            return Decision(False, "persistent licences are not allowed for this asset")
        return Decision(
            True,
            f"{policy.restriction.value} policy",
            request.license_type,
            policy.license_duration_s,
            policy.rental_duration_s if persistent else None,
        )

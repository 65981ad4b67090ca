"""The policy decision point: every key or licence request is decided here.

The policy is open for now (every request is allowed); token policies (JWT,
entitlements, device limits) plug in by replacing ``PolicyDecisionPoint``
without touching the routes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class KeySystem(enum.Enum):
    """How the key reaches the player."""

    AES128 = "aes128"
    CLEARKEY = "clearkey"
    FAIRPLAY = "fairplay"
    WIDEVINE = "widevine"
    PLAYREADY = "playready"


@dataclass(frozen=True)
class KeyRequest:
    """A player's request for one key, with the token it presented (never in reprs)."""

    kid: bytes
    asset: str
    key_system: KeySystem
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Decision:
    """The answer of the policy: allowed or not, and a short reason safe to show a client."""

    allowed: bool
    reason: str


class PolicyDecisionPoint:
    """Decides whether a key request may be served.  Synchronous and cheap; no I/O."""

    def decide(self, request: KeyRequest) -> Decision:
        """Open policy: every request is allowed."""
        return Decision(allowed=True, reason="open policy")

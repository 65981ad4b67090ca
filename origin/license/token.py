"""Player tokens (JWT): what a verified token says.  (Verification: to be written.)"""

from __future__ import annotations

from dataclasses import dataclass

from origin.license.policy import Entitlement


class TokenRejected(Exception):
    """The token does not verify; ``reason`` is short and safe to show a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VerifiedToken:
    """A token whose signature and time/audience/issuer claims checked out."""

    token_id: str  # the jti claim, else a digest of the whole token
    expires_at: int  # exp, seconds since the epoch
    entitlement: Entitlement
    max_uses: int | None

"""Reward tokens: an HMAC binding request id, experiment, variant, expiry and the record's nonce,
so that only the client that received a prediction can reward it, only for the variant that
served it, and never another prediction that reused its request id (possible while records are
spooled: reuse cannot be seen then)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from dataclasses import dataclass

from gateway.errors import Forbidden, NotFound


@dataclass(frozen=True)
class TokenClaims:
    experiment: str
    variant: str
    expires_at: float
    nonce: str = ""  # the prediction record's ('' in tokens signed before nonces were)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class RewardTokens:
    """`keys[0]` signs; every key verifies, so a secret can be rotated without refusing the
    tokens already handed out."""

    def __init__(self, *keys: str):
        usable = [k.encode() for k in keys if k]
        if not usable:
            raise ValueError("at least one reward-token key is needed")
        self._keys = usable

    @staticmethod
    def _mac(key: bytes, request_id: str, payload: str) -> str:
        # Hex, compared as text: a base64 tail has spare bits that would let two texts decode
        # to the same bytes.
        return hmac.new(key, f"{request_id}\n{payload}".encode(), hashlib.sha256).hexdigest()

    def sign(self, request_id: str, claims: TokenClaims) -> str:
        payload = _b64(
            json.dumps(
                {"e": claims.experiment, "v": claims.variant, "x": math.ceil(claims.expires_at),
                 **({"n": claims.nonce} if claims.nonce else {})}, separators=(",", ":")
            ).encode()
        )
        return f"{payload}.{self._mac(self._keys[0], request_id, payload)}"

    def verify(self, request_id: str, token: object, now: float) -> TokenClaims:
        """The claims of a valid token; Forbidden for a missing, malformed or forged one, and
        NotFound once it expired (the request id is no longer known)."""
        if not isinstance(token, str) or not token:
            raise Forbidden("a reward needs the 'token' returned with the prediction", code="token_missing")
        payload, sep, mac = token.partition(".")
        # compare_digest refuses non-ASCII text with a TypeError; such a token is simply invalid.
        if not sep or len(token) > 2048 or not token.isascii():
            raise Forbidden("the reward token is malformed", code="token_invalid")
        if not any(hmac.compare_digest(mac, self._mac(k, request_id, payload)) for k in self._keys):
            raise Forbidden("the reward token does not match this request", code="token_invalid")
        try:
            data = json.loads(_unb64(payload))
            claims = TokenClaims(str(data["e"]), str(data["v"]), float(data["x"]), str(data.get("n", "")))
        except (ValueError, KeyError, TypeError):
            raise Forbidden("the reward token is malformed", code="token_invalid") from None
        if now > claims.expires_at:
            raise NotFound(f"request {request_id!r} expired; its reward window is over", code="request_expired")
        return claims

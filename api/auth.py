"""Session tokens: a signed JWT bound to one session id (HS256).

Every response issues a fresh token (sliding expiry); older tokens stay valid until their own
``exp`` so several tabs keep working, unless the session revokes everything issued before an
instant (``iat_us``, microseconds; see ``POST /api/support/sessions/{id}/token``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt

TOKEN_TYPE = "session"


class TokenError(Exception):
    """A token that is missing, malformed, expired or not ours."""


class SessionTokens:
    """Issue and check session tokens."""

    def __init__(self, secret: str, *, ttl: timedelta) -> None:
        self._secret = secret
        self._ttl = ttl

    def issue(self, session_id: str) -> str:
        """A token for ``session_id``."""
        now = datetime.now(UTC)
        claims = {
            "sub": session_id,
            "typ": TOKEN_TYPE,
            "iat": now,
            "iat_us": time.time_ns() // 1000,
            "exp": now + self._ttl,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def session_of(self, token: str) -> str:
        """The session id a valid token is bound to; :class:`TokenError` otherwise."""
        return self.check(token)[0]

    def check(self, token: str) -> tuple[str, int]:
        """The session id and issue instant (µs) of a valid token; :class:`TokenError` otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"require": ["sub", "exp", "typ"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(str(exc)) from exc
        if claims.get("typ") != TOKEN_TYPE or not isinstance(claims.get("sub"), str):
            raise TokenError("not a session token")
        issued = claims.get("iat_us")
        return claims["sub"], issued if isinstance(issued, int) else 0

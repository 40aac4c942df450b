"""Session tokens: a signed JWT bound to one session id (HS256)."""

from __future__ import annotations

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
        claims = {"sub": session_id, "typ": TOKEN_TYPE, "iat": now, "exp": now + self._ttl}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def session_of(self, token: str) -> str:
        """The session id a valid token is bound to; :class:`TokenError` otherwise."""
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
        return claims["sub"]

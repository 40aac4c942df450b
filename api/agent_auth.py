"""Agent tokens: ``Authorization: Bearer <JWT>`` with ``sub``, ``role`` (agent|admin) and ``exp``.

HS256 with the configured (or derived) secret, which ``supportgraph agent token`` also uses;
an RS256 public key may be configured too, for tokens a company's identity provider signs.
The header's ``alg`` picks the key, and only these two algorithms are ever accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import jwt

from supportgraph.settings import Settings

Role = Literal["agent", "admin"]
ROLES: tuple[str, ...] = ("agent", "admin")
TOKEN_TYPE = "agent"


class AgentTokenError(Exception):
    """A token that is missing, malformed, expired, or signed by a key we do not trust."""


class AgentRoleError(Exception):
    """A genuine token whose role may not do this."""


@dataclass(frozen=True)
class Agent:
    """The person behind an agent token."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        """Whether the agent may override other agents (take over a claim)."""
        return self.role == "admin"


def _pem(value: str) -> str:
    """A PEM given inline, or read from the file it names."""
    if value.lstrip().startswith("-----BEGIN"):
        return value
    path = Path(value)
    if not path.is_file():
        raise ValueError(
            f"SUPPORTGRAPH_AGENT_JWT_PUBLIC_KEY: {value!r} is neither a PEM nor a readable file"
        )
    return path.read_text()


class AgentTokens:
    """Issue (HS256) and verify (HS256 or RS256) agent tokens."""

    def __init__(self, *, secret: str, public_key: str | None = None) -> None:
        self._keys: dict[str, Any] = {"HS256": secret}
        if public_key:
            self._keys["RS256"] = _pem(public_key)

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentTokens:
        """The verifier the settings describe."""
        return cls(secret=settings.agent_signing_key(), public_key=settings.agent_jwt_public_key)

    def issue(self, name: str, *, role: str = "agent", ttl: timedelta) -> str:
        """A token for the agent ``name`` (HS256)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        now = datetime.now(UTC)
        claims = {"sub": name, "role": role, "typ": TOKEN_TYPE, "iat": now, "exp": now + ttl}
        return jwt.encode(claims, self._keys["HS256"], algorithm="HS256")

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of an authentic, unexpired token; :class:`AgentTokenError` otherwise."""
        try:
            alg = jwt.get_unverified_header(token).get("alg")
            if alg not in self._keys:
                raise AgentTokenError(f"algorithm {alg!r} is not accepted")
            claims = jwt.decode(
                token,
                self._keys[alg],
                algorithms=[alg],
                options={"require": ["sub", "exp"], "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            raise AgentTokenError(str(exc)) from exc
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AgentTokenError("the token has no subject")
        if claims.get("typ", TOKEN_TYPE) != TOKEN_TYPE:
            raise AgentTokenError("not an agent token")
        return claims

    def agent(self, token: str) -> Agent:
        """The agent behind the token; :class:`AgentRoleError` if its role is not an agent's."""
        claims = self.verify(token)
        role = claims.get("role")
        if role not in ROLES:
            raise AgentRoleError(f"role {role!r} is not allowed here")
        return Agent(name=claims["sub"], role=role)

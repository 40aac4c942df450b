"""Agent tokens: ``Authorization: Bearer <JWT>`` with ``sub``, ``role`` (agent|admin), ``exp``,
``iss`` and ``aud``.

Two kinds, told apart by the header's ``alg``, and only these two algorithms are accepted:

- HS256, signed with the configured (or derived) secret: the tokens ``supportgraph agent
  token`` issues, with this service as issuer and audience;
- RS256, signed by a company's identity provider: verified with its public key or the keys
  its JWKS URL publishes, and only for the configured issuer and audience, so a token the
  provider issued for another application is refused.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError

from supportgraph.settings import Settings

Role = Literal["agent", "admin"]
ROLES: tuple[str, ...] = ("agent", "admin")
TOKEN_TYPE = "agent"
ISSUER = "supportgraph"
"""The ``iss`` of the HS256 tokens this service issues."""
AUDIENCE = "supportgraph-agents"
"""The ``aud`` of the HS256 tokens this service issues."""
JWKS_TIMEOUT = 5.0
"""Seconds a fetch of the identity provider's keys may take."""


class AgentTokenError(Exception):
    """A token that is missing, malformed, expired, or signed by a key we do not trust."""


class AgentRoleError(Exception):
    """A genuine token whose role may not do this."""


class AgentKeysUnavailable(Exception):
    """The identity provider's keys cannot be fetched, so no RS256 token can be checked now."""


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
    """Issue (HS256) and verify (HS256, or RS256 from an identity provider) agent tokens."""

    def __init__(
        self,
        *,
        secret: str,
        public_key: str | None = None,
        jwks_url: str | None = None,
        jwks_cooldown: float = 30.0,
        issuer: str | None = None,
        audience: str | None = None,
    ) -> None:
        if (public_key or jwks_url) and not (issuer and audience):
            raise ValueError(
                "RS256 agent tokens need SUPPORTGRAPH_AGENT_JWT_ISSUER and"
                " SUPPORTGRAPH_AGENT_JWT_AUDIENCE: without them a token your identity provider"
                " issued for any other application would be accepted"
            )
        self._secret = secret
        self._public_key = _pem(public_key) if public_key else None
        self._jwks = (
            PyJWKClient(
                jwks_url, cache_keys=True, timeout=JWKS_TIMEOUT, cooldown_duration=jwks_cooldown
            )
            if jwks_url
            else None
        )
        self._issuer = issuer
        self._audience = audience

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentTokens:
        """The verifier the settings describe."""
        return cls(
            secret=settings.agent_signing_key(),
            public_key=settings.agent_jwt_public_key,
            jwks_url=settings.agent_jwt_jwks_url,
            jwks_cooldown=settings.agent_jwt_jwks_cooldown,
            issuer=settings.agent_jwt_issuer,
            audience=settings.agent_jwt_audience,
        )

    def issue(self, name: str, *, role: str = "agent", ttl: timedelta) -> str:
        """A token for the agent ``name`` (HS256)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        now = datetime.now(UTC)
        claims = {
            "sub": name,
            "role": role,
            "typ": TOKEN_TYPE,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + ttl,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of an authentic, unexpired token meant for us; :class:`AgentTokenError`
        otherwise (:class:`AgentKeysUnavailable` when the provider's keys cannot be fetched)."""
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            issuer: str | None
            if alg == "HS256":
                key: Any = self._secret
                issuer, audience = ISSUER, AUDIENCE
            elif alg == "RS256" and self._audience is not None:
                key = await self._rs256_key(token, header)
                issuer, audience = self._issuer, self._audience
            else:
                raise AgentTokenError(f"algorithm {alg!r} is not accepted")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer,
                options={"require": ["sub", "exp", "iss", "aud"]},
            )
        except PyJWKClientConnectionError as exc:
            raise AgentKeysUnavailable(str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise AgentTokenError(str(exc)) from exc
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AgentTokenError("the token has no subject")
        if claims.get("typ", TOKEN_TYPE) != TOKEN_TYPE:
            raise AgentTokenError("not an agent token")
        return claims

    async def _rs256_key(self, token: str, header: dict[str, Any]) -> Any:
        """The provider's key for this token: from its JWKS when the token names a key id
        (fetched off the event loop, cached, fetched again for an id not seen yet), else the
        configured public key."""
        if self._jwks is not None and (header.get("kid") or self._public_key is None):
            signing = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            return signing.key
        return self._public_key

    async def agent(self, token: str) -> Agent:
        """The agent behind the token; :class:`AgentRoleError` if its role is not an agent's."""
        claims = await self.verify(token)
        role = claims.get("role")
        if role == "agent" or role == "admin":
            return Agent(name=claims["sub"], role=role)
        raise AgentRoleError(f"role {role!r} is not allowed here")

"""Agent tokens: the CLI mints them; HS256, or an identity provider's RS256 keys (a public key
or its JWKS) for its issuer and our audience only, verify them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from tests.conftest import TEST_SECRET, make_settings
from tests.utils.oidc import AUDIENCE, ISSUER, Provider, identity_provider

IDP = {"iss": ISSUER, "aud": AUDIENCE}

BIN = Path(sys.executable).parent / "supportgraph"


def cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTGRAPH_")}
    env.update(
        SUPPORTGRAPH_SECRET_KEY=TEST_SECRET, SUPPORTGRAPH_SQLITE_PATH=str(tmp_path / "sg.sqlite")
    )
    return subprocess.run(
        [str(BIN), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


async def test_cli_mints_a_token_the_service_accepts(
    app_factory: Any, sqlite_backend: dict[str, Any], tmp_path: Path
) -> None:
    result = cli("agent", "token", "alice", "--role", "admin", "--ttl", "30m", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == 1800
    default = cli("agent", "token", "bob", tmp_path=tmp_path).stdout.strip()
    default_claims = jwt.decode(default, options={"verify_signature": False})
    assert default_claims["role"] == "agent"
    assert default_claims["exp"] - default_claims["iat"] == 12 * 3600

    async with app_factory(**sqlite_backend) as client:
        me = await client.get("/api/agent/me", headers={"Authorization": f"Bearer {token}"})
        bob = await client.get("/api/agent/me", headers={"Authorization": f"Bearer {default}"})
    assert me.json() == {"name": "alice", "role": "admin"}
    assert bob.json() == {"name": "bob", "role": "agent"}

    bad_role = cli("agent", "token", "eve", "--role", "root", tmp_path=tmp_path)
    assert bad_role.returncode == 2 and "--role" in bad_role.stderr
    bad_ttl = cli("agent", "token", "eve", "--ttl", "soon", tmp_path=tmp_path)
    assert bad_ttl.returncode == 2


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_signed_with(secret: bytes, claims: dict[str, Any]) -> str:
    """HS256 with the public key as the HMAC secret: the classic algorithm confusion.

    (PyJWT refuses to build one, so it is assembled by hand.)
    """
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _rsa_pair() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


RS256 = {"agent_jwt_issuer": ISSUER, "agent_jwt_audience": AUDIENCE}
"""Who an identity provider's tokens must come from, and be for."""


async def agent_codes(client: Any, tokens: dict[str, str]) -> dict[str, int]:
    """The status of ``GET /api/agent/me`` with each token."""
    codes = {}
    for name, token in tokens.items():
        response = await client.get("/api/agent/me", headers={"Authorization": f"Bearer {token}"})
        codes[name] = response.status_code
    return codes


async def test_rs256_public_key_from_settings(
    app_factory: Any, sqlite_backend: dict[str, Any], tmp_path: Path
) -> None:
    key, public_pem = _rsa_pair()
    other_key, _ = _rsa_pair()
    pem_file = tmp_path / "idp.pem"
    pem_file.write_text(public_pem)
    exp = datetime.now(UTC) + timedelta(hours=1)
    claims = {"sub": "carol@example.com", "role": "admin", "exp": exp, **IDP}
    idp_token = jwt.encode(claims, key, algorithm="RS256")
    tokens = {
        "idp": idp_token,
        "impostor": jwt.encode(claims, other_key, algorithm="RS256"),
        "confused": _hs256_signed_with(
            public_pem.encode(), {**claims, "exp": int(exp.timestamp())}
        ),
        "other app": jwt.encode({**claims, "aud": "some-other-app"}, key, algorithm="RS256"),
        "other issuer": jwt.encode({**claims, "iss": "https://elsewhere"}, key, algorithm="RS256"),
        "both": jwt.encode(
            {**claims, "aud": "some-other-app", "iss": "elsewhere"}, key, algorithm="RS256"
        ),
        "no audience": jwt.encode({**claims, "aud": None}, key, algorithm="RS256"),
    }
    expected = {name: 401 for name in tokens} | {"idp": 200}

    for configured in (public_pem, str(pem_file)):
        async with app_factory(
            **sqlite_backend, agent_jwt_public_key=configured, **RS256
        ) as client:
            codes = await agent_codes(client, tokens)
            me = await client.get("/api/agent/me", headers={"Authorization": f"Bearer {idp_token}"})
        assert codes == expected
        assert me.json() == {"name": "carol@example.com", "role": "admin"}

    async with app_factory(**sqlite_backend) as client:
        unconfigured = await client.get(
            "/api/agent/me", headers={"Authorization": f"Bearer {idp_token}"}
        )
    assert unconfigured.status_code == 401, "RS256 is refused unless a public key is set"


@pytest.mark.parametrize("key", ["agent_jwt_public_key", "agent_jwt_jwks_url"])
@pytest.mark.parametrize("missing", ["agent_jwt_issuer", "agent_jwt_audience"])
def test_rs256_without_issuer_or_audience_is_refused_at_start(key: str, missing: str) -> None:
    _, public_pem = _rsa_pair()
    values = {
        "agent_jwt_public_key": public_pem,
        "agent_jwt_jwks_url": "https://idp.example.test/jwks.json",
    }
    given = {key: values[key], **{k: v for k, v in RS256.items() if k != missing}}
    with pytest.raises(ValidationError) as exc:
        make_settings(**given)
    message = str(exc.value)
    assert (
        "SUPPORTGRAPH_AGENT_JWT_ISSUER" in message and "SUPPORTGRAPH_AGENT_JWT_AUDIENCE" in message
    )


async def test_rs256_keys_from_the_identity_providers_jwks(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """Keys come from the provider's JWKS, are cached, and a rotated key is fetched once seen."""
    with identity_provider() as idp:
        settings = {
            **sqlite_backend,
            "agent_jwt_jwks_url": idp.url,
            "agent_jwt_jwks_cooldown": 0,
            **RS256,
        }
        async with app_factory(**settings) as client:
            first = await agent_codes(client, {"a": idp.token(), "b": idp.token(sub="erin")})
            assert first == {"a": 200, "b": 200}
            assert idp.fetches == 1, "the keys are cached"

            idp.add_key("key-2")
            rotated = await agent_codes(client, {"new key": idp.token("key-2")})
            assert rotated == {"new key": 200} and idp.fetches == 2

            stranger = Provider()  # same key id, another key: not the provider's signature
            refused = await agent_codes(
                client,
                {
                    "forged": stranger.token("key-1"),
                    "other app": idp.token(aud="some-other-app"),
                    "other issuer": idp.token(iss="https://elsewhere"),
                    "hs256 of ours with their claims": jwt.encode(
                        {"sub": "x", "role": "admin", "exp": 2**31, **IDP}, "x" * 40
                    ),
                },
            )
            assert refused == dict.fromkeys(refused, 401)
            me = await client.get(
                "/api/agent/me", headers={"Authorization": f"Bearer {idp.token(sub='erin')}"}
            )
            assert me.json() == {"name": "erin", "role": "admin"}


async def test_unreachable_jwks_answers_503_not_401(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    """A provider that is down is not the agent's fault: 503 with Retry-After."""
    with identity_provider() as idp:
        url = idp.url
        token = idp.token()
    settings = {**sqlite_backend, "agent_jwt_jwks_url": url, **RS256}
    async with app_factory(**settings) as client:
        response = await client.get("/api/agent/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert "identity provider" in response.json()["error"]["message"]

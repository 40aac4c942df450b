"""Agent tokens: the CLI mints them; HS256 or an RS256 public key verifies them."""

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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import TEST_SECRET

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


async def test_rs256_public_key_from_settings(
    app_factory: Any, sqlite_backend: dict[str, Any], tmp_path: Path
) -> None:
    key, public_pem = _rsa_pair()
    other_key, _ = _rsa_pair()
    pem_file = tmp_path / "idp.pem"
    pem_file.write_text(public_pem)
    exp = datetime.now(UTC) + timedelta(hours=1)
    claims = {"sub": "carol@example.com", "role": "admin", "exp": exp}
    idp_token = jwt.encode(claims, key, algorithm="RS256")
    impostor = jwt.encode(claims, other_key, algorithm="RS256")
    confused = _hs256_signed_with(public_pem.encode(), {**claims, "exp": int(exp.timestamp())})

    for configured in (public_pem, str(pem_file)):
        async with app_factory(**sqlite_backend, agent_jwt_public_key=configured) as client:
            codes = {}
            for name, token in [("idp", idp_token), ("impostor", impostor), ("confused", confused)]:
                response = await client.get(
                    "/api/agent/me", headers={"Authorization": f"Bearer {token}"}
                )
                codes[name] = response.status_code
            me = await client.get("/api/agent/me", headers={"Authorization": f"Bearer {idp_token}"})
        assert codes == {"idp": 200, "impostor": 401, "confused": 401}
        assert me.json() == {"name": "carol@example.com", "role": "admin"}

    async with app_factory(**sqlite_backend) as client:
        unconfigured = await client.get(
            "/api/agent/me", headers={"Authorization": f"Bearer {idp_token}"}
        )
    assert unconfigured.status_code == 401, "RS256 is refused unless a public key is set"

"""Size limits are settings whose production defaults bite: the request body (413) and the
customer message (422), both in the API's error shape."""

from __future__ import annotations

from typing import Any

from supportgraph.settings import Settings

DEFAULTS = Settings.model_fields


async def test_default_body_limit_answers_413(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    limit = DEFAULTS["max_body_bytes"].default
    assert limit <= 64 * 1024
    async with app_factory(**sqlite_backend) as client:
        response = await client.post(
            "/api/support/chat",
            content=b'{"message": "' + b"x" * limit + b'"}',
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "payload_too_large",
        "message": f"request body is larger than {limit} bytes",
        "details": {"max_bytes": limit},
    }


async def test_default_message_bound_and_a_lower_setting(
    app_factory: Any, sqlite_backend: dict[str, Any]
) -> None:
    bound = DEFAULTS["max_message_chars"].default
    assert bound == 4000
    async with app_factory(**sqlite_backend) as client:
        too_long = await client.post("/api/support/chat", json={"message": "x" * (bound + 1)})
    async with app_factory(**sqlite_backend, max_message_chars=50) as client:
        over = await client.post("/api/support/chat", json={"message": "y" * 51})
        streamed = await client.post("/api/support/chat/stream", json={"message": "y" * 51})
        at = await client.post("/api/support/chat", json={"message": "how much is shipping?" * 2})
    for response in (too_long, over, streamed):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_input"
        assert [d["field"] for d in error["details"]] == ["body.message"]
    assert "longer than 50 characters" in over.json()["error"]["message"]
    assert at.status_code == 200 and len("how much is shipping?" * 2) <= 50

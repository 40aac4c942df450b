"""The one settings class: environment (prefix ``SUPPORTGRAPH_``) and ``.env``, read at the edge."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACK = PROJECT_ROOT / "packs" / "store"


class Settings(BaseSettings):
    """Everything an operator configures; defaults run offline on a laptop."""

    model_config = SettingsConfigDict(
        env_prefix="SUPPORTGRAPH_", env_file=".env", extra="ignore", validate_default=True
    )

    # Domain pack
    pack_path: Path = Field(default=DEFAULT_PACK, description="Folder of the domain pack.")

    # Persistence
    database_url: str | None = Field(
        default=None,
        description="postgresql://... to use PostgreSQL; unset uses the SQLite file below.",
    )
    sqlite_path: Path = Field(default=Path("data/supportgraph.sqlite"))
    durability: Literal["sync", "async", "exit"] = Field(
        default="sync",
        description="When checkpoints are written: each step, in the background, or at the end.",
    )
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    pool_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a connection.")

    # Model (any OpenAI-compatible endpoint); no key means local offline mode
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    model: str = "gpt-4o-mini"
    model_classify: str | None = None
    model_extract: str | None = None
    model_answer: str | None = None
    llm_timeout: float = Field(default=15.0, gt=0)
    llm_max_retries: int = Field(default=2, ge=0, le=10)
    llm_temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    structured_output_method: Literal["function_calling", "json_schema", "json_mode"] = (
        "function_calling"
    )

    # Conversation
    low_confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Overrides the pack's low-confidence threshold."
    )

    # API
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs session tokens; unset generates one and keeps it in data/secret_key.",
    )
    session_token_ttl_days: int = Field(default=30, ge=1)
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("database_url must start with postgresql:// (unset it for SQLite)")
        return value or None

    @property
    def offline(self) -> bool:
        """True when no model is configured: the local mode answers everything."""
        return self.openai_api_key is None

    def signing_key(self) -> str:
        """The session-token secret: configured, or generated once and kept beside the data."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.sqlite_path.parent / "secret_key"
        if path.is_file():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key

"""The one settings class: environment (prefix ``SUPPORTGRAPH_``) and ``.env``, read at the edge."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from supportgraph.domain.llm import StructuredMethod
from supportgraph.domain.types import CrashPoint
from supportgraph.domain.webhooks import WebhookEvent

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
        default="exit",
        description="When checkpoints are written: each step, in the background, or once at the"
        " end of the turn (before the reply is sent, so an acknowledged turn is durable).",
    )
    pool_min_size: int = Field(default=1, ge=1)
    pool_max_size: int = Field(default=10, ge=1)
    pool_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a connection.")
    pool_max_idle: float = Field(
        default=300.0, gt=0, description="Close a pooled connection idle this long (seconds)."
    )
    pool_max_lifetime: float = Field(
        default=1800.0, gt=0, description="Replace a pooled connection this old (seconds)."
    )
    fault_crash_at: list[CrashPoint] = Field(
        default_factory=list,
        description="For fault tests only: the process exits at once (as under kill -9) when"
        " it reaches one of these write boundaries (see supportgraph/app/faults.py).",
    )
    lease_seconds: float = Field(
        default=15.0,
        ge=0.5,
        description="How long a session's lease lasts unless renewed (seconds): a turn renews"
        " it every third of this while the model thinks, and a process that died keeps its"
        " sessions waiting at most this long.",
    )

    # Scale and retention
    keep_checkpoints: int = Field(
        default=4,
        ge=0,
        description="Checkpoints kept per thread (the latest K; older ones are pruned every K"
        " turns). 0 keeps them all.",
    )
    index_cache: Path | None = Field(
        default=None,
        description="Where built FAQ indexes are cached; unset: a cache folder beside the"
        " SQLite file.",
    )
    busy_policy: Literal["enqueue", "reject"] = Field(
        default="enqueue",
        description="A message arriving while the session's turn runs: wait for it (enqueue)"
        " or answer 409 with Retry-After (reject).",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Operator bearer token: may delete any session. Unset: only the session's"
        " own token may.",
    )

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
    structured_output_method: StructuredMethod = "function_calling"

    # Conversation
    low_confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Overrides the pack's low-confidence threshold."
    )

    # API
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose pages may call the API; none by"
        " default. No wildcard: every origin is named.",
    )
    frame_ancestors: list[str] = Field(
        default_factory=list,
        description="Origins that may embed the pages in a frame; none by default.",
    )
    hsts: bool = Field(
        default=False,
        description="Send Strict-Transport-Security (set when clients reach the service over"
        " HTTPS).",
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs session tokens; unset generates one and keeps it in data/secret_key.",
    )
    session_token_ttl_days: int = Field(default=30, ge=1)

    # Abuse limits: production defaults; bench/load.env lifts them for benchmarks and load tests
    rate_limit_enabled: bool = Field(
        default=True, description="Answer 429 with Retry-After past the rate limits below."
    )
    rate_limit_client: str = Field(
        default="60/minute;1000/hour",
        description="Requests to customer endpoints per client: its IP address, or a server"
        " key's X-Customer-ID.",
    )
    rate_limit_session: str = Field(
        default="20/minute;300/hour", description="Messages to one session (chat posts)."
    )
    rate_limit_new_sessions: str = Field(
        default="10/minute;100/hour", description="New sessions per client."
    )
    rate_limit_agent: str = Field(
        default="600/minute", description="Requests to agent endpoints per client IP address."
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="memory:// (one process) or redis://host:port/db (shared by every worker"
        " and replica).",
    )
    rate_limit_key_prefix: str = Field(
        default="supportgraph", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Redis key prefix."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of reverse proxies whose X-Forwarded-For names the"
        " client; none by default (the header is ignored).",
    )
    max_message_chars: int = Field(
        default=4000, ge=1, le=4000, description="Longest customer message (the API's bound)."
    )
    max_turns_per_session: int = Field(
        default=1000, ge=1, description="Customer messages one session accepts in its life."
    )
    llm_max_tokens: int = Field(default=1024, ge=1, description="Output tokens per model call.")
    llm_max_calls_per_turn: int = Field(
        default=4, ge=0, description="Model calls per turn; past it the local mode answers."
    )
    llm_max_tokens_per_turn: int = Field(
        default=32_000,
        ge=1,
        description="Model tokens (input and output) per turn; past it no further call is made.",
    )

    # Human hand-off: agents, a company's backend, live updates, webhooks
    agent_jwt_secret: SecretStr | None = Field(
        default=None,
        description="HS256 secret of agent tokens; unset derives one from the secret key.",
    )
    agent_jwt_public_key: str | None = Field(
        default=None,
        description="PEM (or a path to one) of an RS256 public key that also signs agent tokens.",
    )
    agent_jwt_jwks_url: str | None = Field(
        default=None,
        description="Your identity provider's JWKS URL: its keys verify RS256 agent tokens"
        " (cached; a key id not seen yet fetches them again).",
    )
    agent_jwt_jwks_cooldown: float = Field(
        default=30.0,
        ge=0,
        description="Least seconds between two fetches of the keys for a key id not seen yet"
        " (a stream of made-up key ids cannot hammer the identity provider).",
    )
    agent_jwt_issuer: str | None = Field(
        default=None,
        description="The iss of RS256 agent tokens (the identity provider's issuer); required"
        " with a public key or a JWKS URL.",
    )
    agent_jwt_audience: str | None = Field(
        default=None,
        description="The aud RS256 agent tokens must carry (this service's id at the identity"
        " provider); required with a public key or a JWKS URL.",
    )
    agent_token_ttl_hours: float = Field(default=12.0, gt=0, description="`agent token` default.")
    server_api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Keys a company's backend sends as X-API-Key (with X-Customer-ID).",
    )
    sse_heartbeat_seconds: float = Field(
        default=15.0, gt=0, description="Heartbeat (and database re-check) interval of streams."
    )
    stream_chunk_delay: float = Field(
        default=0.02, ge=0, description="Pause between streamed chunks of a reply (seconds)."
    )
    webhook_urls: list[str] = Field(default_factory=list, description="Receivers of webhooks.")
    webhook_secret: SecretStr | None = Field(
        default=None, description="Signs webhook bodies (HMAC-SHA256); required with URLs."
    )
    webhook_events: list[WebhookEvent] = Field(
        default_factory=lambda: list[WebhookEvent](["escalated"]),
        description="Which events are sent.",
    )
    webhook_timeout: float = Field(default=10.0, gt=0)
    webhook_backoff_initial: float = Field(default=2.0, gt=0, description="First retry delay (s).")
    webhook_backoff_max: float = Field(default=600.0, gt=0, description="Longest retry delay (s).")
    webhook_max_age_hours: float = Field(
        default=24.0, gt=0, description="Undelivered webhooks expire after this long."
    )
    webhook_poll_seconds: float = Field(default=2.0, gt=0, description="Outbox poll interval.")
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("cors_origins", "frame_ancestors")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parsed = urlsplit(origin)
            if (
                parsed.scheme not in ("http", "https")
                or not parsed.hostname
                or "*" in origin
                or parsed.path not in ("", "/")
                or parsed.query
                or parsed.fragment
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: give scheme://host[:port], no wildcard or path"
                )
        return [origin.rstrip("/") for origin in value]

    @field_validator(
        "rate_limit_client", "rate_limit_session", "rate_limit_new_sessions", "rate_limit_agent"
    )
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a rate limit: give e.g. '60/minute;1000/hour'"
            ) from exc
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _limit_storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError(f"{value!r}: use memory:// or redis://host:port/db")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _webhook_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http(s) URL")
        return value

    @field_validator("agent_jwt_jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _rs256_audience(self) -> Settings:
        rs256 = self.agent_jwt_public_key or self.agent_jwt_jwks_url
        if rs256 and not (self.agent_jwt_issuer and self.agent_jwt_audience):
            raise ValueError(
                "SUPPORTGRAPH_AGENT_JWT_ISSUER and SUPPORTGRAPH_AGENT_JWT_AUDIENCE must be set"
                " with SUPPORTGRAPH_AGENT_JWT_PUBLIC_KEY or _JWKS_URL: without them a token your"
                " identity provider issued for any other application would be accepted"
            )
        return self

    @model_validator(mode="after")
    def _webhook_secret(self) -> Settings:
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError(
                "SUPPORTGRAPH_WEBHOOK_SECRET must be set when SUPPORTGRAPH_WEBHOOK_URLS is "
                "(receivers check the signature with it)"
            )
        return self

    @property
    def shared_rate_limits(self) -> bool:
        """Whether the rate-limit counters are shared by processes (Redis), not per process."""
        return not self.rate_limit_storage.startswith("memory://")

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

    def agent_signing_key(self) -> str:
        """The HS256 secret of agent tokens: configured, or derived from the session secret.

        Derived, not shared: a customer's session token never verifies as an agent token.
        """
        if self.agent_jwt_secret is not None:
            return self.agent_jwt_secret.get_secret_value()
        return hmac.new(
            self.signing_key().encode(), b"supportgraph agent tokens", hashlib.sha256
        ).hexdigest()

    def index_cache_dir(self) -> Path:
        """The folder of cached FAQ indexes (only large FAQs are cached)."""
        return self.index_cache or self.sqlite_path.parent / "cache"

    def signing_key(self) -> str:
        """The session-token secret: configured, or generated once and kept beside the data."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.sqlite_path.parent / "secret_key"
        if path.is_file():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Workers starting together must end up with one key: the first complete file linked
        # into place wins, and everyone reads that one. The draft is created readable by its
        # owner only, so the key is never readable by anyone else, not even for a moment.
        draft = path.with_name(f".secret_key.{os.getpid()}")
        draft.unlink(missing_ok=True)  # a crashed start's leftover, whatever its mode
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink(missing_ok=True)
        return path.read_text().strip()

"""Service settings, read once from the environment.

Every name below is the environment variable that sets it (case-insensitive).
A bad value stops startup with one line naming the variable and the reason, see
:func:`load_settings`.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BackendName = Literal["vault", "postgres", "mysql", "mongodb", "redis", "rabbitmq"]
BACKEND_NAMES: tuple[BackendName, ...] = (
    "vault",
    "postgres",
    "mysql",
    "mongodb",
    "redis",
    "rabbitmq",
)

CommaList = Annotated[list[str], NoDecode]

#: JWT algorithms AUTH_JWT_ALGORITHMS may name: public-key signatures only.
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def parse_redis_node(entry: str, index: int) -> tuple[str, str, int]:
    """``host:port`` or ``name=host:port`` (IPv6 in brackets) as (name, host, port);
    the name defaults to ``redis-<index>``. Raises ValueError without echoing the entry:
    a mistyped value could be a URL with a password."""
    name, _, address = entry.rpartition("=")
    host, _, port = address.rpartition(":")
    valid_name = (not name and "=" not in entry) or re.fullmatch(r"[\w.-]{1,100}", name)
    valid_host = re.fullmatch(r"[\w.-]+|\[[0-9a-fA-F:.]+\]", host)
    if not (valid_host and port.isdigit() and 1 <= int(port) <= 65535 and valid_name):
        raise ValueError(f"entry {index} is not host:port or name=host:port")
    return name or f"redis-{index}", host.strip("[]"), int(port)


class Settings(BaseSettings):
    """All configuration of one quartstack process."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    # --- process -------------------------------------------------------------------
    debug: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # the client address in log lines: as is, or only its network (IPv4 /24, IPv6 /48)
    log_client_ip: Literal["full", "truncated"] = "full"
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # the HTTP server: Hypercorn (HTTP/2, in-process TLS) or uvicorn (the [uvicorn] extra)
    server: Literal["hypercorn", "uvicorn"] = "hypercorn"
    # SIGTERM budget, in order: drain (readiness 503, still accepting), grace (in-flight
    # requests finish; the rest get a 503), close (backend clients); see lifecycle.py
    shutdown_drain_seconds: float = Field(default=1.0, ge=0, le=120)
    shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=600)
    shutdown_close_seconds: float = Field(default=5.0, gt=0, le=120)
    startup_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    cors_origins: CommaList = Field(
        default_factory=lambda: [
            "http://localhost:3000",
            "http://localhost:8000",
            "http://localhost:8080",
        ]
    )
    trusted_proxies: CommaList = Field(default_factory=list)
    traceparent_trust: Literal["proxies", "always", "never"] = Field(
        default="proxies",
        description="whose W3C traceparent a request's server span continues: TRUSTED_PROXIES "
        "peers only, anyone, or no one (tracing is configured by the OTEL_* variables)",
    )
    required_backends: CommaList = Field(default_factory=list)
    readiness_interval_seconds: float = Field(
        default=5.0, gt=0, le=300, description="how often required backends are re-checked"
    )
    readiness_failure_threshold: int = Field(
        default=3, ge=1, le=100, description="consecutive failed checks before 'down'"
    )

    # --- resilience (defaults for every backend) --------------------------------------
    backend_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    health_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    circuit_failure_threshold: int = Field(default=5, ge=1, le=1000)
    circuit_recovery_seconds: float = Field(default=60.0, gt=0, le=3600)
    retry_attempts: int = Field(default=3, ge=1, le=10)
    retry_base_delay_seconds: float = Field(default=0.1, ge=0, le=10)
    retry_max_delay_seconds: float = Field(default=2.0, ge=0, le=60)

    # --- rate limiting and caching ---------------------------------------------------
    rate_limit_enabled: bool = True
    rate_limit_default: int = Field(default=100, ge=1, description="requests per minute")
    rate_limit_health: int = Field(default=200, ge=1)
    rate_limit_metrics: int = Field(default=1000, ge=1)
    response_cache_enabled: bool = True
    # The in-process tier in front of Redis: how long a replica may keep an answer
    # another replica invalidated if the message were lost (0 turns the tier off).
    response_cache_local_ttl_seconds: float = Field(default=2.0, ge=0, le=30)
    response_cache_local_max_entries: int = Field(default=1000, ge=0, le=1_000_000)
    # Redis calls made on the side of a request (the limiter, the response cache,
    # idempotency keys) fail open, so they get short timeouts of their own: a silent
    # Redis must not hold every route for BACKEND_TIMEOUT_SECONDS. A timeout counts as a
    # Redis failure, so a Redis slower than this opens its circuit and is then skipped.
    rate_limit_timeout_seconds: float = Field(default=0.1, gt=0, le=10)
    response_cache_timeout_seconds: float = Field(default=0.1, gt=0, le=10)
    idempotency_timeout_seconds: float = Field(default=0.1, gt=0, le=10)
    idempotency_ttl_seconds: int = Field(default=86400, ge=60)
    idempotency_max_stored_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        le=16 * 1024 * 1024,
        description="larger responses keep only status and digest, so keyed requests cannot "
        "fill Redis",
    )

    # --- Vault ---------------------------------------------------------------------------
    vault_addr: str | None = None
    vault_approle_dir: str | None = None
    vault_token: SecretStr | None = None
    vault_token_file: str | None = None
    vault_mount: str = "secret"
    vault_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    vault_cache_ttl_seconds: float = Field(default=60.0, ge=0, le=300)
    vault_login_attempts: int = Field(default=5, ge=1, le=100)
    vault_cacert: str | None = None
    vault_database_mount: str = "database"
    vault_rabbitmq_mount: str = "rabbitmq"

    # --- PostgreSQL ----------------------------------------------------------------------
    postgres_host: str | None = None
    postgres_port: int = Field(default=5432, ge=1, le=65535)
    postgres_user: str | None = None
    postgres_password: SecretStr | None = None
    postgres_database: str | None = None
    postgres_credentials: Literal["kv", "dynamic"] = "kv"
    postgres_vault_role: str = "quartstack"
    postgres_pool_min: int = Field(default=1, ge=0, le=100)
    postgres_pool_max: int = Field(default=10, ge=1, le=100)
    postgres_statement_cache_size: int = Field(
        default=100,
        ge=0,
        description="asyncpg prepared statements per connection; 0 behind PgBouncer",
    )

    # --- MySQL ---------------------------------------------------------------------------
    mysql_host: str | None = None
    mysql_port: int = Field(default=3306, ge=1, le=65535)
    mysql_credentials: Literal["kv", "dynamic"] = "kv"
    mysql_vault_role: str = "quartstack"
    mysql_user: str | None = None
    mysql_password: SecretStr | None = None
    mysql_database: str | None = None
    mysql_pool_min: int = Field(default=1, ge=0, le=100)
    mysql_pool_max: int = Field(default=10, ge=1, le=100)
    mysql_pool_recycle_seconds: int = Field(
        default=3600,
        ge=1,
        description="replace pooled connections idle this long; keep below the server's "
        "wait_timeout (default 28800)",
    )

    # --- MongoDB -------------------------------------------------------------------------
    mongodb_host: str | None = None
    mongodb_port: int = Field(default=27017, ge=1, le=65535)
    mongodb_user: str | None = None
    mongodb_password: SecretStr | None = None
    mongodb_database: str | None = None
    mongodb_pool_max: int = Field(default=10, ge=1, le=500)
    mongodb_auth_source: str | None = Field(
        default=None, description="database holding the user; default: the credentials' database"
    )

    # --- Redis ---------------------------------------------------------------------------
    redis_host: str | None = None
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_nodes: CommaList = Field(default_factory=list)
    redis_password: SecretStr | None = None
    redis_pool_max: int = Field(default=50, ge=1, le=1000)
    redis_key_prefix: str = Field(
        default="quartstack",
        # No glob characters (invalidation matches under it) and no braces (they would
        # change the cluster hash tag of the rate-limit keys).
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
        description="start of every key the service writes, so deployments sharing a Redis "
        "never see each other's keys",
    )

    # --- the worker (projections of the signup events; exchange below) ------------------
    worker_port: int = Field(default=8001, ge=1, le=65535)
    worker_queue: str = Field(
        default="quartstack.projections",
        min_length=1,
        max_length=200,
        pattern=r"^[a-zA-Z0-9_.:-]+$",
        description="quorum queue the worker consumes; its dead letters go to <queue>.dlq",
    )
    worker_prefetch: int = Field(default=32, ge=1, le=1000)
    worker_max_deliveries: int = Field(
        default=5, ge=1, le=100, description="deliveries before a failing message is dead-lettered"
    )
    worker_retry_max_seconds: float = Field(
        default=30.0, gt=0, le=600, description="longest pause between retries of an outage"
    )
    worker_dedup_ttl_seconds: int = Field(
        default=7 * 86400, ge=60, description="how long an applied event id is remembered"
    )
    worker_stats_retention_days: int = Field(default=90, ge=1, le=3660)

    # --- RabbitMQ ------------------------------------------------------------------------
    rabbitmq_host: str | None = None
    rabbitmq_port: int = Field(default=5672, ge=1, le=65535)
    rabbitmq_credentials: Literal["kv", "dynamic"] = "kv"
    rabbitmq_vault_role: str = "quartstack"
    rabbitmq_user: str | None = None
    rabbitmq_password: SecretStr | None = None
    rabbitmq_vhost: str | None = None
    rabbitmq_channel_pool_size: int = Field(default=10, ge=1, le=200)
    rabbitmq_connect_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    rabbitmq_reconnect_seconds: float = Field(
        default=1.0, gt=0, le=60, description="pause between reconnection attempts"
    )
    rabbitmq_max_message_bytes: int = Field(default=1024 * 1024, ge=1, le=128 * 1024 * 1024)

    # --- signup events (the outbox relay publishes, the worker consumes) ---------------
    events_exchange: str = Field(
        default="quartstack.events", min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9_.:-]+$"
    )
    outbox_relay_enabled: bool = Field(
        default=True, description="run the relay in the API process (else: quartstack relay)"
    )
    outbox_relay_batch_size: int = Field(default=100, ge=1, le=1000)
    outbox_relay_poll_seconds: float = Field(default=2.0, gt=0, le=300)

    # --- authentication (see quartstack.auth) -----------------------------------------
    auth_mode: Literal["none", "required"] = Field(
        default="none", description="'required': every non-public route needs a credential"
    )
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwks_url: str | None = None
    auth_jwt_algorithms: CommaList = Field(default_factory=lambda: ["RS256", "ES256"])
    auth_clock_skew_seconds: float = Field(default=30.0, ge=0, le=300)
    auth_jwks_min_refresh_seconds: float = Field(
        default=30.0, ge=0, le=3600, description="least time between two JWKS fetches"
    )
    auth_jwks_max_age_seconds: float = Field(
        default=3600.0, gt=0, le=86400, description="refetch the JWKS when older than this"
    )
    auth_jwks_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    auth_api_keys_secret: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}$",
        description="Vault KV v2 secret holding the API-key hashes",
    )
    metrics_token: SecretStr | None = None

    _split = field_validator(
        "cors_origins",
        "trusted_proxies",
        "required_backends",
        "redis_nodes",
        "auth_jwt_algorithms",
        mode="before",
    )(_split_commas)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        for index, entry in enumerate(value, 1):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"entry {index} is not an IP address or network") from None
        return value

    @field_validator("redis_nodes")
    @classmethod
    def _redis_node_addresses(cls, value: list[str]) -> list[str]:
        names = [parse_redis_node(entry, index)[0] for index, entry in enumerate(value, 1)]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_client_ip", mode="before")
    @classmethod
    def _lower_mode(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("required_backends")
    @classmethod
    def _known_backends(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(BACKEND_NAMES))
        if unknown:
            expected = ", ".join(BACKEND_NAMES)
            raise ValueError(f"unknown backend(s) {', '.join(unknown)}; expected any of {expected}")
        return value

    @field_validator(
        "vault_addr",
        "postgres_host",
        "mysql_host",
        "mongodb_host",
        "redis_host",
        "rabbitmq_host",
        "vault_approle_dir",
        "vault_cacert",
        "vault_token_file",
        "auth_jwt_issuer",
        "auth_jwt_audience",
        "auth_jwks_url",
        "auth_api_keys_secret",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _dynamic_credentials_need_vault(self) -> Settings:
        dynamic = [
            f"{name.upper()}_CREDENTIALS"
            for name in ("postgres", "mysql", "rabbitmq")
            if getattr(self, f"{name}_credentials") == "dynamic"
        ]
        if dynamic and self.vault_addr is None:
            raise ValueError(f"{', '.join(dynamic)}=dynamic needs VAULT_ADDR")
        return self

    @model_validator(mode="after")
    def _required_are_configured(self) -> Settings:
        """Readiness waiting for a backend this deployment does not configure would keep
        every pod out of the Service forever: refuse to start instead."""
        missing = [name for name in self.required_backends if name not in self.enabled_backends]
        if missing:
            hints = {"vault": "VAULT_ADDR", "redis": "REDIS_HOST or REDIS_NODES"}
            needed = "; ".join(f"{n} needs {hints.get(n, n.upper() + '_HOST')}" for n in missing)
            raise ValueError(
                f"REQUIRED_BACKENDS: names backends that are not configured ({needed})"
            )
        return self

    @field_validator("auth_jwt_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        """Only public-key algorithms: with an HMAC algorithm allowed, a token signed with
        the issuer's *public* key as the HMAC secret would verify (algorithm confusion)."""
        refused = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if refused:
            allowed = ", ".join(ASYMMETRIC_ALGORITHMS)
            raise ValueError(f"only asymmetric algorithms are allowed ({allowed})")
        if not value:
            raise ValueError("name at least one algorithm")
        return value

    @model_validator(mode="after")
    def _auth_is_complete(self) -> Settings:
        jwt = {
            "AUTH_JWT_ISSUER": self.auth_jwt_issuer,
            "AUTH_JWT_AUDIENCE": self.auth_jwt_audience,
            "AUTH_JWKS_URL": self.auth_jwks_url,
        }
        missing = [name for name, value in jwt.items() if value is None]
        if 0 < len(missing) < len(jwt):
            raise ValueError(f"JWT authentication needs {', '.join(missing)} as well")
        if self.auth_api_keys_secret is not None and self.vault_addr is None:
            raise ValueError("AUTH_API_KEYS_SECRET needs VAULT_ADDR (the hashes live in Vault)")
        if self.auth_mode == "required" and not (self.jwt_enabled or self.api_keys_enabled):
            raise ValueError(
                "AUTH_MODE=required needs AUTH_JWT_ISSUER/AUDIENCE and AUTH_JWKS_URL, "
                "or AUTH_API_KEYS_SECRET"
            )
        return self

    @property
    def jwt_enabled(self) -> bool:
        return self.auth_jwks_url is not None

    @property
    def api_keys_enabled(self) -> bool:
        return self.auth_api_keys_secret is not None

    @cached_property
    def enabled_backends(self) -> frozenset[str]:
        """Backends that are configured; the others answer 503 'not configured'."""
        enabled = {
            "vault": self.vault_addr is not None,
            "postgres": self.postgres_host is not None,
            "mysql": self.mysql_host is not None,
            "mongodb": self.mongodb_host is not None,
            "redis": self.redis_host is not None or bool(self.redis_nodes),
            "rabbitmq": self.rabbitmq_host is not None,
        }
        return frozenset(name for name, on in enabled.items() if on)


class SettingsError(Exception):
    """A setting has a bad value; the message is one line fit for a human."""


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, turning validation errors into one line.

    The input value is never echoed, since it may be a password.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            if error["loc"]:
                problems.append(f"{str(error['loc'][0]).upper()}: {error['msg']}")
            else:  # a check across settings names its variables itself
                problems.append(str(error.get("ctx", {}).get("error", error["msg"])))
        raise SettingsError("invalid setting " + "; ".join(problems)) from None

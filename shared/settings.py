"""Process settings, read from the environment once at start-up (never at import).

The same variables configure every environment: ``NATS_URL``, ``DATABASE_URL``, ``KUBECONFIG`` and
``KAITEN_*``. Nothing in a service knows whether it runs in a cluster, in compose or on a laptop.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES: tuple[str, ...] = ("watcher", "planner", "provisioner", "deployer", "tuner")

# Ports of the health/metrics server when KAITEN_HEALTH_PORT is not set, one per service so the
# five can run side by side on one machine.
DEFAULT_HEALTH_PORTS: dict[str, int] = {
    "watcher": 8471,
    "planner": 8472,
    "provisioner": 8473,
    "deployer": 8474,
    "tuner": 8475,
}

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def async_database_url(url: str) -> str:
    """Return ``url`` with the asyncpg driver, so a plain ``postgresql://`` URL works too."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(
        f"DATABASE_URL must start with postgresql:// "
        f"(got {url.split('://', maxsplit=1)[0]}://...); Kaiten stores its state in PostgreSQL"
    )


class Settings(BaseSettings):
    """Settings shared by every service; each field says its unit and default."""

    model_config = SettingsConfigDict(env_prefix="KAITEN_", extra="ignore", frozen=True)

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices("NATS_URL", "KAITEN_NATS_URL"),
        description="NATS server URL(s), comma separated. Default nats://127.0.0.1:4222.",
    )
    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/kaiten",
        validation_alias=AliasChoices("DATABASE_URL", "KAITEN_DATABASE_URL"),
        description="PostgreSQL URL; postgresql:// is turned into postgresql+asyncpg://.",
    )
    kubeconfig: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KUBECONFIG", "KAITEN_KUBECONFIG"),
        description="Path of a kubeconfig. Unset: ~/.kube/config, then the in-cluster account.",
    )
    stream: str = Field(default="KAITEN", description="JetStream stream name. Default KAITEN.")
    subject_prefix: str = Field(
        default="kaiten",
        description="First subject token: subjects are <prefix>.v1.<type>.<namespace>.<name>.",
    )
    stream_max_age_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="Seconds the stream keeps events for replay and audit. Default 7 days.",
    )
    stream_max_bytes: int = Field(
        default=-1, description="Byte limit of the stream; -1 (default) means no limit."
    )
    duplicate_window_s: float = Field(
        default=120.0,
        gt=0,
        description="Seconds JetStream remembers a Nats-Msg-Id to drop duplicates. Default 120.",
    )
    max_deliver: int = Field(
        default=5,
        ge=1,
        description="Deliveries of one event before it is dead-lettered. Default 5.",
    )
    ack_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a delivered event may stay unacknowledged before redelivery.",
    )
    retry_base_s: float = Field(
        default=0.5, gt=0, description="First retry delay in seconds; doubles per delivery."
    )
    retry_max_s: float = Field(
        default=60.0, gt=0, description="Longest retry delay in seconds. Default 60."
    )
    pull_batch: int = Field(
        default=10,
        ge=1,
        description="Events each consumer handles at once (of different Workspaces). Default 10.",
    )
    publish_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a publish waits for JetStream's ack before it tries again. Default 5.",
    )
    publish_attempts: int = Field(
        default=3,
        ge=1,
        description="Tries per publish; safe because a re-publish has the same Nats-Msg-Id.",
    )
    graceful_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="Seconds a stopping service waits for events in flight. Default 20.",
    )
    start_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a starting service waits for NATS before it exits with an error.",
    )
    resync_period_s: float = Field(
        default=300.0, gt=0, description="Seconds between full resyncs. Default 5 minutes."
    )
    tuning_progress_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between reads of a running trainer's progress. Default 15.",
    )
    cloud_provider: Literal["azure", "aws", "arc"] = Field(
        default="azure", description="Whose GPU instance types validation accepts. Default azure."
    )
    node_auto_provisioning: bool = Field(
        default=True,
        description="Kaiten provisions nodes (instanceType required); false: bring your own.",
    )
    local_cpu: bool = Field(
        default=False,
        description="The cluster runs pods of instance type local-cpu as local processes (the "
        "embedded stack of `make up` sets it); elsewhere local-cpu is refused.",
    )
    health_host: str = Field(default="127.0.0.1", description="Bind address of /healthz.")
    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of /healthz, /readyz, /metrics; default: one per service (8471-8475).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged. Default INFO."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON unless stderr is a terminal."
    )

    @field_validator("database_url")
    @classmethod
    def _asyncpg_driver(cls, value: str) -> str:
        return async_database_url(value)

    @field_validator("stream", "subject_prefix")
    @classmethod
    def _single_token(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError(f"{value!r} must be letters, digits, '-' or '_' (one NATS token)")
        return value

    def health_port_for(self, service: str) -> int:
        """The port of ``service``'s health server: the setting, else the service's default."""
        if self.health_port is not None:
            return self.health_port
        return DEFAULT_HEALTH_PORTS.get(service, 0)

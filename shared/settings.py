"""Process settings, read once from the environment (and an optional .env) at each entry point."""

from __future__ import annotations

import sys
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.limits import LimitOverride


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/eventjobs"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    rabbitmq_management_url: str = "http://guest:guest@127.0.0.1:15672/"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(1025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(30.0, gt=0)
    mail_from: str = "events@localhost"
    admin_emails: Annotated[list[str], NoDecode] = []

    api_host: str = "127.0.0.1"
    api_port: int = Field(5000, ge=1, le=65535)
    api_token: str | None = None
    api_read_only_token: str | None = None
    dashboard_read_only: bool = False
    session_secret: str | None = None  # signs dashboard sessions and CSRF tokens; random per process if unset
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # `python -m services.api` runs this many api processes on API_PORT (SO_REUSEPORT) under a supervisor
    # (services/api/processes.py); 1 is the api itself, no supervisor: 2 did not pay on 2 cores shared with
    # Postgres and RabbitMQ (README, Performance).
    api_processes: int = Field(1, ge=1, le=64)

    retry_attempts: int = Field(3, ge=1, le=100)
    retry_delays: Annotated[tuple[int, ...], NoDecode] = (60, 300, 900)

    worker_concurrency: int | None = Field(None, ge=1, le=1000)
    worker_prefetch: int | None = Field(None, ge=1, le=10000)
    shutdown_timeout_seconds: float = Field(30.0, ge=0)
    heartbeat_seconds: float = Field(5.0, gt=0)
    # A running job's lease: renewed every HEARTBEAT_SECONDS; another worker may take the job only once it
    # has expired, and the holder stops the job itself when it could not renew for JOB_LEASE_SECONDS minus
    # two heartbeats (so it has stopped before anyone else can start it).
    job_lease_seconds: float = Field(30.0, gt=0)
    # AMQP heartbeat: RabbitMQ drops the connection of a frozen process after about twice this, and gives
    # its prefetched messages to another worker.
    amqp_heartbeat_seconds: int = Field(10, ge=1, le=600)
    # An `enqueued` job whose message has not been consumed for this long (a purged or lost queue) is
    # published again; a second copy of a live message is dropped by the claim.
    republish_enqueued_seconds: float = Field(300.0, gt=0)
    # Workers and the scheduler exit non-zero (3) after Postgres or RabbitMQ was unreachable this long, so that
    # their orchestrator restarts them; the api stays up and answers /readyz with 503 meanwhile.
    dependency_timeout_seconds: float = Field(120.0, gt=0)
    # classic: one node, message priorities honoured; quorum: replicated on a cluster, no priorities in
    # RabbitMQ 3.x (see shared/messaging/topology.py). Changing it needs the queues deleted first.
    queue_type: Literal["classic", "quorum"] = "classic"

    scheduler_timezone: str = "UTC"
    scheduler_poll_seconds: float = Field(1.0, gt=0)
    outbox_grace_seconds: float = Field(5.0, ge=0)

    job_retention_days: int = Field(7, ge=0)
    log_retention_days: int = Field(90, ge=0)
    event_archive_days: int = Field(30, ge=0)

    log_level: str = "INFO"
    # uvloop measured better in `make bench` (enqueue, latency at 50 % load, drain); `asyncio` is the way back.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    # Per client address, on each of sign-up and registration; per target email address, both together;
    # dashboard logins per client address. 0 requests turns a limit off.
    rate_limit_client_requests: int = Field(20, ge=0)
    rate_limit_client_seconds: float = Field(60.0, gt=0)
    rate_limit_email_requests: int = Field(5, ge=0)
    rate_limit_email_seconds: float = Field(3600.0, gt=0)
    login_rate_limit_requests: int = Field(10, ge=0)
    login_rate_limit_seconds: float = Field(300.0, gt=0)

    # How long a run of one email holds its `sending` lease; the SMTP conversation is cut off before it ends.
    email_send_lease_seconds: float = Field(45.0, ge=3)
    # Open SMTP connections the email worker keeps and reuses (at most this many at once).
    smtp_pool_size: int = Field(10, ge=1, le=1000)
    # How often the api removes parked copies of jobs that have since succeeded or been deleted.
    parked_sweep_seconds: float = Field(300.0, gt=0)
    # The scheduler and the workers serve /metrics and /healthz here (unset: not served); the api uses its own.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # Issue 9. Retry delays are spread by this fraction (0.1: ±10 %) over fixed delay buckets, unless a kind's
    # RetryPolicy declares its own jitter; 0 turns it off.
    retry_jitter: float = Field(0.1, ge=0, lt=1)
    # Per-kind limits over the ones declared with the kinds, as JSON: {"email.send": {"rate": 20}} (rate per
    # per_seconds, default 1; concurrency: runs at once across all workers). See shared/limits.py.
    kind_limits: dict[str, LimitOverride] = {}
    # Messages per second to the SMTP server, shared by every kind that sends mail; unset: no limit.
    smtp_rate_per_second: float | None = Field(None, gt=0)
    # A handler's context.progress() is stored at most this often (the last report of a run always).
    progress_interval_ms: int = Field(500, ge=0, le=60_000)

    @field_validator("admin_emails", "retry_delays", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("retry_delays")
    @classmethod
    def _check_retry_delays(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("needs at least one delay in seconds")
        if any(delay < 1 for delay in value):
            raise ValueError("every delay must be at least 1 second")
        return value

    @field_validator("scheduler_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @model_validator(mode="after")
    def _check_lease(self) -> Settings:
        if self.job_lease_seconds < 3 * self.heartbeat_seconds:
            raise ValueError(
                f"JOB_LEASE_SECONDS ({self.job_lease_seconds:g}) must be at least three HEARTBEAT_SECONDS "
                f"({self.heartbeat_seconds:g}): a lease is renewed every heartbeat and needs room for a missed one"
            )
        return self

    def lease_fence_seconds(self) -> float:
        """How long a worker keeps running a job it could not renew: it stops two heartbeats before expiry."""
        return self.job_lease_seconds - 2 * self.heartbeat_seconds

    def concurrency_for(self, default: int) -> int:
        return self.worker_concurrency or default

    def prefetch_for(self, default: int) -> int:
        return self.worker_prefetch or self.concurrency_for(default)


def describe_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        if not item["loc"]:  # a rule across settings names its variables in its own message
            lines.append(f"invalid settings: {item['msg'].removeprefix('Value error, ')}")
            continue
        variable = "_".join(str(part) for part in item["loc"][:1]).upper()
        lines.append(f"invalid setting {variable}={item.get('input')!r}: {item['msg']}")
    return "\n".join(lines)


def load_settings() -> Settings:
    """Build the settings or stop the process with a message naming the bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        print(describe_errors(error), file=sys.stderr)
        raise SystemExit(2) from None

"""Settings: parsed once from `SHEAF_*` variables into one frozen, typed object.

Nothing else in Sheaf reads `os.environ`. `Settings.from_env(mapping)` takes any mapping so
tests and the CLI can inject values; unknown `SHEAF_*` names are an error (a typo must not
silently fall back to a default). Every field is documented by its `description`, which
is also what `sheaf config` prints and what the README's configuration table shows.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from sheaf.errors import ConfigError

PREFIX = "SHEAF_"
MiB = 1024 * 1024


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- where things live -----------------------------------------------------------
    database_url: SecretStr = Field(
        SecretStr("sqlite+aiosqlite:///.sheaf/sheaf.db"),
        description="SQLAlchemy async URL: sqlite+aiosqlite:///PATH or "
        "postgresql+asyncpg://USER@HOST/DB.",
    )
    blob_dir: Path = Field(Path(".sheaf/blobs"), description="Local blob store directory.")
    message_bus: Literal["none"] = Field(
        "none", description="`none`: workers poll the database for queued documents."
    )
    embedder: Literal["lexical"] = Field(
        "lexical", description="`lexical`: offline deterministic hashed word n-grams."
    )
    embedding_dimensions: int = Field(
        1024, ge=16, le=8192, description="Vector size of the lexical embedder."
    )

    # -- API ---------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port the API listens on.")
    max_upload_bytes: int = Field(
        100 * MiB, ge=1, description="Uploads larger than this are refused with 413."
    )

    api_url: str = Field(
        "http://127.0.0.1:8000", description="API the CLI's user commands talk to."
    )

    # -- documents and leases -----------------------------------------------------------
    max_attempts: int = Field(3, ge=1, le=100, description="Attempts before a document fails.")
    lease_seconds: float = Field(60.0, gt=0, description="How long a lease lasts unrenewed.")
    heartbeat_seconds: float = Field(
        15.0, gt=0, description="Lease renewal interval; at most a third of the lease."
    )
    retry_base_seconds: float = Field(
        5.0, ge=0, description="First retry delay after a transient failure (doubles)."
    )
    retry_max_seconds: float = Field(300.0, ge=0, description="Cap on the retry delay.")
    document_deadline_seconds: float = Field(
        600.0, gt=0, description="Longest a single attempt may run before it is abandoned."
    )

    # -- worker ------------------------------------------------------------------------
    worker_id: str = Field(
        default_factory=_default_worker_id, description="Name recorded on leases (host-pid)."
    )
    workers: int = Field(2, ge=0, le=64, description="Worker processes `sheaf up` starts.")
    concurrency: int = Field(4, ge=1, le=256, description="Documents one worker processes at once.")
    poll_interval_seconds: float = Field(
        1.0, gt=0, description="Idle polling interval (with jitter)."
    )
    shutdown_grace_seconds: float = Field(
        20.0, ge=0, description="On SIGTERM, time to finish documents before releasing them."
    )
    chunk_size: int = Field(1200, ge=100, description="Target chunk length in characters.")
    chunk_overlap: int = Field(200, ge=0, description="Characters shared by neighbour chunks.")
    embed_batch_size: int = Field(64, ge=1, description="Chunks embedded and written per batch.")

    # -- background jobs (run in the API and in every worker) ---------------------------
    sweep_interval_seconds: float = Field(
        10.0, gt=0, description="How often expired leases are taken back."
    )
    reconcile_interval_seconds: float = Field(
        30.0, gt=0, description="How often queued rows without a recent message are re-sent."
    )
    reconcile_after_seconds: float = Field(
        120.0, gt=0, description="A queued row undispatched this long is re-sent."
    )
    cleanup_interval_seconds: float = Field(
        30.0, gt=0, description="How often tombstones and orphan blobs are cleaned."
    )
    orphan_blob_grace_seconds: float = Field(
        3600.0, ge=0, description="Blobs with no document row older than this are deleted."
    )

    # -- operations ----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="`auto`: text on a terminal, JSON lines otherwise."
    )

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        problems = []
        if self.heartbeat_seconds > self.lease_seconds / 3:
            problems.append(
                f"SHEAF_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be at most a "
                f"third of SHEAF_LEASE_SECONDS ({self.lease_seconds:g}), so two renewals can "
                "fail before the lease runs out"
            )
        if self.chunk_overlap >= self.chunk_size:
            problems.append("SHEAF_CHUNK_OVERLAP must be smaller than SHEAF_CHUNK_SIZE")
        if self.retry_max_seconds < self.retry_base_seconds:
            problems.append("SHEAF_RETRY_MAX_SECONDS must be at least SHEAF_RETRY_BASE_SECONDS")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Parse `SHEAF_*` names from `environ`; `overrides` (field names) win."""
        fields = set(cls.model_fields)
        values: dict[str, Any] = {}
        for name, value in environ.items():
            if not name.startswith(PREFIX):
                continue
            field = name[len(PREFIX) :].lower()
            if field not in fields:
                raise ConfigError(
                    f"unknown setting {name}; known settings are listed by `sheaf config`"
                )
            values[field] = value
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    @property
    def database_dialect(self) -> str:
        return self.database_url.get_secret_value().split(":", 1)[0].split("+", 1)[0]


def _explain(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        name = f"{PREFIX}{where.upper()}" if where else "settings"
        lines.append(f"  {name}: {err['msg']}")
    return "\n".join(lines)

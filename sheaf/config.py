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

from sheaf.domain.scopes import parse_role_scopes
from sheaf.errors import ConfigError

PREFIX = "SHEAF_"
MiB = 1024 * 1024
# The offline model of SHEAF_EMBEDDER=local (sheaf.adapters.embed_local): one size only.
LOCAL_EMBEDDING_MODEL = "local:all-minilm-l6-v2-int8:384"
LOCAL_EMBEDDING_DIMENSIONS = 384


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- where things live -----------------------------------------------------------
    database_url: SecretStr = Field(
        SecretStr("sqlite+aiosqlite:///.sheaf/sheaf.db"),
        description="SQLAlchemy async URL: sqlite+aiosqlite:///PATH, "
        "postgresql+asyncpg://USER@HOST/DB or mssql+aioodbc://… (see SQL Server below).",
    )
    database_auth: Literal["sql", "entra"] = Field(
        "sql",
        description="SQL Server sign-in: `sql` (user and password in the URL) or `entra` "
        "(the Azure identity's access token; no secret).",
    )
    migration_lock_timeout_seconds: float = Field(
        600.0,
        gt=0,
        description="How long `sheaf db upgrade` waits for another migrator to finish before "
        "it gives up with exit status 1.",
    )
    blob_backend: Literal["local", "azure"] = Field(
        "local", description="`local`: a directory (SHEAF_BLOB_DIR); `azure`: Blob Storage."
    )
    blob_dir: Path = Field(Path(".sheaf/blobs"), description="Local blob store directory.")
    azure_storage_account_url: str | None = Field(
        None, description="https://ACCOUNT.blob.core.windows.net, reached with Entra ID."
    )
    azure_storage_connection_string: SecretStr | None = Field(
        None, description="Alternative to the account URL: a connection string (Azurite)."
    )
    azure_storage_container: str = Field(
        "documents", description="Blob container used only by Sheaf (orphans are collected)."
    )
    azure_client_id: str | None = Field(
        None, description="Client id of a user-assigned managed identity, if not the default."
    )
    message_bus: Literal["none", "servicebus"] = Field(
        "none",
        description="`none`: workers poll the database; `servicebus`: wake-up messages on "
        "an Azure Service Bus queue (workers poll only while it is unreachable).",
    )
    servicebus_namespace: str | None = Field(
        None, description="NAMESPACE.servicebus.windows.net, reached with the Azure identity."
    )
    servicebus_connection_string: SecretStr | None = Field(
        None, description="Alternative to the namespace: a connection string (emulators)."
    )
    servicebus_queue: str = Field("documents", description="Queue of wake-up messages.")
    lock_renewal_seconds: float = Field(
        3900.0,
        gt=0,
        description="How long a message lock is renewed while its document is processed; "
        "above SHEAF_DOCUMENT_DEADLINE_SECONDS.",
    )
    servicebus_retry_seconds: float = Field(
        30.0, gt=0, description="While Service Bus is unreachable, how often to try again."
    )
    safety_poll_seconds: float = Field(
        60.0,
        ge=0,
        description="With Service Bus on, how often a worker also polls for documents whose "
        "wake-up is overdue (a lost or misrouted message); 0 = never.",
    )
    safety_poll_after_seconds: float = Field(
        300.0,
        gt=0,
        description="Overdue: ready this long and still queued. Above "
        "SHEAF_RECONCILE_AFTER_SECONDS, so the reconciler's re-send gets its chance first.",
    )
    servicebus_prefetch: int = Field(
        0,
        ge=0,
        description="Messages a worker holds ahead of its free slots, at most SHEAF_CONCURRENCY."
        " 0: none, so no message waits in a buffer under a lock nobody renews (while the "
        "database is down such locks would lapse and count towards the DLQ).",
    )
    embedder: Literal["local", "lexical", "azure-openai", "openai"] = Field(
        "local",
        description="`local` (all-MiniLM-L6-v2 on this machine's CPU, offline), `azure-openai`,"
        " `openai` (any OpenAI-compatible endpoint), or `lexical` (hashed word n-grams: a "
        "deterministic fake for tests, not for search).",
    )
    embedding_dimensions: int = Field(
        1024,
        ge=16,
        le=8192,
        description="Vector size, sent to the API for text-embedding-3. With "
        "SHEAF_EMBEDDER=local it is the model's, 384 (unset means 384; anything else is "
        "refused).",
    )
    local_embedding_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="Inferences of the local model one process runs at once, one core each; "
        "0 = this machine's cores divided by SHEAF_WORKERS (at least 1), so `sheaf up` keeps "
        "every core busy without oversubscribing them. Set it in a container (one worker per "
        "pod).",
    )
    local_embedding_batch_size: int = Field(
        4,
        ge=1,
        le=1024,
        description="Texts of similar length the local model embeds in one inference call; "
        "4 ran as fast as 32 on one core and peaked at half the memory (README: Search).",
    )
    embedding_request_dimensions: bool = Field(
        True, description="Send `dimensions` to the API (false for models that cannot shorten)."
    )
    azure_openai_endpoint: str | None = Field(
        None, description="https://RESOURCE.openai.azure.com (Entra ID unless a key is set)."
    )
    azure_openai_deployment: str | None = Field(None, description="Embedding deployment name.")
    azure_openai_api_version: str = Field("2024-10-21", description="Azure OpenAI API version.")
    azure_openai_api_key: SecretStr | None = Field(
        None, description="Optional API key; without it Sheaf uses its Azure identity."
    )
    openai_base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint including /v1, e.g. http://tei:8080/v1."
    )
    openai_model: str | None = Field(None, description="Model name at that endpoint.")
    openai_api_key: SecretStr | None = Field(None, description="Its API key, if it wants one.")
    embedding_max_batch_inputs: int = Field(
        2048, ge=1, le=2048, description="Inputs per embedding request."
    )
    embedding_max_request_tokens: int = Field(
        300_000, ge=1, description="Estimated tokens per embedding request."
    )
    embedding_max_input_tokens: int = Field(
        8191, ge=1, description="Longer inputs are split and averaged, never truncated."
    )
    embedding_concurrency: int = Field(4, ge=1, description="Embedding requests in flight.")
    embedding_timeout_seconds: float = Field(60.0, gt=0, description="Per embedding request.")

    # -- API ---------------------------------------------------------------------------
    host: str = Field(
        "127.0.0.1", description="Address the API and the workers' health servers listen on."
    )
    port: int = Field(8000, ge=0, le=65535, description="Port the API listens on.")
    max_upload_bytes: int = Field(
        100 * MiB, ge=1, description="Uploads larger than this are refused with 413."
    )
    search_cache_bytes: int = Field(
        512 * MiB,
        ge=0,
        description="Memory exact search may keep vectors in between searches, per API "
        "process (512 MiB: ~130,000 chunks of 1,024 dimensions); a collection that does not "
        "fit is read from the database on every search. 0 = no cache.",
    )
    keyword_cache_bytes: int = Field(
        256 * MiB,
        ge=0,
        description="PostgreSQL: memory keyword search may keep each searched collection's "
        "postings in between searches, per API process (about 70 MiB per 100,000 chunks of "
        "1,000 characters); a collection that does not fit is scored on the server on every "
        "search. "
        "0 = no cache.",
    )

    api_url: str = Field(
        "http://127.0.0.1:8000", description="API the CLI's user commands talk to."
    )
    api_key: SecretStr | None = Field(
        None, description="API key the CLI's user commands send (or pass --api-key)."
    )

    # -- authentication (docs/security.md) ------------------------------------------------
    auth_mode: Literal["none", "keys", "entra", "keys+entra"] = Field(
        "none",
        description="Credentials the API accepts: `keys` (`sheaf keys create`), `entra` "
        "(Entra ID tokens), both, or `none` (only on a loopback address).",
    )
    entra_tenant_id: str | None = Field(None, description="Entra ID tenant (directory) id.")
    entra_audience: str | None = Field(
        None, description="Accepted token audiences, comma-separated (api://… and/or client id)."
    )
    entra_issuer: str | None = Field(
        None, description="Accepted issuers, comma-separated; default: the tenant's v2 and v1."
    )
    entra_jwks_url: str | None = Field(
        None, description="Signing keys; default: the tenant's discovery/v2.0/keys endpoint."
    )
    entra_role_scopes: str = Field(
        "Sheaf.Read=read;Sheaf.Write=write;Sheaf.Admin=admin",
        description="App roles or group ids to scopes: `NAME=SCOPE[:COLLECTION,…];…` "
        "(no collections = all of them).",
    )
    upload_rate_per_second: float = Field(
        5.0, ge=0, description="Uploads per second per API key or token; 0 = no limit."
    )
    upload_burst: int = Field(
        50, ge=1, description="Uploads one caller may send at once before the rate applies."
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
    document_stall_seconds: float = Field(
        300.0,
        gt=0,
        description="Longest an attempt may go without progress (a page extracted, a batch "
        "of chunks written) from its first page on before it is abandoned; a document that "
        "keeps progressing is never stopped for its size.",
    )
    document_deadline_seconds: float = Field(
        3600.0,
        gt=0,
        description="Backstop: longest a single attempt may run however it progresses; "
        "at least SHEAF_DOCUMENT_STALL_SECONDS, above what the largest allowed document takes.",
    )
    document_max_bytes: int = Field(
        100 * MiB,
        ge=1,
        description="Larger stored files fail with `document_too_large` (the upload limit "
        "is SHEAF_MAX_UPLOAD_BYTES; this also catches files stored under a larger one).",
    )
    document_max_pages: int = Field(
        10_000, ge=1, description="Documents with more pages fail with `too_many_pages`."
    )
    document_max_chunks: int = Field(
        250_000,
        ge=1,
        description="Documents that make more chunks fail with `too_many_chunks` (a 100 MB "
        "text makes ~100,000 chunks at the default chunk size).",
    )

    # -- worker ------------------------------------------------------------------------
    worker_id: str = Field(
        default_factory=_default_worker_id, description="Name recorded on leases (host-pid)."
    )
    workers: int = Field(2, ge=0, le=64, description="Worker processes `sheaf up` starts.")
    concurrency: int = Field(4, ge=1, le=256, description="Documents one worker processes at once.")
    poll_interval_seconds: float = Field(
        1.0,
        gt=0,
        description="Idle polling interval (with jitter). On PostgreSQL and SQLite a new "
        "document also wakes idle workers at once.",
    )
    shutdown_grace_seconds: float = Field(
        20.0, ge=0, description="On SIGTERM, time to finish documents before releasing them."
    )
    extract_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest an extraction child may take to produce the next page (it is "
        "then killed); below SHEAF_DOCUMENT_STALL_SECONDS.",
    )
    extract_memory_bytes: int = Field(
        1024**3, ge=256 * MiB, description="Address-space limit of an extraction child."
    )
    extract_processes: int = Field(
        2, ge=1, le=64, description="Extraction child processes per worker, reused."
    )
    ocr_enabled: bool = Field(
        True,
        description="Read scanned PDF pages and images (PNG, JPEG, TIFF) with Tesseract "
        "(Debian package tesseract-ocr). Off: scans end as `no_text`, images as `ocr_disabled`.",
    )
    ocr_engine: Literal["tesseract", "azure-document-intelligence"] = Field(
        "tesseract",
        description="Who reads scans and images: `tesseract` (local) or "
        "`azure-document-intelligence` (SHEAF_AZURE_DOCUMENT_INTELLIGENCE_*; text layers "
        "are still read locally, only pages without text are sent).",
    )
    azure_document_intelligence_endpoint: str | None = Field(
        None, description="https://NAME.cognitiveservices.azure.com/, reached with Entra ID."
    )
    azure_document_intelligence_key: SecretStr | None = Field(
        None, description="Optional key instead of the Azure identity."
    )
    azure_document_intelligence_model: str = Field(
        "prebuilt-layout",
        description="`prebuilt-layout` (text and tables, kept as Markdown rows) or "
        "`prebuilt-read` (text only, cheaper).",
    )
    azure_document_intelligence_timeout_seconds: float = Field(
        120.0, gt=0, description="Limit of one analysis, polling included (then retried)."
    )
    ocr_languages: str = Field(
        "eng",
        pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$",
        description="Tesseract languages, e.g. `eng` or `deu+eng` (each needs its "
        "tesseract-ocr-LANG package).",
    )
    ocr_dpi: int = Field(
        300, ge=72, le=600, description="Resolution PDF pages without text are rendered at."
    )
    ocr_page_timeout_seconds: float = Field(
        30.0, gt=0, description="Time limit of OCR on one page; past it the document fails."
    )
    ocr_max_pages: int = Field(
        500, ge=1, description="Pages (or TIFF frames) of one document that may need OCR."
    )
    ocr_max_image_pixels: int = Field(
        100_000_000,
        ge=1_000_000,
        description="Largest image or rendered page, in pixels; larger declared images "
        "are refused before decoding (`image_too_large`).",
    )
    worker_memory_bytes: int = Field(
        1024**3,
        ge=0,
        description="Resident memory of a worker process above which the document asking "
        "for its next batch fails with `worker_memory_limit` (transient), rather than the "
        "kernel killing the worker with every document in it; 0 = no limit. Extraction "
        "children have their own (SHEAF_EXTRACT_MEMORY_BYTES).",
    )
    chunk_size: int = Field(
        700,
        ge=100,
        description="Target chunk length in characters. 700 fits the local model's 256-token "
        "window: measured at 5.3 characters per token on English prose (about 130 tokens, the "
        "length it was trained on) and 3.2 on technical text with code (about 220); longer "
        "chunks are split and averaged, never truncated (README: Search).",
    )
    chunk_overlap: int = Field(
        100, ge=0, description="Characters shared by neighbour chunks (about one sentence)."
    )
    embed_batch_size: int = Field(64, ge=1, description="Chunks embedded and written per batch.")
    worker_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of a worker's /healthz, /readyz and /metrics; 0 = none. "
        "`sheaf up` gives worker N this port + N (unset: the API's port + 1 + N).",
    )

    # -- background jobs (run in the API and in every worker) ---------------------------
    sweep_interval_seconds: float = Field(
        10.0, gt=0, description="How often expired leases are taken back."
    )
    reconcile_interval_seconds: float = Field(
        30.0, gt=0, description="How often queued rows without a recent message are re-sent."
    )
    reconcile_after_seconds: float = Field(
        120.0,
        gt=0,
        description="A queued row undispatched this long gets a new wake-up if the queue "
        "holds none for it.",
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
    database_metrics_interval_seconds: float = Field(
        15.0,
        ge=0,
        description="How often the API reads document counts and the oldest ready age "
        "for /metrics; 0 = never.",
    )

    @model_validator(mode="before")
    @classmethod
    def _local_model_dimensions(cls, data: Any) -> Any:
        """The local model has one size: unset dimensions mean its size, not 1024."""
        if isinstance(data, dict) and data.get("embedder", "local") == "local":
            return {"embedding_dimensions": LOCAL_EMBEDDING_DIMENSIONS, **data}
        return data

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        problems = []
        if self.heartbeat_seconds > self.lease_seconds / 3:
            problems.append(
                f"SHEAF_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be at most a "
                f"third of SHEAF_LEASE_SECONDS ({self.lease_seconds:g}), so two renewals can "
                "fail before the lease runs out"
            )
        if self.extract_timeout_seconds >= self.document_stall_seconds:
            problems.append(
                "SHEAF_EXTRACT_TIMEOUT_SECONDS must be below SHEAF_DOCUMENT_STALL_SECONDS, so "
                "a parser stuck on one page is stopped as such rather than as a stalled attempt"
            )
        if self.document_stall_seconds > self.document_deadline_seconds:
            problems.append(
                "SHEAF_DOCUMENT_STALL_SECONDS must be at most SHEAF_DOCUMENT_DEADLINE_SECONDS"
            )
        if self.chunk_overlap >= self.chunk_size:
            problems.append("SHEAF_CHUNK_OVERLAP must be smaller than SHEAF_CHUNK_SIZE")
        if self.retry_max_seconds < self.retry_base_seconds:
            problems.append("SHEAF_RETRY_MAX_SECONDS must be at least SHEAF_RETRY_BASE_SECONDS")
        problems += self._missing_for_backends()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _missing_for_backends(self) -> list[str]:
        problems = []
        storage = (self.azure_storage_account_url, self.azure_storage_connection_string)
        if self.blob_backend == "azure" and sum(v is not None for v in storage) != 1:
            problems.append(
                "SHEAF_BLOB_BACKEND=azure needs exactly one of SHEAF_AZURE_STORAGE_ACCOUNT_URL "
                "(managed identity) or SHEAF_AZURE_STORAGE_CONNECTION_STRING"
            )
        if self.embedder == "azure-openai" and not (
            self.azure_openai_endpoint and self.azure_openai_deployment
        ):
            problems.append(
                "SHEAF_EMBEDDER=azure-openai needs SHEAF_AZURE_OPENAI_ENDPOINT and "
                "SHEAF_AZURE_OPENAI_DEPLOYMENT"
            )
        bus = (self.servicebus_namespace, self.servicebus_connection_string)
        if self.message_bus == "servicebus" and sum(v is not None for v in bus) != 1:
            problems.append(
                "SHEAF_MESSAGE_BUS=servicebus needs exactly one of SHEAF_SERVICEBUS_NAMESPACE "
                "(managed identity) or SHEAF_SERVICEBUS_CONNECTION_STRING"
            )
        if self.message_bus == "servicebus" and (
            self.document_deadline_seconds >= self.lock_renewal_seconds
        ):
            problems.append(
                "SHEAF_DOCUMENT_DEADLINE_SECONDS must be below SHEAF_LOCK_RENEWAL_SECONDS, so a "
                "message stays locked for as long as its document may take"
            )
        if self.servicebus_prefetch > self.concurrency:
            problems.append(
                f"SHEAF_SERVICEBUS_PREFETCH ({self.servicebus_prefetch}) must be at most "
                f"SHEAF_CONCURRENCY ({self.concurrency}): prefetched messages wait unrenewed"
            )
        if self.database_auth == "entra" and self.database_dialect != "mssql":
            problems.append("SHEAF_DATABASE_AUTH=entra is for SQL Server (mssql+aioodbc) only")
        if self.embedder == "local" and self.embedding_dimensions != LOCAL_EMBEDDING_DIMENSIONS:
            problems.append(
                f"SHEAF_EMBEDDING_DIMENSIONS={self.embedding_dimensions} does not match "
                f"SHEAF_EMBEDDER=local, whose model ({LOCAL_EMBEDDING_MODEL}) gives "
                f"{LOCAL_EMBEDDING_DIMENSIONS}; unset it (or set it to that)"
            )
        if self.embedder == "openai" and not (self.openai_base_url and self.openai_model):
            problems.append(
                "SHEAF_EMBEDDER=openai needs SHEAF_OPENAI_BASE_URL and SHEAF_OPENAI_MODEL"
            )
        if self.ocr_engine == "azure-document-intelligence" and (
            not self.azure_document_intelligence_endpoint
        ):
            problems.append(
                "SHEAF_OCR_ENGINE=azure-document-intelligence needs "
                "SHEAF_AZURE_DOCUMENT_INTELLIGENCE_ENDPOINT"
            )
        return problems + self._auth_problems()

    def _auth_problems(self) -> list[str]:
        problems = []
        if "entra" in self.auth_mode and not (self.entra_tenant_id and self.entra_audience):
            problems.append(
                f"SHEAF_AUTH_MODE={self.auth_mode} needs SHEAF_ENTRA_TENANT_ID and "
                "SHEAF_ENTRA_AUDIENCE"
            )
        try:
            parse_role_scopes(self.entra_role_scopes)
        except ValueError as exc:
            problems.append(f"SHEAF_ENTRA_ROLE_SCOPES: {exc}")
        return problems

    @property
    def needs_azure_credential(self) -> bool:
        """True when some adapter authenticates with the Azure identity (no key given)."""
        blob = self.blob_backend == "azure" and self.azure_storage_connection_string is None
        openai = self.embedder == "azure-openai" and self.azure_openai_api_key is None
        bus = self.message_bus == "servicebus" and self.servicebus_connection_string is None
        ocr = (
            self.ocr_engine == "azure-document-intelligence"
            and self.azure_document_intelligence_key is None
        )
        return blob or openai or bus or ocr or self.database_auth == "entra"

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

"""Prometheus metrics, defined once. Names and units follow Prometheus conventions
(`_total` counters, `_seconds` durations, base units); every label is a small, fixed set —
never a document id, a collection or a file name.

Multi-process: every Sheaf process (API, each worker) serves its OWN registry, on its own
port (`SHEAF_PORT` for the API, `SHEAF_WORKER_METRICS_PORT` + worker index for the workers
of `sheaf up`, see `sheaf.supervisor`). Prometheus scrapes each process as a target and
dashboards `sum` across them. We do not use prometheus_client's multiprocess mode: it
needs a shared directory set up before import, loses `Info`/live gauges, and must clean up
the files of dead workers — while one process per target is what Kubernetes runs anyway
(one worker process per pod) and gives the per-worker dashboard for free.

The database-derived gauges (`DOCUMENTS`, `OLDEST_READY_AGE`, `LEASES_HELD`) are the
exception: they describe the whole system, are refreshed on a timer by API processes only
(`sheaf.observability`), and must be aggregated with `max`, never `sum`, so API replicas
do not multiply them.

Label values that are known up front are initialised to 0 at import, so their series
exist (and `rate()` works) before the first event.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)

from sheaf import __version__

# No `<name>_created` series next to every counter and histogram: Prometheus would store
# each as one more series per label set, and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

STAGES = ("download", "extract", "chunk", "embed", "index", "total")
PROCESS_OUTCOMES = ("completed", "transient", "permanent", "lease_lost", "interrupted")
FENCED_OPERATIONS = ("renew", "write_chunks", "complete", "release")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# -- identity -----------------------------------------------------------------------------
BUILD = Info("sheaf_build", "Sheaf version, Python version and this process's role")


def exposition() -> tuple[bytes, str]:
    """This process's metrics in the Prometheus text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


def set_role(role: str) -> None:
    """Label this process `api` or `worker` in `sheaf_build_info` (dashboards filter on it)."""
    BUILD.info({"version": __version__, "python": platform.python_version(), "role": role})


set_role("unknown")

# -- uploads (API) --------------------------------------------------------------------------
UPLOADS = Counter(
    "sheaf_uploads_total",
    "Uploads answered: created a document, matched an existing one, or were rejected "
    "(error_code says why: unsupported_type, upload_too_large, …)",
    ["result", "error_code"],  # created | duplicate | rejected
)
for _result in ("created", "duplicate"):
    UPLOADS.labels(result=_result, error_code="")

# -- processing (workers) -------------------------------------------------------------------
DOCUMENTS_PROCESSED = Counter(
    "sheaf_documents_processed_total",
    "Attempts settled by this process, by outcome (completed, transient, permanent, "
    "lease_lost, interrupted) and the error code of a failed attempt",
    ["outcome", "error_code"],
)
DOCUMENTS_PROCESSED.labels(outcome="completed", error_code="")
DOCUMENTS_IN_FLIGHT = Gauge(
    "sheaf_documents_in_flight", "Documents this process is processing right now"
)
WORKER_SLOTS = Gauge(
    "sheaf_worker_slots", "Documents this worker may process at once (SHEAF_CONCURRENCY)"
)
STAGE_SECONDS = Histogram(
    "sheaf_stage_duration_seconds",
    "Time per pipeline stage of one attempt, failures included; stage=total is the whole attempt",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
for _stage in STAGES:
    STAGE_SECONDS.labels(stage=_stage)
EMBEDDING_CACHE = Counter(
    "sheaf_embedding_cache_lookups_total",
    "Chunks whose vector was reused from the collection (hit) or had to be embedded (miss)",
    ["result"],
)
for _result in ("hit", "miss"):
    EMBEDDING_CACHE.labels(result=_result)

# -- leases -----------------------------------------------------------------------------------
LEASES_ACQUIRED = Counter(
    "sheaf_leases_acquired_total", "Document leases granted to this process (polling or message)"
)
LEASES_RENEWED = Counter("sheaf_leases_renewed_total", "Lease heartbeats the database accepted")
LEASE_RENEWAL_ERRORS = Counter(
    "sheaf_lease_renewal_errors_total",
    "Lease heartbeats that could not reach the database (retried; the lease may expire)",
)
LEASES_EXPIRED = Counter(
    "sheaf_leases_expired_total",
    "Expired leases this process's sweeper took back: their holder crashed or stalled",
)
LEASES_RECOVERED = Counter(
    "sheaf_leases_recovered_total",
    "Of the expired leases, documents queued again for another attempt (the rest had no "
    "attempts left and failed)",
)
FENCING_REJECTIONS = Counter(
    "sheaf_lease_fencing_rejections_total",
    "Writes refused because this process's fencing token no longer held the lease",
    ["operation"],  # renew | write_chunks | complete | release
)
for _operation in FENCED_OPERATIONS:
    FENCING_REJECTIONS.labels(operation=_operation)

# -- the database, read on a timer by API processes: aggregate with max() ---------------------
DOCUMENTS = Gauge(
    "sheaf_documents",
    "Documents by status, read from the database (aggregate with max across API replicas)",
    ["status"],
)
OLDEST_READY_AGE = Gauge(
    "sheaf_oldest_ready_document_age_seconds",
    "How long the oldest ready queued document has waited (0 when none waits)",
)
LEASES_HELD = Gauge("sheaf_leases_held", "Unexpired leases held by any worker")
DATABASE_METRICS_REFRESHED = Gauge(
    "sheaf_database_metrics_refresh_timestamp_seconds",
    "When this process last read the database gauges (Unix time); stale means blind alerts",
)

# -- processes ---------------------------------------------------------------------------------
EVENT_LOOP_LAG = Gauge(
    "sheaf_event_loop_lag_seconds",
    "How late this process's event loop ran its last timer (blocking code shows here)",
)
WORKER_RESTARTS = Counter(
    "sheaf_worker_restarts_total", "Worker processes `sheaf up` restarted after they died"
)
QUEUE_MODE = Gauge(
    "sheaf_queue_mode",
    "1 for the way this process learns about work: polling, servicebus, or degraded "
    "(Service Bus configured but unreachable, polling instead)",
    ["mode"],
)

# -- HTTP (API) ----------------------------------------------------------------------------------
HTTP_SECONDS = Histogram(
    "sheaf_http_request_duration_seconds",
    "API request latency by method, route template and status",
    ["method", "route", "status"],
)

# -- embedding APIs (Azure OpenAI, OpenAI-compatible): one sample per HTTP try ----------------
EMBEDDING_REQUESTS = Counter(
    "sheaf_embedding_requests_total",
    "Embedding API calls (each retry counts), by result",
    ["result"],  # ok | throttled | error
)
for _result in ("ok", "throttled", "error"):
    EMBEDDING_REQUESTS.labels(result=_result)
EMBEDDING_TOKENS = Counter(
    "sheaf_embedding_tokens_total",
    "Tokens embedded, as the API counted them (our estimate where it does not say)",
)
EMBEDDING_THROTTLES = Counter(
    "sheaf_embedding_throttles_total", "429 answers from embedding APIs: the quota is too small"
)
EMBEDDING_SECONDS = Histogram(
    "sheaf_embedding_request_duration_seconds",
    "Latency of one embedding API call, failures included",
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)

# -- Azure Service Bus: exported by workers running the consumer ------------------------------
# In polling mode these stay at 0 (counters without labels) or absent (labelled ones).
SERVICEBUS_RECEIVED = Counter(
    "sheaf_servicebus_messages_received_total", "Wake-up messages received from Service Bus"
)
SERVICEBUS_SETTLED = Counter(
    "sheaf_servicebus_messages_settled_total",
    "Messages settled, by how: completed, abandoned or dead_lettered",
    ["settlement"],
)
SERVICEBUS_SCHEDULED = Counter(
    "sheaf_servicebus_messages_scheduled_total",
    "Wake-ups scheduled for later (retry delays, not-yet-ready documents)",
)
SERVICEBUS_LOCK_RENEWALS = Counter(
    "sheaf_servicebus_lock_renewals_total",
    "Message locks renewed while their documents were processed",
)
BREAKER_OPEN = Gauge(
    "sheaf_worker_breaker_open",
    "1 while this worker takes no new documents because the blob store or database is down",
)
SAFETY_NET_CLAIMS = Counter(
    "sheaf_safety_net_claims_total",
    "Documents a Service Bus worker claimed by its safety-net poll: their wake-up was overdue",
)
SERVICEBUS_DEAD_LETTERS = Gauge(
    "sheaf_servicebus_dead_letter_messages",
    "Messages in the dead-letter queue (they mirror the failed documents)",
    ["queue"],
)

"""Prometheus metrics, defined once. Labels are bounded sets: never a document id.

Each process exposes its own registry on `/metrics`; dashboards aggregate across
processes and pods.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, Info

from sheaf import __version__

BUILD = Info("sheaf_build", "Sheaf version")
BUILD.info({"version": __version__})

DOCUMENTS_ACCEPTED = Counter(
    "sheaf_documents_accepted_total",
    "Uploads answered, by whether they created a new document",
    ["result"],  # created | duplicate | rejected
)
DOCUMENTS_PROCESSED = Counter(
    "sheaf_documents_processed_total",
    "Attempts settled by workers, by outcome (completed, transient:<code>, permanent:<code>, …)",
    ["outcome"],
)
STAGE_SECONDS = Histogram(
    "sheaf_stage_duration_seconds",
    "Time spent per pipeline stage",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
EMBEDDING_CACHE = Counter(
    "sheaf_embedding_cache_lookups_total",
    "Chunks whose vector was reused from the collection (hit) or had to be embedded (miss)",
    ["result"],
)
LEASES_ACQUIRED = Counter("sheaf_leases_acquired_total", "Leases granted to this process")
LEASES_EXPIRED = Counter(
    "sheaf_leases_expired_total", "Expired leases this process took back (crashed workers)"
)
HTTP_SECONDS = Histogram(
    "sheaf_http_request_duration_seconds",
    "API request latency by route and status",
    ["method", "route", "status"],
)

# -- embedding APIs (Azure OpenAI, OpenAI-compatible): one sample per HTTP try ----------------
EMBEDDING_REQUESTS = Counter(
    "sheaf_embedding_requests_total",
    "Embedding API calls (each retry counts), by result",
    ["result"],  # ok | throttled | error
)
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

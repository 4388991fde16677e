"""The composition root: the only place that chooses adapters and builds the services.

Nothing is opened at import time. `open_deps` opens every resource in an exit stack and
closes them in reverse order; callers tie it to their own lifetime (the aiohttp
`cleanup_ctx`, the worker's `async with`). One Azure credential is built here, at most
once, and shared by every adapter that authenticates with Entra ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator

from azure.core.credentials_async import AsyncTokenCredential

from sheaf.adapters.blob_local import LocalBlobStore
from sheaf.adapters.bus_none import NoMessageBus
from sheaf.adapters.embed_lexical import LexicalEmbedder
from sheaf.adapters.sql import open_store
from sheaf.adapters.sql.keys import SqlKeyStore
from sheaf.adapters.sql.keys import open_key_store as open_sql_key_store
from sheaf.adapters.sql.migrate import check_schema, upgrade
from sheaf.config import Settings
from sheaf.extract import LocalExtractor, OcrOptions, PdfLimits
from sheaf.extract.isolated import IsolatedExtractor
from sheaf.ports import BlobStore, Embedder, Extractor, KeyStore, MessageBus, WorkQueue
from sheaf.services.deps import Deps

log = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    """Move every object start-up made (modules, settings, the app, the adapters) out of
    the cyclic garbage collector's reach (`gc.freeze`). A full collection walks every
    tracked object: the ~170,000 that Sheaf's imports leave took 84 ms to walk on a 2-core
    AMD EPYC, a pause of the event loop (and of whichever search was running) every few
    hundred searches. Later collections walk only what was made since."""
    gc.collect()
    gc.freeze()


def migrate(settings: Settings) -> None:
    """Bring the database schema to the newest version (idempotent)."""
    upgrade(
        settings.database_url.get_secret_value(),
        entra=settings.database_auth == "entra",
        azure_client_id=settings.azure_client_id,
        lock_timeout=settings.migration_lock_timeout_seconds,
    )


@contextlib.asynccontextmanager
async def open_deps(settings: Settings, *, warm_extractor: bool = False) -> AsyncIterator[Deps]:
    """Everything a process needs, closed on exit. `warm_extractor` (the worker) starts the
    extraction children in the background now, so the first document does not wait for them.
    """
    async with contextlib.AsyncExitStack() as stack:
        credential = await _credential(settings, stack)
        store = await open_store(
            settings.database_url.get_secret_value(),
            credential=credential if settings.database_auth == "entra" else None,
            search_cache_bytes=settings.search_cache_bytes,
            keyword_cache_bytes=settings.keyword_cache_bytes,
        )
        stack.push_async_callback(store.close)
        await check_schema(store.engine)
        blobs = _blob_store(settings, credential)
        stack.push_async_callback(blobs.close)
        queue = _work_queue(settings, credential)
        bus: MessageBus = queue if queue is not None else NoMessageBus()
        stack.push_async_callback(bus.close)
        embedder = _embedder(settings, credential)
        stack.push_async_callback(embedder.close)
        # Parsers run in child processes: a hang, a bomb or a crash fails one document,
        # never the worker. Children start on first use (the API process pays nothing) or,
        # in a worker, at once in the background.
        isolated = IsolatedExtractor(
            settings.extract_timeout_seconds,
            settings.extract_memory_bytes,
            settings.extract_processes,
            extractor=LocalExtractor(
                pdf_limits=PdfLimits(settings.document_max_bytes, settings.document_max_pages),
                ocr=_ocr_options(settings),
            ),
        )
        stack.callback(isolated.close)
        if warm_extractor:
            warming = asyncio.create_task(asyncio.to_thread(_warm, isolated), name="warm")
            stack.push_async_callback(asyncio.wait, {warming})
        extractor = _remote_ocr(settings, credential, isolated, stack)
        yield Deps(
            settings=settings,
            store=store,
            blobs=blobs,
            bus=bus,
            extractor=extractor,
            embedder=embedder,
            queue=queue,
            keys=SqlKeyStore(store.engine),  # same database, same pool, same identity
        )


def _warm(extractor: IsolatedExtractor) -> None:
    """Start the extraction children and say when they are ready (benchmarks wait for it:
    a spawned child imports every parser, about a second of CPU each)."""
    started = time.monotonic()
    ready = extractor.warm()
    log.info(
        "extraction processes ready",
        extra={"processes": ready, "seconds": round(time.monotonic() - started, 3)},
    )


@contextlib.asynccontextmanager
async def open_key_store(settings: Settings) -> AsyncIterator[KeyStore]:
    """The API key store alone, on an engine of its own (for `sheaf keys`)."""
    async with contextlib.AsyncExitStack() as stack:
        credential = await _credential(settings, stack)
        keys = open_sql_key_store(
            settings.database_url.get_secret_value(),
            credential=credential if settings.database_auth == "entra" else None,
        )
        stack.push_async_callback(keys.close)
        yield keys


async def _credential(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> AsyncTokenCredential | None:
    """`DefaultAzureCredential`: workload identity on AKS, managed identity on Azure
    compute, the developer's `az login` on a laptop. Closed after everything using it."""
    if not settings.needs_azure_credential:
        return None
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id)
    stack.push_async_callback(credential.close)
    return credential


def _ocr_options(settings: Settings) -> OcrOptions:
    return OcrOptions(
        # With Document Intelligence, pages without text go to the service instead.
        enabled=settings.ocr_enabled and settings.ocr_engine == "tesseract",
        languages=settings.ocr_languages,
        dpi=settings.ocr_dpi,
        page_timeout_seconds=settings.ocr_page_timeout_seconds,
        max_pages=settings.ocr_max_pages,
        max_image_pixels=settings.ocr_max_image_pixels,
    )


def _remote_ocr(
    settings: Settings,
    credential: AsyncTokenCredential | None,
    local: Extractor,
    stack: contextlib.AsyncExitStack,
) -> Extractor:
    """`local` itself, or wrapped so Document Intelligence reads what has no text layer."""
    if settings.ocr_engine != "azure-document-intelligence" or not settings.ocr_enabled:
        return local
    from azure.core.credentials import AzureKeyCredential

    from sheaf.adapters.ocr_document_intelligence import DocumentIntelligenceExtractor

    endpoint = settings.azure_document_intelligence_endpoint
    assert endpoint is not None  # checked by Settings
    key = settings.azure_document_intelligence_key
    signer = AzureKeyCredential(key.get_secret_value()) if key is not None else credential
    assert signer is not None  # Settings.needs_azure_credential made one
    remote = DocumentIntelligenceExtractor.create(
        local,
        endpoint,
        signer,
        model=settings.azure_document_intelligence_model,
        timeout_seconds=settings.azure_document_intelligence_timeout_seconds,
    )
    stack.push_async_callback(remote.close)
    return remote


def _work_queue(settings: Settings, credential: AsyncTokenCredential | None) -> WorkQueue | None:
    if settings.message_bus == "none":
        return None
    from sheaf.adapters.bus_servicebus import ServiceBusMessageBus

    queue = settings.servicebus_queue
    if settings.servicebus_connection_string is not None:
        secret = settings.servicebus_connection_string.get_secret_value()
        return ServiceBusMessageBus.from_connection_string(secret, queue)
    namespace = settings.servicebus_namespace
    assert namespace is not None  # checked by Settings
    assert credential is not None
    return ServiceBusMessageBus.from_namespace(namespace, credential, queue)


def _blob_store(settings: Settings, credential: AsyncTokenCredential | None) -> BlobStore:
    if settings.blob_backend == "local":
        return LocalBlobStore(settings.blob_dir)
    from sheaf.adapters.blob_azure import AzureBlobStore

    container = settings.azure_storage_container
    if settings.azure_storage_connection_string is not None:
        secret = settings.azure_storage_connection_string.get_secret_value()
        return AzureBlobStore.from_connection_string(secret, container)
    assert settings.azure_storage_account_url is not None  # checked by Settings
    assert credential is not None
    return AzureBlobStore.from_account_url(
        settings.azure_storage_account_url, credential, container
    )


def _embedder(settings: Settings, credential: AsyncTokenCredential | None) -> Embedder:
    if settings.embedder == "lexical":
        return LexicalEmbedder(settings.embedding_dimensions)
    if settings.embedder == "local":
        from sheaf.adapters.embed_local import LocalEmbedder

        return LocalEmbedder(
            threads=local_embedding_threads(settings),
            batch_size=settings.local_embedding_batch_size,
        )
    from sheaf.adapters.embed_openai import (
        EmbeddingLimits,
        azure_openai_embedder,
        openai_compatible_embedder,
    )

    limits = EmbeddingLimits(
        max_batch_inputs=settings.embedding_max_batch_inputs,
        max_request_tokens=settings.embedding_max_request_tokens,
        max_input_tokens=settings.embedding_max_input_tokens,
        max_concurrency=settings.embedding_concurrency,
        timeout_seconds=settings.embedding_timeout_seconds,
    )
    if settings.embedder == "openai":
        assert settings.openai_base_url
        assert settings.openai_model
        key = settings.openai_api_key
        return openai_compatible_embedder(
            settings.openai_base_url,
            settings.openai_model,
            settings.embedding_dimensions,
            api_key=key.get_secret_value() if key else None,
            limits=limits,
            request_dimensions=settings.embedding_request_dimensions,
        )
    assert settings.azure_openai_endpoint
    assert settings.azure_openai_deployment
    key = settings.azure_openai_api_key
    return azure_openai_embedder(
        settings.azure_openai_endpoint,
        settings.azure_openai_deployment,
        settings.azure_openai_api_version,
        settings.embedding_dimensions,
        credential=None if key else credential,
        api_key=key.get_secret_value() if key else None,
        limits=limits,
        request_dimensions=settings.embedding_request_dimensions,
    )


def local_embedding_threads(settings: Settings) -> int:
    """SHEAF_LOCAL_EMBEDDING_THREADS, or this machine's cores shared among the workers."""
    if settings.local_embedding_threads:
        return settings.local_embedding_threads
    return max(1, (os.cpu_count() or 1) // max(1, settings.workers))

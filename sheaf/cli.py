"""The `sheaf` command line.

Server commands (`up`, `api`, `worker`, `db upgrade`) run Sheaf; user commands (`upload`,
`status`, `search`, `failed`) talk to a running API over HTTP, exactly as curl would.
Settings come from `SHEAF_*` variables; options override them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from sheaf import logs
from sheaf.client import ApiError, Client, expand_paths
from sheaf.config import Settings
from sheaf.errors import ConfigError, SheafError

T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(os.environ, **overrides)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except SheafError as exc:
        raise click.ClickException(exc.message) from None
    except KeyboardInterrupt:
        sys.exit(130)


def _echo_json(body: Any) -> None:
    click.echo(json.dumps(body, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sheaf")
def main() -> None:
    """Sheaf: document ingestion that never loses a document and never processes one twice."""


# -- running Sheaf -------------------------------------------------------------------------


@main.command()
@click.option("--host", default=None, help="Address to listen on [SHEAF_HOST; 127.0.0.1].")
@click.option("--port", type=int, default=None, help="API port [SHEAF_PORT; 8000].")
@click.option("--workers", type=int, default=None, help="Worker processes [SHEAF_WORKERS; 2].")
def up(host: str | None, port: int | None, workers: int | None) -> None:
    """Migrate the database, then run the API and worker processes together."""
    from sheaf.bootstrap import migrate
    from sheaf.supervisor import run_up

    settings = _settings(host=host, port=port, workers=workers)
    logs.configure(settings)
    migrate(settings)
    click.echo(
        f"Sheaf is up: API http://{settings.host}:{settings.port} with {settings.workers} "
        f"worker process(es); database {_where(settings)}; blobs in {settings.blob_dir}. "
        "Ctrl-C stops it.",
        err=True,
    )
    env = {**os.environ, "SHEAF_WORKERS": str(settings.workers)}
    _run(run_up(settings, env))


def _where(settings: Settings) -> str:
    url = settings.database_url.get_secret_value()
    return url.split("///", 1)[1] if url.startswith("sqlite") else settings.database_dialect


@main.command()
@click.option("--host", default=None, help="Address to listen on [SHEAF_HOST].")
@click.option("--port", type=int, default=None, help="Port [SHEAF_PORT].")
def api(host: str | None, port: int | None) -> None:
    """Run the HTTP API (with the sweeper and reconciler) until SIGTERM."""

    settings = _settings(host=host, port=port)
    logs.configure(settings)
    _run(_serve_until_signal(settings))


async def _serve_until_signal(settings: Settings) -> None:
    import signal

    from api.server import serve

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await serve(settings, stop)


@main.command()
@click.option(
    "--concurrency", type=int, default=None, help="Documents at once [SHEAF_CONCURRENCY]."
)
def worker(concurrency: int | None) -> None:
    """Run one worker process until SIGTERM (finishes or releases documents in flight)."""
    from worker.runner import run_worker

    settings = _settings(concurrency=concurrency)
    logs.configure(settings)
    _run(run_worker(settings))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (idempotent)."""
    from sheaf.bootstrap import migrate

    settings = _settings()
    migrate(settings)
    click.echo(f"database {_where(settings)} is up to date")


@main.command("config")
@click.option("--markdown", is_flag=True, help="Print the defaults as the README's table.")
def show_config(markdown: bool) -> None:
    """Print every setting with its value (secrets hidden) and meaning."""
    if markdown:
        click.echo(config_table())
        return
    settings = _settings()
    for name, field in Settings.model_fields.items():
        click.echo(f"SHEAF_{name.upper()}={getattr(settings, name)}")
        click.echo(f"    {field.description}")


def config_table() -> str:
    """The configuration table of the README, from the settings' own descriptions."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "host-pid" if field.default_factory else field.default
        if hasattr(default, "get_secret_value"):
            default = default.get_secret_value()
        rows.append(f"| `SHEAF_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)


# -- using a running Sheaf -------------------------------------------------------------------


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-c", "--collection", default="default", show_default=True, help="Collection.")
def upload(paths: tuple[Path, ...], collection: str) -> None:
    """Upload files, or every file under folders, with a progress bar."""
    files = list(expand_paths(list(paths)))
    counts = _run(_upload_all(_settings().api_url, collection, files))
    summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    click.echo(f"{len(files)} file(s): {summary or 'nothing to do'}")
    if counts["rejected"]:
        sys.exit(1)


async def _upload_all(base: str, collection: str, files: list[Path]) -> dict[str, int]:
    counts = {"queued": 0, "already there": 0, "rejected": 0}
    async with Client(base) as client:
        with click.progressbar(files, label="Uploading", file=sys.stderr) as bar:
            for path in bar:
                try:
                    status, body = await client.upload(collection, path)
                except ApiError as exc:
                    if exc.status == 0:
                        raise
                    counts["rejected"] += 1
                    click.echo(f"\n{path}: rejected ({exc.code}): {exc.message}", err=True)
                    continue
                counts["queued" if status == 202 else "already there"] += 1
                click.echo(f"\n{path}: {body['id']} {body['status']}", err=True)
    return counts


@main.command()
@click.argument("document_id", required=False)
def status(document_id: str | None) -> None:
    """Show one document (with its attempt history), or counts for all of them."""
    path = f"/v1/documents/{document_id}" if document_id else "/v1/stats"
    _echo_json(_run(_get(path)))


@main.command()
@click.argument("query")
@click.option("-c", "--collection", default="default", show_default=True, help="Collection.")
@click.option("-k", "k", type=int, default=5, show_default=True, help="How many results.")
def search(query: str, collection: str, k: int) -> None:
    """Search a collection and print the best chunks."""
    body = _run(_get(f"/v1/collections/{collection}/search", q=query, k=k))
    if not body["results"]:
        click.echo("no results")
    for n, hit in enumerate(body["results"], 1):
        pages = ",".join(str(p) for p in hit["pages"])
        click.echo(
            f"{n}. {hit['filename']} p.{pages}  score {hit['score']:.3f}  [{hit['document_id']}]"
        )
        click.echo(f"   {' '.join(hit['text'].split())[:300]}")


@main.group()
def failed() -> None:
    """The documents that need a human."""


@failed.command("list")
@click.option("--limit", type=int, default=50, show_default=True)
def failed_list(limit: int) -> None:
    """List failed documents with their error."""
    body = _run(_get("/v1/admin/failed", limit=limit))
    if not body["documents"]:
        click.echo("no failed documents")
    for doc in body["documents"]:
        click.echo(
            f"{doc['id']}  {doc['collection']}/{doc['filename']}  {doc['error_code']}: "
            f"{doc['last_error']}"
        )


@failed.command("retry")
@click.argument("document_ids", nargs=-1, required=True)
def failed_retry(document_ids: tuple[str, ...]) -> None:
    """Queue failed documents again with fresh attempts."""
    for document_id in document_ids:
        body = _run(_post(f"/v1/documents/{document_id}/retry"))
        click.echo(f"{document_id}: {body['status']}")


async def _get(path: str, **params: Any) -> dict[str, Any]:
    async with Client(_settings().api_url) as client:
        return await client.get(path, **params)


async def _post(path: str) -> dict[str, Any]:
    async with Client(_settings().api_url) as client:
        return await client.post(path)

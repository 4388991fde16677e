"""The `sheaf` command line.

Server commands (`up`, `api`, `worker`, `db upgrade`) run Sheaf; user commands (`upload`,
`status`, `search`, `failed`, `dlq`) talk to a running API over HTTP, exactly as curl would.
Settings come from `SHEAF_*` variables; options override them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from sheaf import cli_views as views
from sheaf import logs
from sheaf.auth.keys import new_key
from sheaf.client import ApiError, Client, expand_paths
from sheaf.config import Settings
from sheaf.domain.scopes import Scope
from sheaf.errors import ConfigError, SheafError, StoreUnavailable
from sheaf.ports import KeyStore

T = TypeVar("T")
log = logging.getLogger("sheaf.cli")
WAIT_BATCH = 50  # documents polled per round by `upload --wait`
WAIT_POLL_SECONDS = 0.5


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
@click.option(
    "--api-key",
    default=None,
    metavar="KEY",
    help="API key the user commands send [SHEAF_API_KEY]; safer in the variable.",
)
@click.pass_context
def main(ctx: click.Context, api_key: str | None) -> None:
    """Sheaf: document ingestion that never loses a document and never processes one twice."""
    ctx.obj = {"api_key": api_key}


# -- running Sheaf -------------------------------------------------------------------------


@main.command()
@click.option("--host", default=None, help="Address to listen on [SHEAF_HOST; 127.0.0.1].")
@click.option("--port", type=int, default=None, help="API port [SHEAF_PORT; 8000].")
@click.option("--workers", type=int, default=None, help="Worker processes [SHEAF_WORKERS; 2].")
def up(host: str | None, port: int | None, workers: int | None) -> None:
    """Migrate the database, then run the API and worker processes together."""
    from api.server import serve
    from sheaf.bootstrap import migrate
    from sheaf.supervisor import run_up

    settings = _settings(host=host, port=port, workers=workers)
    logs.configure(settings)
    _check_exposure(settings)
    migrate(settings)

    def announce() -> None:  # once the API listens: a port in use fails before this
        # A log record, not a bare line: stderr then carries one format (JSON off a terminal).
        log.info(
            "Sheaf is up; Ctrl-C stops it",
            extra={
                "url": f"http://{settings.host}:{settings.port}",
                "workers": settings.workers,
                "database": _where(settings),
                "blobs": str(settings.blob_dir),
            },
        )

    env = {**os.environ, "SHEAF_WORKERS": str(settings.workers)}
    _run(run_up(settings, env, serve, announce))


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
    _check_exposure(settings)
    _run(_serve_until_signal(settings))


def _check_exposure(settings: Settings) -> None:
    """Before anything starts: no unauthenticated API beyond this machine."""
    from api.server import check_exposure

    try:
        check_exposure(settings)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


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
@click.option("--supervisor-pid", type=int, default=None, hidden=True)
def worker(concurrency: int | None, supervisor_pid: int | None) -> None:
    """Run one worker process until SIGTERM (finishes or releases documents in flight)."""
    from worker.runner import run_worker

    settings = _settings(concurrency=concurrency)
    logs.configure(settings)
    if supervisor_pid is not None:  # started by `sheaf up`: stop when it does, however
        from sheaf.lifeline import stop_with_parent

        stop_with_parent(supervisor_pid)
    _run(run_worker(settings))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (idempotent)."""
    from sheaf.bootstrap import migrate

    settings = _settings()
    try:
        migrate(settings)
    except SheafError as exc:  # e.g. another migrator held the lock too long: exit 1
        raise click.ClickException(exc.message) from None
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
@click.option(
    "--wait",
    is_flag=True,
    help="Then follow processing until every document completed or failed; exit 1 if any failed.",
)
def upload(paths: tuple[Path, ...], collection: str, wait: bool) -> None:
    """Upload files, or every file under folders, with a progress bar."""
    files = list(expand_paths(list(paths)))
    counts, accepted = _run(_upload_all(collection, files))
    summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    click.echo(f"{len(files)} file(s): {summary or 'nothing to do'}")
    failures = _run(_follow(accepted)) if wait and accepted else 0
    if counts["rejected"] or failures:
        sys.exit(1)


def _on_terminal() -> bool:
    """Whether stderr shows the progress bar: then each line must start below it."""
    return sys.stderr.isatty()


async def _upload_all(collection: str, files: list[Path]) -> tuple[dict[str, int], dict[str, Path]]:
    counts = {"queued": 0, "already there": 0, "rejected": 0}
    accepted: dict[str, Path] = {}
    newline = "\n" if _on_terminal() else ""
    async with _client() as client:
        with click.progressbar(files, label="Uploading", file=sys.stderr) as bar:
            for path in bar:
                try:
                    status, body = await client.upload(collection, path)
                except ApiError as exc:
                    if exc.status == 0:
                        raise
                    counts["rejected"] += 1
                    message = f"{path}: rejected ({exc.code}): {exc.message}"
                    click.echo(f"{newline}{message}", err=True)
                    continue
                counts["queued" if status == 202 else "already there"] += 1
                accepted[body["id"]] = path
                click.echo(f"{newline}{path}: {body['id']} {body['status']}", err=True)
    return counts, accepted


async def _follow(accepted: dict[str, Path]) -> int:
    """Poll each document until it is completed or failed; print the failures; count them."""
    pending = dict(accepted)
    outcome = {"completed": 0, "failed": 0, "deleted": 0}
    newline = "\n" if _on_terminal() else ""
    async with _client() as client:
        with click.progressbar(length=len(pending), label="Processing", file=sys.stderr) as bar:
            while pending:
                for document_id in list(pending)[:WAIT_BATCH]:
                    body = await client.get(f"/v1/documents/{document_id}")
                    if body["status"] not in outcome:
                        continue
                    path = pending.pop(document_id)
                    outcome[body["status"]] += 1
                    bar.update(1)
                    if body["status"] == "failed":
                        why = f"{body['error_code']}: {body['last_error']}"
                        click.echo(f"{newline}{path}: failed ({why})", err=True)
                if pending:
                    await asyncio.sleep(WAIT_POLL_SECONDS)
    summary = ", ".join(f"{n} {status}" for status, n in outcome.items() if n)
    click.echo(f"processed: {summary}")
    return outcome["failed"] + outcome["deleted"]


@main.command()
@click.argument("document_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
def status(document_id: str | None, as_json: bool) -> None:
    """Show one document (with its attempt history), or counts for all of them."""
    path = f"/v1/documents/{document_id}" if document_id else "/v1/stats"
    body = _run(_get(path))
    if as_json:
        _echo_json(body)
    else:
        click.echo(views.document(body) if document_id else views.stats(body))


@main.command()
@click.argument("query")
@click.option("-c", "--collection", default="default", show_default=True, help="Collection.")
@click.option("-k", "k", type=int, default=5, show_default=True, help="How many results.")
@click.option(
    "--mode",
    type=click.Choice(["hybrid", "vector", "keyword"]),
    default="hybrid",
    show_default=True,
    help="hybrid: keyword (BM25) and vector rankings fused; or one of them alone.",
)
@click.option(
    "--document", "document_ids", multiple=True, help="Only this document id (repeatable)."
)
@click.option("--filename", help="Only files whose name matches this pattern (*, ?).")
@click.option("--from", "uploaded_from", help="Only documents uploaded at or after (ISO 8601).")
@click.option("--to", "uploaded_to", help="Only documents uploaded at or before (ISO 8601).")
def search(
    query: str,
    collection: str,
    k: int,
    mode: str,
    document_ids: tuple[str, ...],
    filename: str | None,
    uploaded_from: str | None,
    uploaded_to: str | None,
) -> None:
    """Search a collection and print the best chunks, with the rankings that found each.

    A collection that does not exist is an error (exit status 1), not "no results".
    """
    params = {
        "q": query,
        "k": k,
        "mode": mode,
        "filename": filename,
        "uploaded_from": uploaded_from,
        "uploaded_to": uploaded_to,
    }
    body = _run(_search(collection, params, document_ids))
    if not body["results"]:
        click.echo("no results")
    for n, hit in enumerate(body["results"], 1):
        pages = ",".join(str(p) for p in hit["pages"])
        found_by = ", ".join(f"{name} #{rank}" for name, rank in hit.get("rankings", {}).items())
        click.echo(
            f"{n}. {hit['filename']} p.{pages}  score {hit['score']:.3f}  ({found_by})  "
            f"[{hit['document_id']}]"
        )
        click.echo(f"   {' '.join(hit['text'].split())[:300]}")


async def _search(
    collection: str, params: dict[str, Any], document_ids: tuple[str, ...]
) -> dict[str, Any]:
    """GET the search; document ids repeat their parameter, as the API expects."""
    query: list[tuple[str, str]] = [(k, str(v)) for k, v in params.items() if v is not None]
    query += [("document_id", document_id) for document_id in document_ids]
    async with _client() as client:
        path = f"/v1/collections/{collection}/search"
        return (await client.request("GET", path, params=query))[1]


@main.group()
def failed() -> None:
    """The documents that need a human."""


@failed.command("list")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
def failed_list(limit: int, as_json: bool) -> None:
    """List failed documents with their error."""
    body = _run(_get("/v1/admin/failed", limit=limit))
    if as_json:
        _echo_json(body)
    else:
        click.echo(views.failed(body))


@failed.command("retry")
@click.argument("document_ids", nargs=-1, required=True)
def failed_retry(document_ids: tuple[str, ...]) -> None:
    """Queue failed documents again with fresh attempts."""
    for document_id in document_ids:
        body = _run(_post(f"/v1/documents/{document_id}/retry"))
        click.echo(f"{document_id}: {body['status']}")


@main.group()
def dlq() -> None:
    """The Service Bus dead-letter queue (SHEAF_MESSAGE_BUS=servicebus only)."""


@dlq.command("list")
@click.option("--reason", default=None, help="Only messages dead-lettered for this reason.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
def dlq_list(reason: str | None, limit: int, as_json: bool) -> None:
    """List dead-lettered messages with their document, oldest first."""
    body = _run(_get("/v1/admin/dlq", reason=reason, limit=limit))
    if as_json:
        _echo_json(body)
    elif not body["messages"] and reason:
        click.echo(f"the dead-letter queue is empty for {reason}")
    else:
        click.echo(views.dead_letters(body))


@dlq.command("show")
@click.argument("sequence_number", type=int)
def dlq_show(sequence_number: int) -> None:
    """Show one dead-lettered message by its sequence number."""
    _echo_json(_run(_get(f"/v1/admin/dlq/{sequence_number}")))


@dlq.command("resubmit")
@click.argument("sequence_numbers", nargs=-1, type=int)
@click.option("--reason", default=None, help="Every message dead-lettered for this reason.")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
def dlq_resubmit(sequence_numbers: tuple[int, ...], reason: str | None, dry_run: bool) -> None:
    """Re-drive failed documents from their dead-lettered messages (compare-and-set).

    A document still failed is queued again with fresh attempts and its message leaves the
    DLQ; a message whose document is no longer failed only leaves the DLQ.
    """
    if not sequence_numbers and not reason:
        raise click.UsageError("give sequence numbers, or --reason")
    body: dict[str, Any] = {"dry_run": dry_run}
    if sequence_numbers:
        body["sequence_numbers"] = list(sequence_numbers)
    if reason:
        body["reason"] = reason
    _echo_batch(_run(_post("/v1/admin/dlq/resubmit", body)))


@dlq.command("purge")
@click.option("--reason", default=None, help="Only messages dead-lettered for this reason.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(reason: str | None, yes: bool) -> None:
    """Remove dead-lettered messages for good (failed rows stay: `sheaf failed list`)."""
    what = f"every message dead-lettered for {reason}" if reason else "EVERY dead-lettered message"
    if not yes:
        click.confirm(f"Remove {what} from the dead-letter queue?", abort=True)
    body: dict[str, Any] = {"confirm": True}
    if reason:
        body["reason"] = reason
    _echo_batch(_run(_post("/v1/admin/dlq/purge", body)))


def _echo_batch(body: dict[str, Any]) -> None:
    prefix = "(dry run) " if body["dry_run"] else ""
    for item in body["results"]:
        click.echo(
            f"{prefix}#{item['sequence_number']}  {item['document_id'] or item['message_id']}  "
            f"{item['outcome']}: {item['detail']}"
        )
    for number in body["not_found"]:
        click.echo(f"#{number}  not in the dead-letter queue")
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(body["counts"].items()))
    click.echo(f"{prefix}{summary or 'no matching messages'}")


async def _get(path: str, **params: Any) -> dict[str, Any]:
    async with _client() as client:
        return await client.get(path, **params)


async def _post(path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with _client() as client:
        return await client.post(path, body)


def _client() -> Client:
    """A client of SHEAF_API_URL sending the key of --api-key or SHEAF_API_KEY, if any."""
    obj = click.get_current_context().find_root().obj or {}
    settings = _settings(api_key=obj.get("api_key"))
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return Client(settings.api_url, api_key=key)


# -- API keys (talk to the database directly: the first key cannot come from the API) -------


@main.group()
def keys() -> None:
    """API keys: create (shown once), list, revoke. See docs/security.md."""


@keys.command("create")
@click.option("--name", required=True, help="What the key is for, e.g. 'ingest bot'.")
@click.option(
    "--scope",
    type=click.Choice([s.value for s in Scope]),
    required=True,
    help="read (list, get, search) < write (+ upload, delete, retry) < admin (+ stats, DLQ).",
)
@click.option(
    "--collection",
    "collections",
    multiple=True,
    required=True,
    help="A collection the key may use (repeat for more); '*' for all of them.",
)
def keys_create(name: str, scope: str, collections: tuple[str, ...]) -> None:
    """Create a key and print it once on stdout; only its hash is stored."""
    try:
        token, record = new_key(name, Scope(scope), collections)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--collection") from None
    created = _run(_with_key_store(lambda store: store.create_key(record)))
    click.echo(
        f"created key {created.id} ({created.scope.value} on {', '.join(created.collections)})"
        "; store it now, it is not shown again:",
        err=True,
    )
    click.echo(token)


@keys.command("list")
def keys_list() -> None:
    """Every key with its scope, collections and state (never the key itself)."""
    found = _run(_with_key_store(lambda store: store.list_keys()))
    if not found:
        click.echo("no API keys; create one with `sheaf keys create`")
    for key in found:
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        click.echo(
            f"{key.id}  {key.scope.value:<5}  {','.join(key.collections):<24}  "
            f"created {key.created_at:%Y-%m-%d %H:%M}  {state}  {key.name}"
        )


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key for good: requests with it get 401 from then on."""
    key = _run(_with_key_store(lambda store: store.revoke_key(key_id)))
    if key is None:
        raise click.ClickException(f"no API key {key_id!r}; `sheaf keys list` shows them")
    click.echo(f"revoked key {key.id} ({key.name}) at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC")


async def _with_key_store(use: Callable[[KeyStore], Awaitable[T]]) -> T:
    from sheaf.bootstrap import open_key_store

    async with open_key_store(_settings()) as store:
        try:
            return await use(store)
        except StoreUnavailable as exc:
            raise ConfigError(f"{exc.message} (a new database? run `sheaf db upgrade`)") from exc
